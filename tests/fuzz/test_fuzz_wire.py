"""Whatever trace requests arrive, the tagging pipeline's re-encoding from the received bytes
(core.wire) says exactly what the processed batch says."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core import wire
from collector.core.pdata import Encoded, Traces, set_attr
from collector.processors import coldstart, tail_latency
from tests.processors import make_processor

pytestmark = pytest.mark.slow

RESOURCES = [
    {"service.name": "orders", "cloud.platform": "aws_lambda", "faas.instance": "env-1"},
    {"service.name": "orders", "cloud.platform": "aws_lambda", "faas.instance": "env-2"},
    {"service.name": "web", "cloud.platform": "aws_ecs", "aws.ecs.task.arn": "task-1"},
    {"service.name": "batch"},
]
SPAN_ATTRIBUTES = st.dictionaries(
    st.sampled_from(
        [
            "faas.coldstart",
            "coldtail.cold_start",
            "coldtail.cold_start.source",
            "coldtail.init_type",
            "http.route",
        ]
    ),
    st.booleans() | st.sampled_from(["true", "on-demand", "provisioned-concurrency", "/a"]),
    max_size=3,
)
spans = st.builds(
    dict,
    kind=st.sampled_from(list(Span.SpanKind.values())),
    parent=st.booleans(),
    name=st.sampled_from(["init", "GET /a", "db"]),
    duration_ms=st.integers(1, 3000),
    attributes=SPAN_ATTRIBUTES,
)
scopes = st.lists(st.lists(spans, max_size=5), min_size=1, max_size=3)
requests = st.lists(st.tuples(st.sampled_from(RESOURCES), scopes), min_size=1, max_size=3)


def build(request, trace: int) -> Traces:
    batch = Traces()
    for n, (resource, scope_list) in enumerate(request):
        rs = batch.resource_spans.add(schema_url=f"r{n}")
        for key, value in resource.items():
            set_attr(rs.resource.attributes, key, value)
        for k, span_list in enumerate(scope_list):
            ss = rs.scope_spans.add(schema_url=f"s{k}")
            ss.scope.name = f"lib-{k}"
            for i, spec in enumerate(span_list):
                span = ss.spans.add(name=spec["name"], kind=spec["kind"])
                span.trace_id = trace.to_bytes(16, "big")
                span.span_id = (n * 100 + k * 10 + i + 1).to_bytes(8, "big")
                if spec["parent"]:
                    span.parent_span_id = b"\1" * 8
                span.start_time_unix_nano = 10**18
                span.end_time_unix_nano = 10**18 + spec["duration_ms"] * 10**6
                for key, value in spec["attributes"].items():
                    set_attr(span.attributes, key, value)
    return batch


@given(st.lists(requests, min_size=1, max_size=4))
def test_re_encoding_from_the_received_bytes_is_the_processed_batch(stream):
    async def run() -> None:
        tail, sink = make_processor(tail_latency.factory, {"min_samples": 1})
        head, _ = make_processor(coldstart.factory, {}, sink=tail)
        for trace, request in enumerate(stream):
            data = build(request, trace + 1).SerializeToString()
            batch = Traces.FromString(data)
            wire.keep(batch, data)
            await head.consume(batch)
            if sink.batches:
                [out] = sink.batches
                assert Traces.FromString(Encoded.of(out).data) == out
                sink.reset()

    asyncio.run(run())
