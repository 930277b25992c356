"""A batch is encoded again from the bytes it was received in (core.wire) only while that says
the same: the tagging processors' changes are in it, any other processor's change drops it."""

import asyncio

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core import wire
from collector.core.pdata import Encoded, Traces, get_attr, iter_spans
from collector.processors import attributes, coldstart, filter, tail_latency
from tests.processors import make_processor
from tests.support.builders import make_traces

LAMBDA = {"service.name": "orders", "cloud.platform": "aws_lambda", "faas.instance": "env-1"}


def request() -> Traces:
    """Two Lambda environments of two SERVER spans, each with a slower CLIENT child; the second
    has the same spans in a second scope. Schema urls and a resource attribute nothing reads."""
    batch = Traces()
    for env, scopes in (("env-1", 1), ("env-2", 2)):
        rs = batch.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        part = make_traces(2, resource={**LAMBDA, "faas.instance": env, "x": "y"})
        rs.resource.CopyFrom(part.resource_spans[0].resource)
        for s in range(scopes):
            ss = rs.scope_spans.add(schema_url=f"scope-{s}")
            ss.scope.name = f"lib-{s}"
            for server in part.resource_spans[0].scope_spans[0].spans:
                ss.spans.add().CopyFrom(server)
                child = ss.spans.add()
                child.CopyFrom(server)
                child.kind, child.name = Span.SPAN_KIND_CLIENT, "db"
                child.parent_span_id = b"\1" * 8
                child.end_time_unix_nano += 10**9
    return batch


def received() -> tuple[Traces, bytes]:
    batch = request()
    data = batch.SerializeToString()
    decoded = Traces.FromString(data)
    wire.keep(decoded, data)
    return decoded, data


def chain(*middle):
    """coldstart -> [middle (factory, config) ...] -> tail_latency -> sink."""
    tail, sink = make_processor(tail_latency.factory, {"min_samples": 1})
    head = tail
    for factory, config in reversed([(coldstart.factory, {}), *middle]):
        head, _ = make_processor(factory, config, sink=head)
    return head, sink


def tags(batch: Traces, key: str = "coldtail.cold_start") -> list[object]:
    return [get_attr(span.attributes, key) for _, _, span in iter_spans(batch)]


async def test_untouched_batches_encode_as_the_bytes_received():
    batch, data = received()
    assert Encoded.of(batch).data is data
    assert Encoded.of(Traces.FromString(data)).data == data  # another object: encoded anew


async def test_the_tagging_processors_changes_are_encoded():
    batch, data = received()
    head, sink = chain()
    await head.consume(batch)

    [out] = sink.batches
    encoded = Encoded.of(out).data
    assert encoded != data and encoded != out.SerializeToString()  # spliced, fields reordered
    assert Traces.FromString(encoded) == out
    env_1, env_2 = [True, None, False, None], [True, None] + [False, None] * 3
    assert tags(Traces.FromString(encoded)) == env_1 + env_2


async def test_a_processor_changing_other_spans_drops_the_received_bytes():
    upsert = {"actions": [{"key": "team", "value": "pay", "action": "upsert"}]}
    batch, _ = received()
    head, sink = chain((attributes.factory, upsert))
    await head.consume(batch)

    [out] = sink.batches
    decoded = Traces.FromString(Encoded.of(out).data)
    assert decoded == out
    assert {get_attr(span.attributes, "team") for _, _, span in iter_spans(decoded)} == {"pay"}


async def test_a_processor_dropping_spans_drops_the_received_bytes():
    batch, _ = received()
    head, sink = chain((filter.factory, {"traces": {"span": ['name == "db"']}}))
    await head.consume(batch)

    [out] = sink.batches
    decoded = Traces.FromString(Encoded.of(out).data)
    assert decoded == out
    assert tags(decoded) == [True, False, True, False, False, False]  # env-1, env-2


async def test_tail_latency_over_all_spans_drops_the_received_bytes():
    batch, _ = received()
    config = {"min_samples": 1, "spans": "all", "dimensions": ["service.name"]}
    tail, sink = make_processor(tail_latency.factory, config)
    await tail.consume(batch)

    decoded = Traces.FromString(Encoded.of(sink.batches[0]).data)
    assert decoded == batch
    assert "p99" in tags(decoded, "coldtail.latency.tail")[1::2]  # children tagged too


async def test_requests_in_flight_each_keep_their_own_bytes():
    head, sink = chain()

    async def one() -> None:
        batch, _ = received()
        await asyncio.sleep(0)  # the other request keeps its bytes in between
        await head.consume(batch)
        assert Traces.FromString(Encoded.of(batch).data) == batch

    await asyncio.gather(one(), one())
    assert len(sink.batches) == 2
