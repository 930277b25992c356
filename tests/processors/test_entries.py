"""The entry spans coldstart finds are reused by tail_latency, and forgotten by a processor in
between that may change spans."""

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import Traces
from collector.processors import coldstart, filter, tail_latency
from collector.processors.internal import entries
from tests.processors import make_processor
from tests.support.builders import make_traces

LAMBDA = {"service.name": "orders", "cloud.platform": "aws_lambda", "faas.instance": "env-1"}


def request(*names: str) -> Traces:
    """One Lambda resource with a SERVER entry span per name, each with a CLIENT child."""
    batch = Traces()
    for name in names:
        part = make_traces(1, resource=LAMBDA, name=name)
        child = part.resource_spans[0].scope_spans[0].spans.add()
        child.CopyFrom(part.resource_spans[0].scope_spans[0].spans[0])
        child.kind, child.parent_span_id, child.name = Span.SPAN_KIND_CLIENT, b"\x01" * 8, "db"
        batch.MergeFrom(part)
    return batch


def routes_seen(processor) -> set[str]:
    """The span_name label of every series tail_latency keeps."""
    return {
        sample.labels["span_name"]
        for metric in processor.settings.telemetry.registry.collect()
        if metric.name == "coldtail_tail_latency_percentile_ms"
        for sample in metric.samples
    }


def chain(*, between: dict | None = None):
    """coldstart -> [filter with `between`] -> tail_latency: (first processor, tail_latency)."""
    tail, _ = make_processor(tail_latency.factory, {"min_samples": 1})
    after_cold = tail
    if between is not None:
        after_cold, _ = make_processor(filter.factory, between, sink=tail)
    cold, _ = make_processor(coldstart.factory, {}, sink=after_cold)
    return cold, tail


async def test_tail_latency_reads_the_entry_spans_coldstart_found():
    cold, tail = chain()
    batch = request("GET /a", "GET /b")
    await cold.consume(batch)
    assert routes_seen(tail) == {"GET /a", "GET /b"}
    # Found once: the same list for the same batch, entry spans and no children.
    marked = entries.marked_spans(batch)
    assert marked is entries.marked_spans(batch)
    assert [s.name for _, spans in marked for s in spans] == ["GET /a", "GET /b"]
    assert entries.marked_spans(request("GET /c")) is not marked


async def test_a_processor_that_drops_spans_in_between_makes_them_found_again():
    drop = {"traces": {"span": ['name == "GET /dropped"']}}
    cold, tail = chain(between=drop)
    await cold.consume(request("GET /kept", "GET /dropped"))
    assert routes_seen(tail) == {"GET /kept"}
