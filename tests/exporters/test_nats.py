"""The nats exporter against a real nats-server with JetStream on loopback: what it publishes
where, deduplication of a resent batch, splitting under the server's max payload, and an agent
that starts before NATS does."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
import yaml
from pydantic import ValidationError

from collector.core.consumer import PermanentError
from collector.core.nats_stream import (
    MSG_ID_HEADER,
    message_id,
    partition_batch,
    resource_partition,
    trace_partition,
)
from collector.core.pdata import Logs, Metrics, Traces, count_items, get_attr, iter_spans
from collector.core.signals import Signal
from collector.exporters import nats as nats_exporter
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.nats_cluster import NatsServer
from tests.support.process import free_port

TESTDATA = yaml.safe_load((Path(__file__).parent / "testdata" / "nats_config.yaml").read_text())


@pytest.mark.parametrize("name", sorted(TESTDATA["valid"]))
def test_valid_configs(name):
    nats_exporter.factory.config.model_validate(TESTDATA["valid"][name] or {})


@pytest.mark.parametrize("case", TESTDATA["invalid"], ids=lambda c: c["name"])
def test_invalid_configs_name_the_key(case):
    with pytest.raises(ValidationError) as excinfo:
        nats_exporter.factory.config.model_validate(case["config"])
    assert case["error"] in str(excinfo.value)


def traces(count: int, spans_each: int, service: str = "checkout") -> Traces:
    """`count` traces of `spans_each` spans under one resource, two scopes."""
    batch = Traces()
    for i in range(count):
        part = make_traces(spans_each, resource={"service.name": service}, trace_id=_tid(i))
        batch.MergeFrom(part)
    return batch


def _tid(i: int) -> bytes:
    return i.to_bytes(8, "big") + b"\x01" * 8


def span_keys(batch) -> set[tuple[bytes, bytes]]:
    return {(span.trace_id, span.span_id) for _, _, span in iter_spans(batch)}


def test_partition_batch_keeps_each_trace_whole_and_its_resource_and_scope():
    batch = traces(40, 3, "checkout")
    batch.MergeFrom(traces(10, 2, "payments"))
    batch.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    parts = partition_batch(batch, 8)
    assert [p for p, _ in parts] == sorted({trace_partition(_tid(i), 8) for i in range(40)})
    assert sum(count_items(part) for _, part in parts) == count_items(batch)
    assert set().union(*(span_keys(part) for _, part in parts)) == span_keys(batch)
    for p, part in parts:
        for rs, ss, span in iter_spans(part):
            assert trace_partition(span.trace_id, 8) == p
            assert ss.scope.name == "coldtail.testing"
            assert get_attr(rs.resource.attributes, "service.name") in ("checkout", "payments")
            if get_attr(rs.resource.attributes, "service.name") == "checkout" and rs.schema_url:
                assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"


def test_trace_partition_is_the_first_eight_bytes_modulo_partitions():
    assert trace_partition(bytes.fromhex("00000000000000ff") + b"\0" * 8, 64) == 255 % 64
    assert trace_partition(b"\xff" * 16, 1) == 0


def test_metrics_and_logs_go_by_resource_whatever_its_attribute_order():
    one = make_metrics(3, resource={"service.name": "a", "host.name": "h1"})
    same = make_metrics(2, resource={"host.name": "h1", "service.name": "a"})
    p = resource_partition(one.resource_metrics[0].resource, 64)
    assert resource_partition(same.resource_metrics[0].resource, 64) == p
    merged = Metrics()
    for n in range(30):
        merged.MergeFrom(make_metrics(1, resource={"service.name": f"s{n}"}))
    parts = partition_batch(merged, 4)
    assert len(parts) > 1
    assert sum(count_items(part) for _, part in parts) == 30
    for p, part in parts:
        for rm in part.resource_metrics:
            assert resource_partition(rm.resource, 4) == p
    logs = Logs()
    for n in range(10):
        logs.MergeFrom(make_logs(2, resource={"service.name": f"s{n}"}))
    assert sum(count_items(part) for _, part in partition_batch(logs, 4)) == 20


@pytest.fixture
def server():
    with NatsServer() as s:
        yield s


def config(url: str, **extra) -> nats_exporter.Config:
    return nats_exporter.Config.model_validate(
        {
            "url": url,
            "partitions": 8,
            "retry_on_failure": {"initial_interval": "50ms", "max_interval": "200ms"},
            **extra,
        }
    )


async def started(cfg: nats_exporter.Config, signal: Signal = Signal.TRACES, wait: bool = True):
    exporter = nats_exporter.factory.create(make_settings("exporter", "nats"), cfg, signal)
    await exporter.start(StaticHost())
    if wait:
        await asyncio.wait_for(exporter.ready.wait(), 10)
    return exporter


async def stored(url: str, stream: str = "COLDTAIL") -> list:
    """Every message the stream holds, in order."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        state = (await js.stream_info(stream)).state
        if not state.messages:
            return []
        return [await js.get_msg(stream, seq) for seq in range(state.first_seq, state.last_seq + 1)]
    finally:
        await client.close()


async def test_publishes_each_part_to_its_partition_with_a_content_id(server):
    exporter = await started(config(server.url))
    try:
        batch = traces(25, 3)
        await exporter.consume(batch)
        await exporter.flush()
    finally:
        await exporter.shutdown()
    messages = await stored(server.url)
    assert len(messages) == len({trace_partition(_tid(i), 8) for i in range(25)})
    seen: set = set()
    for msg in messages:
        part = Traces.FromString(msg.data)
        p = int(msg.subject.rsplit(".", 1)[1])
        assert msg.subject == f"coldtail.traces.{p}"
        assert {trace_partition(t, 8) for t, _ in span_keys(part)} == {p}
        assert msg.headers[MSG_ID_HEADER] == message_id(msg.subject, msg.data)
        seen |= span_keys(part)
    assert seen == span_keys(batch)
    assert sum(count_items(Traces.FromString(m.data)) for m in messages) == 75


async def test_the_same_batch_sent_twice_is_stored_once(server):
    exporter = await started(config(server.url))
    try:
        batch = traces(12, 2)
        await exporter.push(batch)
        first = await stored(server.url)
        await exporter.push(batch)  # what a retry sends: the same messages, the same ids
        await exporter.consume(batch)
        await exporter.flush()
    finally:
        await exporter.shutdown()
    again = await stored(server.url)
    assert [m.seq for m in again] == [m.seq for m in first]
    assert sum(count_items(Traces.FromString(m.data)) for m in again) == 24


async def test_metrics_and_logs_get_their_own_subjects(server):
    metrics = await started(config(server.url), Signal.METRICS)
    logs = await started(config(server.url), Signal.LOGS)
    try:
        await metrics.push(make_metrics(4, resource={"service.name": "a"}))
        await logs.push(make_logs(3, resource={"service.name": "a"}))
    finally:
        await metrics.shutdown()
        await logs.shutdown()
    p = resource_partition(
        make_metrics(1, resource={"service.name": "a"}).resource_metrics[0].resource, 8
    )
    subjects = sorted(m.subject for m in await stored(server.url))
    assert subjects == [f"coldtail.logs.{p}", f"coldtail.metrics.{p}"]


async def test_parts_over_the_max_payload_are_split_and_a_span_too_large_alone_is_rejected(
    tmp_path,
):
    with NatsServer(extra_config="max_payload: 4096") as small:
        exporter = await started(config(small.url, partitions=1))
        try:
            batch = traces(1, 120)  # one trace: one partition, about 10 kB
            await exporter.push(batch)
            huge = make_traces(1, attributes={"blob": "x" * 6000}, trace_id=_tid(7))
            huge.MergeFrom(make_traces(2, trace_id=_tid(8)))
            with pytest.raises(PermanentError) as excinfo:
                await exporter.push(huge)
            assert excinfo.value.rejected == 1
        finally:
            await exporter.shutdown()
        messages = await stored(small.url)
    assert len(messages) > 2
    assert all(len(m.data) <= 4096 for m in messages)
    spans = set().union(*(span_keys(Traces.FromString(m.data)) for m in messages))
    assert spans == span_keys(batch) | {k for k in span_keys(huge) if k[0] == _tid(8)}


async def test_an_agent_started_before_nats_sends_once_it_is_up(tmp_path):
    port = free_port()
    exporter = await started(config(f"nats://127.0.0.1:{port}"), wait=False)
    try:
        batch = traces(5, 2)
        await exporter.consume(batch)  # queued; retried in the background
        with NatsServer(port=port) as late:
            await exporter.flush()
            messages = await stored(late.url)
            client = await nats.connect(late.url)
            info = await client.jetstream().stream_info("COLDTAIL")
            await client.close()
        # NATS gone again: the exporter still stops cleanly.
    finally:
        await exporter.shutdown()
    assert set().union(*(span_keys(Traces.FromString(m.data)) for m in messages)) == span_keys(
        batch
    )
    assert info.config.subjects == ["coldtail.>"]
    assert info.config.storage == "file"
    assert info.config.duplicate_window == 300.0


async def test_publishes_with_at_most_max_pending_acks_outstanding(server):
    exporter = await started(config(server.url, partitions=64, max_pending_acks=3))
    js = exporter._link.js
    pending: list[int] = []
    publish = js.publish_async

    async def counting(*args, **kwargs):
        future = await publish(*args, **kwargs)
        pending.append(js.publish_async_pending())
        return future

    js.publish_async = counting
    try:
        batch = traces(200, 1)
        await exporter.push(batch)
    finally:
        await exporter.shutdown()
    assert len(pending) == len(partition_batch(batch, 64)) > 3
    assert max(pending) <= 3
    stored_spans = set().union(
        *(span_keys(Traces.FromString(m.data)) for m in await stored(server.url))
    )
    assert stored_spans == span_keys(batch)
