"""The nats receiver against a real nats-server with JetStream on loopback: acknowledgement only
after the pipeline accepted, redelivery after a refusal, garbage terminated, partitions split
over three members and taken over when one stops renewing its leases."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest
import yaml
from nats.js import api
from pydantic import ValidationError

from collector.core.consumer import RetryableError
from collector.core.nats_stream import subject_of, trace_partition
from collector.core.pdata import Traces, count_items, iter_spans
from collector.core.signals import Signal
from collector.receivers import nats as nats_receiver
from collector.receivers.nats.config import Config
from collector.receivers.nats.ownership import owner, rank
from collector.receivers.nats.receiver import FilterNotKept, check_filter
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.nats_cluster import NatsServer
from tests.support.sinks import SinkConsumer

TESTDATA = yaml.safe_load((Path(__file__).parent / "testdata" / "nats_config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(TESTDATA["valid"]))
def test_valid_configs(name):
    nats_receiver.factory.config.model_validate(TESTDATA["valid"][name] or {})


@pytest.mark.parametrize("case", TESTDATA["invalid"], ids=lambda c: c["name"])
def test_invalid_configs_name_the_key(case):
    with pytest.raises(ValidationError) as excinfo:
        nats_receiver.factory.config.model_validate(case["config"])
    assert case["error"] in str(excinfo.value)


def test_rendezvous_spreads_partitions_and_moves_only_the_leavers():
    members = ["gw-1", "gw-2", "gw-3"]
    before = {p: owner(members, p) for p in range(64)}
    counts = {m: list(before.values()).count(m) for m in members}
    assert all(12 <= n <= 30 for n in counts.values()), counts
    after = {p: owner(["gw-1", "gw-3"], p) for p in range(64)}
    assert all(after[p] == before[p] for p in range(64) if before[p] != "gw-2")
    assert rank("gw-1", 5) == rank("gw-1", 5) != rank("gw-1", 6)


def _info(config: dict) -> api.ConsumerInfo:
    """A consumer create response as nats-server sends it (JSON decoded)."""
    return api.ConsumerInfo.from_response(
        {
            "type": "io.nats.jetstream.api.v1.consumer_create_response",
            "stream_name": "COLDTAIL",
            "name": "gateways_traces_3",
            "created": "2023-03-01T10:00:00.000000000Z",
            "config": {"ack_policy": "explicit", "deliver_policy": "all", **config},
            "delivered": {"consumer_seq": 0, "stream_seq": 0},
            "ack_floor": {"consumer_seq": 0, "stream_seq": 0},
            "num_ack_pending": 0,
            "num_redelivered": 0,
            "num_waiting": 0,
            "num_pending": 0,
            "cluster": {"leader": "n1"},
        }
    )


def test_a_consumer_without_its_filter_is_refused():
    wanted = "coldtail.traces.3"
    check_filter(_info({"durable_name": "d", "filter_subject": wanted}), wanted)
    check_filter(_info({"durable_name": "d", "filter_subjects": [wanted]}), wanted)
    # What nats-server 2.9 answers when asked for filter_subjects: no filter at all.
    with pytest.raises(FilterNotKept, match="every subject of the stream"):
        check_filter(_info({"durable_name": "d"}), wanted)
    with pytest.raises(FilterNotKept, match=r"coldtail\.traces\.>"):
        check_filter(_info({"durable_name": "d", "filter_subject": "coldtail.traces.>"}), wanted)


@pytest.fixture
def server():
    with NatsServer() as s:
        yield s


def receiver_config(url: str, **extra) -> Config:
    return Config.model_validate(
        {
            "url": url,
            "partitions": 4,
            "group": "gw",
            "member": "a",
            "lease_ttl": "600ms",
            "ack_wait": "1s",
            "nak_delay": "100ms",
            **extra,
        }
    )


async def started(cfg, consumer) -> nats_receiver.receiver.NatsReceiver:
    receiver = nats_receiver.factory.create(
        make_settings("receiver", "nats"), cfg, {Signal.TRACES: consumer}
    )
    await receiver.start(StaticHost())
    return receiver


async def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class Connection:
    """A test client publishing to the stream and reading consumer state."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Connection:
        self.client = await nats.connect(self.url)
        self.js = self.client.jetstream()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.close()

    async def publish(self, partition: int, data: bytes) -> None:
        await self.js.publish(subject_of("coldtail", Signal.TRACES, partition), data)

    async def state(self, partition: int) -> api.ConsumerInfo:
        return await self.js.consumer_info("COLDTAIL", f"gw_traces_{partition}")


def _floor(state: api.ConsumerInfo) -> int:
    """The stream sequence up to which everything is acknowledged."""
    assert state.ack_floor is not None
    return state.ack_floor.stream_seq


def one_trace(partition: int, partitions: int = 4, spans: int = 2) -> Traces:
    """A trace whose id falls in `partition`."""
    trace_id = partition.to_bytes(8, "big") + b"\x02" * 8
    assert trace_partition(trace_id, partitions) == partition
    return make_traces(spans, trace_id=trace_id)


class GatedConsumer(SinkConsumer):
    """Holds every batch until `gate` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.arrived = asyncio.Event()

    async def consume(self, batch) -> None:
        self.arrived.set()
        await self.gate.wait()
        await super().consume(batch)


async def test_acknowledges_only_after_the_pipeline_accepted(server):
    consumer = GatedConsumer()
    receiver = await started(receiver_config(server.url, ack_wait="5s"), consumer)
    try:
        async with Connection(server.url) as conn:
            batch = one_trace(2)
            await conn.publish(2, batch.SerializeToString())
            await asyncio.wait_for(consumer.arrived.wait(), 10)
            held = await conn.state(2)
            assert (held.num_ack_pending, _floor(held)) == (1, 0)
            consumer.gate.set()
            await consumer.wait_for(2)
            for _ in range(100):
                done = await conn.state(2)
                if done.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.02)
            assert (done.num_ack_pending, _floor(done), done.num_redelivered) == (
                0,
                1,
                0,
            )
        assert consumer.batches == [batch]
    finally:
        await receiver.shutdown()


async def test_progress_notices_keep_a_slow_pipeline_from_redelivery(server):
    consumer = GatedConsumer()
    receiver = await started(receiver_config(server.url, ack_wait="600ms"), consumer)
    try:
        async with Connection(server.url) as conn:
            await conn.publish(1, one_trace(1).SerializeToString())
            await asyncio.wait_for(consumer.arrived.wait(), 10)
            await asyncio.sleep(1.8)  # three times ack_wait
            assert (await conn.state(1)).num_redelivered == 0
            consumer.gate.set()
            await consumer.wait_for(2)
        assert len(consumer.batches) == 1
    finally:
        await receiver.shutdown()


class FlakyConsumer(SinkConsumer):
    """Refuses the first `failures` batches with a retryable error."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls: list[float] = []

    async def consume(self, batch) -> None:
        self.calls.append(time.monotonic())
        if len(self.calls) <= self.failures:
            raise RetryableError("memory limit reached")
        await super().consume(batch)


async def test_a_retryable_refusal_is_delivered_again_after_nak_delay(server):
    consumer = FlakyConsumer(failures=1)
    receiver = await started(receiver_config(server.url, nak_delay="300ms"), consumer)
    try:
        async with Connection(server.url) as conn:
            batch = one_trace(3)
            await conn.publish(3, batch.SerializeToString())
            await consumer.wait_for(2)
            assert consumer.batches == [batch]
            assert len(consumer.calls) == 2
            assert consumer.calls[1] - consumer.calls[0] >= 0.25
            for _ in range(100):  # the acknowledgement follows the acceptance
                state = await conn.state(3)
                if state.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.02)
            assert (state.num_ack_pending, _floor(state)) == (0, 1)
    finally:
        await receiver.shutdown()


async def test_the_stream_gives_up_after_max_deliver(server):
    consumer = FlakyConsumer(failures=100)
    cfg = receiver_config(server.url, nak_delay="50ms", max_deliver=3)
    receiver = await started(cfg, consumer)
    try:
        async with Connection(server.url) as conn:
            await conn.publish(0, one_trace(0).SerializeToString())
            await wait_until(lambda: len(consumer.calls) >= 3)
            await asyncio.sleep(1.2)  # past ack_wait and several nak delays
        assert len(consumer.calls) == 3
        assert consumer.batches == []
    finally:
        await receiver.shutdown()


async def test_undecodable_messages_are_terminated_and_the_rest_delivered(server):
    consumer = SinkConsumer()
    receiver = await started(receiver_config(server.url), consumer)
    try:
        async with Connection(server.url) as conn:
            good = one_trace(1)
            await conn.publish(1, b"\xff\xfe not protobuf")
            bad_ids = make_traces(1)
            bad_ids.resource_spans[0].scope_spans[0].spans[0].trace_id = b"short"
            await conn.publish(1, bad_ids.SerializeToString())
            await conn.publish(1, good.SerializeToString())
            await consumer.wait_for(2)
            await asyncio.sleep(1.3)  # past ack_wait: nothing comes back
            state = await conn.state(1)
        assert consumer.item_count == 2
        assert [s.span_id for _, _, s in iter_spans(consumer.batches[0])] == [
            s.span_id for _, _, s in iter_spans(good)
        ]
        assert (state.num_ack_pending, state.num_redelivered, state.num_pending) == (0, 0, 0)
        assert _floor(state) == 3
    finally:
        await receiver.shutdown()


async def test_ack_delay_holds_the_acknowledgement(server):
    consumer = SinkConsumer()
    cfg = receiver_config(server.url, ack_delay="1500ms", ack_wait="600ms")
    receiver = await started(cfg, consumer)
    try:
        async with Connection(server.url) as conn:
            await conn.publish(2, one_trace(2).SerializeToString())
            await consumer.wait_for(2)
            accepted = time.monotonic()
            await asyncio.sleep(1.0)  # past ack_wait, kept alive by progress notices
            held = await conn.state(2)
            assert (held.num_ack_pending, held.num_redelivered) == (1, 0)
            while (await conn.state(2)).num_ack_pending:
                assert time.monotonic() - accepted < 5
                await asyncio.sleep(0.05)
            assert time.monotonic() - accepted >= 1.4
        assert len(consumer.batches) == 1
    finally:
        await receiver.shutdown()


async def test_refuses_to_start_when_a_consumer_is_in_the_way(server):
    async with Connection(server.url) as conn:
        await conn.js.add_stream(name="COLDTAIL", subjects=["coldtail.>"])
        await conn.js.add_consumer(
            "COLDTAIL",
            api.ConsumerConfig(
                durable_name="gw_traces_1",
                deliver_subject="elsewhere",
                filter_subject="coldtail.traces.1",
            ),
        )
    with pytest.raises(RuntimeError, match="cannot create consumer gw_traces_1"):
        await started(receiver_config(server.url), SinkConsumer())


async def members(url: str, names: list[str], partitions: int, **extra):
    """Receivers for each member name, started together; their sinks."""
    sinks = {name: SinkConsumer() for name in names}
    receivers = {}
    for name in names:
        cfg = receiver_config(url, member=name, members=names, partitions=partitions, **extra)
        receivers[name] = await started(cfg, sinks[name])
    return receivers, sinks


def held(receiver) -> set[int]:
    return set(receiver.ownership.held) if receiver.ownership else set()


async def test_three_members_split_the_partitions_and_survivors_take_over(server):
    names = ["gw-1", "gw-2", "gw-3"]
    receivers, sinks = await members(server.url, names, 12, ack_wait="1s", lease_ttl="900ms")
    try:
        expected = {n: {p for p in range(12) if owner(names, p) == n} for n in names}
        await wait_until(lambda: all(held(receivers[n]) == expected[n] for n in names))
        async with Connection(server.url) as conn:
            sent = {p: one_trace(p, 12) for p in range(12)}
            for p, batch in sent.items():
                await conn.publish(p, batch.SerializeToString())
            await wait_until(lambda: sum(s.item_count for s in sinks.values()) == 24)
            for n in names:
                assert sorted(b.SerializeToString() for b in sinks[n].batches) == sorted(
                    sent[p].SerializeToString() for p in expected[n]
                )
            # gw-3 takes a batch and dies before accepting it: no renewals, no acks.
            victim = receivers.pop("gw-3")
            stuck = GatedConsumer()
            victim.next[Signal.TRACES] = stuck
            p3 = min(expected["gw-3"])
            lost = one_trace(p3, 12, spans=3)
            await conn.publish(p3, lost.SerializeToString())
            await asyncio.wait_for(stuck.arrived.wait(), 10)
            killed_at = time.monotonic()
            await crash(victim)
            survivors = ["gw-1", "gw-2"]
            moved = {n: {p for p in range(12) if owner(survivors, p) == n} for n in survivors}
            await wait_until(lambda: all(held(receivers[n]) == moved[n] for n in survivors))
            taker = next(n for n in survivors if p3 in moved[n])
            await sinks[taker].wait_for(sum(count_items(sent[p]) for p in expected[taker]) + 3)
            assert time.monotonic() - killed_at < 8
            assert sinks[taker].batches[-1] == lost
    finally:
        for receiver in receivers.values():
            await receiver.shutdown()


async def crash(receiver) -> None:
    """Stop a receiver the way a killed process stops: no releases, no acknowledgements."""
    for task in receiver._tasks:
        task.cancel()
    for readers in receiver._readers.values():
        for reader in readers:
            reader.stop().cancel()
    await asyncio.gather(*receiver._tasks, return_exceptions=True)
    receiver._tasks = []
    await receiver.client.close()
    receiver.ownership = None
    receiver._readers.clear()


@pytest.mark.slow
async def test_a_member_leaving_hands_its_partitions_over_at_once(server):
    names = ["gw-1", "gw-2"]
    receivers, _ = await members(server.url, names, 8, lease_ttl="6s")
    try:
        await wait_until(lambda: held(receivers["gw-1"]) | held(receivers["gw-2"]) == set(range(8)))
        started_at = time.monotonic()
        await receivers.pop("gw-2").shutdown()
        # Before the 6s leases could expire: released, and claimed in gw-1's next round (2s).
        await wait_until(lambda: held(receivers["gw-1"]) == set(range(8)), timeout=10)
        assert time.monotonic() - started_at < 4
    finally:
        for receiver in receivers.values():
            await receiver.shutdown()
