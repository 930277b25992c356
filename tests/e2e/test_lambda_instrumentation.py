"""The Lambda instrumentation end to end: real awslambdaric runtime processes in the local Lambda
emulator, started through the exec wrapper, exporting to a `coldtail run` subprocess whose file
exporter shows what arrived."""

import asyncio
import json
from pathlib import Path

import pytest

from collector.component import Signal
from collector.pdata import get_attr, iter_spans
from collector.testing.jsonl import read_requests
from collector.testing.lambda_emulator import LambdaEmulator, Status
from collector.testing.process import CollectorProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "instrumentation" / "bin" / "coldtail-instrument"
EVENTS = ROOT / "tests" / "instrumentation" / "events"
HANDLER = "tests.instrumentation.functions.app.handler"

CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
"""


def event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture
def collector(tmp_path):
    port = free_port()
    out = tmp_path / "spans.jsonl"
    config = tmp_path / "collector.yaml"
    config.write_text(CONFIG.format(port=port, out=out))
    with CollectorProcess(config) as process:
        process.port, process.out = port, out
        yield process


def spans_by_invocation(collector) -> dict[str, list]:
    """Stop the collector and group what it wrote by faas.invocation_id: init and import spans
    belong to the invocation span they descend from."""
    assert collector.stop() == 0, collector.log
    spans = {
        span.span_id: span
        for batch in read_requests(collector.out)[Signal.TRACES]
        for _, _, span in iter_spans(batch)
    }

    def invocation(span) -> str | None:
        while span is not None:
            if found := get_attr(span.attributes, "faas.invocation_id"):
                return found
            span = spans.get(span.parent_span_id)
        return None

    grouped: dict[str, list] = {}
    for span in spans.values():
        grouped.setdefault(invocation(span), []).append(span)
    return grouped


def lambda_function(collector, **kwargs) -> LambdaEmulator:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "COLDTAIL_TIMEOUT_WARNING_MS": "600",
        **kwargs.pop("env", {}),
    }
    return LambdaEmulator(
        HANDLER,
        ROOT,
        exec_wrapper=WRAPPER,
        layers=[ROOT],
        env=env,
        function_name="orders",
        **kwargs,
    )


async def test_cold_then_warm_with_init_and_import_spans_and_http_route(collector):
    async with lambda_function(collector) as fn:
        first = await fn.invoke(event("apigw-http"))
        await asyncio.sleep(0.3)  # frozen in between: nothing may be left unsent
        second = await fn.invoke(event("apigw-http"))
    assert (first.status, second.status) == (Status.SUCCESS, Status.SUCCESS)
    assert first.cold and not second.cold
    grouped = await asyncio.to_thread(spans_by_invocation, collector)

    cold = {s.name: s for s in grouped[first.request_id]}
    server = next(s for s in grouped[first.request_id] if get_attr(s.attributes, "faas.trigger"))
    assert get_attr(server.attributes, "faas.coldstart") is True
    assert get_attr(server.attributes, "http.route") == "/orders/{orderId}/items"
    assert server.name == "POST /orders/{orderId}/items"
    assert get_attr(server.attributes, "http.response.status_code") == 200
    init = cold["init"]
    assert init.parent_span_id == server.span_id
    imports = [s for s in grouped[first.request_id] if s.name == "coldtail.import"]
    modules = {get_attr(s.attributes, "coldtail.import.module") for s in imports}
    assert "tests.instrumentation.functions.slow_dependency" in modules

    (warm,) = grouped[second.request_id]
    assert get_attr(warm.attributes, "faas.coldstart") is False


async def test_error_timeout_and_sqs_links(collector):
    async with lambda_function(collector, timeout=1.5) as fn:
        failed = await fn.invoke({"raise": "card declined"})
        batch = await fn.invoke(event("sqs"))
        timed_out = await fn.invoke({"sleep": 5})
    assert (failed.status, batch.status, timed_out.status) == (
        Status.ERROR,
        Status.SUCCESS,
        Status.TIMEOUT,
    )
    grouped = await asyncio.to_thread(spans_by_invocation, collector)

    error_span = next(
        s for s in grouped[failed.request_id] if s.name != "init" and s.name != "coldtail.import"
    )
    assert error_span.status.code == 2  # ERROR
    exception = next(e for e in error_span.events if e.name == "exception")
    assert get_attr(exception.attributes, "exception.type").endswith("HandlerError")
    assert get_attr(exception.attributes, "exception.message") == "card declined"
    assert "raise HandlerError" in get_attr(exception.attributes, "exception.stacktrace")

    (consumer,) = grouped[batch.request_id]
    assert consumer.kind == 5  # CONSUMER
    assert get_attr(consumer.attributes, "faas.trigger") == "pubsub"
    # One link per record that carries a trace context (traceparent or AWSTraceHeader).
    traced = [
        r
        for r in event("sqs")["Records"]
        if "traceparent" in r.get("messageAttributes", {})
        or "AWSTraceHeader" in r.get("attributes", {})
    ]
    assert len(consumer.links) == len(traced) == 2

    # Killed at the deadline: only the snapshot taken before it tells of the invocation.
    (snapshot,) = grouped[timed_out.request_id]
    assert get_attr(snapshot.attributes, "coldtail.timeout") is True
    assert snapshot.status.code == 2


async def test_provisioned_concurrency_is_not_a_cold_start(collector):
    async with lambda_function(collector, provisioned=1) as fn:
        result = await fn.invoke(event("direct"))
    assert result.status == Status.SUCCESS and not result.cold
    grouped = await asyncio.to_thread(spans_by_invocation, collector)
    server = next(s for s in grouped[result.request_id] if get_attr(s.attributes, "faas.trigger"))
    assert get_attr(server.attributes, "faas.coldstart") is False
