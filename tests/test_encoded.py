"""Batches in their wire form (pdata.Encoded): what they hold, and who is handed one."""

import pytest

from collector.core.fanout import FanOut
from collector.core.pdata import (
    Encoded,
    Traces,
    copy_batch,
    count_items,
    signal_of,
    split_wire,
)
from collector.core.signals import Signal
from collector.processors.batch import factory as batch_factory
from collector.processors.memory_limiter import factory as limiter_factory
from tests.processors import make_processor
from tests.support.builders import make_logs, make_traces
from tests.support.sinks import SinkConsumer


def test_concatenated_requests_are_the_merged_request():
    first, second = make_traces(2, resource={"service.name": "a"}), make_traces(3)
    joined = Encoded.join([first, Encoded.of(second)])

    merged = Traces()
    merged.CopyFrom(first)
    merged.MergeFrom(second)
    assert joined.decode() == merged
    assert (signal_of(joined), count_items(joined)) == (Signal.TRACES, 5)
    assert copy_batch(joined) is joined


def test_fan_out_takes_encoded_only_when_every_branch_does():
    takers = [SinkConsumer(accepts_encoded=True), SinkConsumer(accepts_encoded=True)]
    assert FanOut(takers).accepts_encoded
    assert not FanOut([*takers, SinkConsumer()]).accepts_encoded


async def test_batch_concatenates_for_a_consumer_that_takes_bytes():
    processor, sink = make_processor(batch_factory, {"send_batch_size": 5, "timeout": "10s"})
    sink.accepts_encoded = True
    requests = [make_traces(2), Encoded.of(make_traces(3, resource={"service.name": "b"}))]
    await processor.start(None)
    for request in requests:
        await processor.consume(request)

    [out] = sink.batches
    assert isinstance(out, Encoded)
    assert out.data == Encoded.of(requests[0]).data + requests[1].data
    assert count_items(out) == 5
    await processor.shutdown()


@pytest.mark.parametrize(
    ("config", "takes_bytes"),
    [({"send_batch_size": 10, "send_batch_max_size": 10}, True), ({}, False)],
    ids=["a size limit splits messages", "the next consumer wants messages"],
)
async def test_batch_merges_messages_otherwise(config, takes_bytes):
    processor, sink = make_processor(batch_factory, {"timeout": "10s", **config})
    sink.accepts_encoded = takes_bytes
    assert not processor.accepts_encoded
    await processor.start(None)
    await processor.consume(make_logs(2))
    await processor.consume(make_logs(1))
    await processor.shutdown()
    assert [type(b).__name__ for b in sink.batches] == ["ExportLogsServiceRequest"]
    assert count_items(sink.batches[0]) == 3


async def test_memory_limiter_passes_bytes_on_when_the_next_consumer_takes_them():
    limiter, sink = make_processor(limiter_factory, {"check_interval": "1s", "limit_mib": 4000})
    assert not limiter.accepts_encoded
    sink.accepts_encoded = True
    assert limiter.accepts_encoded
    encoded = Encoded.of(make_traces(4))
    await limiter.consume(encoded)
    assert sink.batches == [encoded]


def test_split_wire_cuts_a_request_between_resources_without_decoding_it():
    batch = Traces()
    for i in range(40):
        batch.MergeFrom(make_traces(i % 5 + 1, resource={"service.name": f"s{i}"}))
    data = batch.SerializeToString()
    parts = split_wire(data, 1000)
    assert len(parts) > 1 and b"".join(parts) == data
    decoded = [Traces.FromString(part) for part in parts]
    assert sum(count_items(b) for b in decoded) == count_items(batch)
    assert [rs for b in decoded for rs in b.resource_spans] == list(batch.resource_spans)
    largest_resource = max(rs.ByteSize() for rs in batch.resource_spans) + 4
    assert all(len(part) <= 1000 + largest_resource for part in parts)
    assert split_wire(data, len(data)) == [data]
    assert split_wire(b"\xff\xff\xff garbage", 4) == [b"\xff\xff\xff garbage"]
    assert split_wire(data[:-3], 1000) == [
        data[:-3]
    ]  # truncated: left whole, for decoding to refuse
