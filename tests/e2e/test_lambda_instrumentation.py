"""The Lambda instrumentation end to end: real awslambdaric runtime processes in the local Lambda
emulator, started through the exec wrapper, exporting to a `coldtail run` subprocess whose file
exporter shows what arrived."""

import asyncio
import json
import time
from pathlib import Path

import pytest

from collector.core.pdata import get_attr, iter_spans
from collector.core.signals import Signal
from emulator import LambdaEmulator, Status
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = ROOT / "instrumentation" / "bin" / "coldtail-instrument"
EVENTS = ROOT / "tests" / "instrumentation" / "events"
FUNCTIONS = "tests.instrumentation.functions"
HANDLER = f"{FUNCTIONS}.app.handler"

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


def collector_process(tmp_path: Path, port: int) -> CollectorProcess:
    """Not started yet; `port` and `out` (its file) set."""
    out = tmp_path / "spans.jsonl"
    config = tmp_path / "collector.yaml"
    config.write_text(CONFIG.format(port=port, out=out))
    process = CollectorProcess(config)
    process.port, process.out = port, out
    return process


@pytest.fixture
def collector(tmp_path):
    with collector_process(tmp_path, free_port()) as process:
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


def lambda_function(collector, handler: str = HANDLER, **kwargs) -> LambdaEmulator:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "COLDTAIL_TIMEOUT_WARNING_MS": "600",
        **kwargs.pop("env", {}),
    }
    return LambdaEmulator(
        handler,
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
    # One link per record with a trace context: its AWSTraceHeader, else its traceparent.
    traced = [
        r
        for r in event("sqs")["Records"]
        if "AWSTraceHeader" in r.get("attributes", {}) or "traceparent" in r["messageAttributes"]
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


async def test_the_handlers_own_api_spans_nest_under_each_invocation(collector):
    async with lambda_function(collector, f"{FUNCTIONS}.api_app.handler") as fn:
        results = [await fn.invoke(event("apigw-http")) for _ in range(2)]
    assert [r.status for r in results] == [Status.SUCCESS] * 2
    grouped = await asyncio.to_thread(spans_by_invocation, collector)

    for result in results:
        spans = grouped[result.request_id]
        server = next(s for s in spans if get_attr(s.attributes, "faas.trigger"))
        assert get_attr(server.attributes, "order.id") == "o-1"
        (charge,) = [s for s in spans if s.name == "charge"]
        (ledger,) = [s for s in spans if s.name == "ledger"]
        assert charge.parent_span_id == server.span_id
        assert ledger.parent_span_id == charge.span_id
        assert charge.trace_id == ledger.trace_id == server.trace_id
        traceparent = json.loads(result.payload["body"])["traceparent"]
        assert traceparent == f"00-{ledger.trace_id.hex()}-{ledger.span_id.hex()}-01"


async def test_a_function_that_never_uses_opentelemetry_loads_none_of_it(collector):
    async with lambda_function(collector, f"{FUNCTIONS}.modules_app.handler") as fn:
        results = [await fn.invoke(event("direct")) for _ in range(2)]
    assert [r.status for r in results] == [Status.SUCCESS] * 2
    assert [json.loads(r.payload["body"]) for r in results] == [[], []]


async def test_spans_kept_after_a_failed_export_go_out_when_the_environment_shuts_down(tmp_path):
    # The python3.11 runtime waits for the next invocation in C code on its main thread, where
    # no Python signal handler runs: the wakeup thread must flush and end the process.
    collector = collector_process(tmp_path, free_port())
    async with lambda_function(collector) as fn:
        result = await fn.invoke(event("direct"))  # its export fails: nothing listens
        await asyncio.to_thread(collector.start)
        started = time.monotonic()
        await fn.shutdown()
        shutdown_seconds = time.monotonic() - started
    try:
        grouped = await asyncio.to_thread(spans_by_invocation, collector)
    finally:
        collector.kill()

    assert result.status == Status.SUCCESS
    logs = "\n".join(line for lines in fn.log_streams.values() for line in lines)
    assert "kept for the next export" in logs
    spans = grouped[result.request_id]
    assert {s.name for s in spans} >= {"orders", "init", "coldtail.import"}
    # Well before the SIGKILL that would have come 2 s after SIGTERM.
    assert shutdown_seconds < 1.0
