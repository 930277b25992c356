"""config/sidecar.yaml as shipped, in a real process: a Lambda function's request stream goes in;
the backend gets every cold-start, error and tail-latency trace, a share of the rest, and
request metrics counted from every span before sampling."""

import asyncio

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import get_attr, iter_spans
from collector.core.signals import Signal
from tests.support.backend import Backend
from tests.support.builders import make_traces
from tests.support.process import CollectorProcess, free_port

LAMBDA = {
    "service.name": "orders",
    "cloud.provider": "aws",
    "cloud.platform": "aws_lambda",
    "faas.name": "orders",
    "faas.instance": "2026/11/29/[$LATEST]0123456789abcdef",
}
WARM = 400


def requests():
    """(name, batch): the first request of a new environment, warm ones, an error, slow ones."""
    route = {"http.route": "/orders/{id}"}
    yield "cold", make_traces(1, resource=LAMBDA, attributes=route, duration_ms=900)
    for _ in range(WARM):
        yield "warm", make_traces(1, resource=LAMBDA, attributes=route, duration_ms=20)
    yield "error", make_traces(1, resource=LAMBDA, attributes=route, duration_ms=20, error=True)
    for _ in range(3):
        yield "slow", make_traces(1, resource=LAMBDA, attributes=route, duration_ms=2000)


def send_all(port: int) -> dict[bytes, str]:
    sent = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for name, batch in requests():
            stub.Export(batch, timeout=5)
            sent[batch.resource_spans[0].scope_spans[0].spans[0].trace_id] = name
    return sent


async def test_sidecar_keeps_the_traces_that_matter_and_counts_every_request(tmp_path):
    async with Backend() as backend:
        grpc_port, http_port, health = free_port(), free_port(), free_port()
        sets = [
            f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc_port}",
            f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{http_port}",
            f"extensions::health_check::endpoint=127.0.0.1:{health}",
            "processors::tail_sampling::decision_wait=200ms",
            "connectors::span_metrics::metrics_flush_interval=1h",
            "service::telemetry::metrics::level=none",
        ]
        collector = CollectorProcess(
            "config/sidecar.yaml",
            *[arg for s in sets for arg in ("--set", s)],
            env={"COLDTAIL_BACKEND_ENDPOINT": backend.grpc_endpoint},
        )
        await asyncio.to_thread(collector.start)
        try:
            sent = await asyncio.to_thread(send_all, grpc_port)
            assert await asyncio.to_thread(collector.stop) == 0, collector.log
        finally:
            collector.kill()

    kept: dict[str, list[Span]] = {}
    for batch in backend.accepted(Signal.TRACES):
        for _, _, span in iter_spans(batch):
            kept.setdefault(sent[span.trace_id], []).append(span)
    (cold,) = kept["cold"]
    assert get_attr(cold.attributes, "coldtail.cold_start") is True
    assert get_attr(cold.attributes, "coldtail.cold_start.source") == "inferred"
    assert get_attr(cold.attributes, "faas.coldstart") is True
    assert len(kept["error"]) == 1
    assert len(kept["slow"]) == 3
    assert all(get_attr(s.attributes, "coldtail.latency.tail") == "p99" for s in kept["slow"])
    # 10% of the warm requests, by trace id: a wide band, as the ids are random.
    assert 10 <= len(kept.get("warm", [])) <= 80
    assert all(get_attr(s.attributes, "coldtail.cold_start") is False for s in kept["warm"])

    calls = [
        point.as_int
        for batch in backend.accepted(Signal.METRICS)
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "traces.span.metrics.calls"
        for point in metric.sum.data_points
    ]
    # One final flush at shutdown: every request counted once, sampled or not.
    assert sum(calls) == len(sent)
