"""A real `coldtail run` with transform and filter processors, fed by the OpenTelemetry Python
SDK's OTLP/HTTP exporters: what reaches the file exporter is the data as the OTTL statements
and conditions changed and filtered it; a mistake in a statement stops the collector before
it starts, naming the statement's key path and column."""

import hashlib
import subprocess
import sys

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from collector.core.pdata import get_attr, iter_items
from collector.core.signals import Signal
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

RESOURCE = Resource.create({"service.name": "orders", "deployment.environment": "prod"})

CONFIG = r"""
receivers:
  otlp:
    protocols:
      http: {{endpoint: "127.0.0.1:{port}"}}
processors:
  transform:
    error_mode: ignore
    trace_statements:
      - set(span.attributes["env"], resource.attributes["deployment.environment"])
      - replace_pattern(span.name, "/\\d+", "/{{id}}")
      - >-
        set(span.attributes["user.hash"], SHA256(span.attributes["user.email"]))
        where span.attributes["user.email"] != nil
      - delete_key(span.attributes, "user.email")
      - context: span
        conditions: ['kind == SPAN_KIND_SERVER']
        statements: ['set(attributes["entry"], true)']
    log_statements:
      - merge_maps(log.attributes, ParseJSON(log.body), "upsert") where IsMatch(log.body, "^\\{{")
      - set(log.severity_text, "WARN") where log.attributes["level"] == "warning"
  filter:
    traces:
      span: ['name == "GET /healthz"']
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [transform, filter], exporters: [file]}}
    logs: {{receivers: [otlp], processors: [transform, filter], exporters: [file]}}
"""


def make_spans():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("orders.handler")
    with tracer.start_as_current_span("GET /orders/42", kind=SpanKind.SERVER) as root:
        root.set_attribute("user.email", "ann@example.com")
        with tracer.start_as_current_span("GET /customers/7", kind=SpanKind.CLIENT):
            pass
    with tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER):
        pass
    provider.shutdown()
    return memory.get_finished_spans()


def make_logs():
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("orders.e2e")
    logger.emit(body='{"level": "warning", "order": "42"}')
    logger.emit(body="plain text")
    provider.shutdown()
    return memory.get_finished_logs()


def test_sdk_data_through_transform_and_filter(tmp_path):
    port, out = free_port(), tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=port, out=out))
    base = f"http://127.0.0.1:{port}"
    span_exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces")
    log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs")
    with CollectorProcess(config) as collector:
        assert span_exporter.export(make_spans()) == SpanExportResult.SUCCESS
        assert log_exporter.export(make_logs()) == LogRecordExportResult.SUCCESS
        span_exporter.shutdown()
        log_exporter.shutdown()
        assert collector.stop() == 0, collector.log

    got = read_requests(out)
    spans = {s.name: s for batch in got[Signal.TRACES] for _, _, s in iter_items(batch)}
    assert set(spans) == {"GET /orders/{id}", "GET /customers/{id}"}
    server, client = spans["GET /orders/{id}"], spans["GET /customers/{id}"]
    assert get_attr(server.attributes, "env") == "prod"
    assert get_attr(server.attributes, "entry") is True
    assert get_attr(client.attributes, "entry") is None
    assert get_attr(server.attributes, "user.email") is None
    assert (
        get_attr(server.attributes, "user.hash") == hashlib.sha256(b"ann@example.com").hexdigest()
    )

    records = [r for batch in got[Signal.LOGS] for _, _, r in iter_items(batch)]
    by_body = {r.body.string_value: r for r in records}
    structured = by_body['{"level": "warning", "order": "42"}']
    assert get_attr(structured.attributes, "order") == "42"
    assert structured.severity_text == "WARN"
    assert list(by_body["plain text"].attributes) == []


def test_a_bad_statement_is_reported_with_its_key_path(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        CONFIG.format(port=free_port(), out=tmp_path / "out.jsonl").replace(
            "SHA256(span.attributes", "SHA265(span.attributes"
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "collector", "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert (
        "processors::transform::trace_statements::2: unknown function 'SHA265' at column 35"
        in result.stderr
    )
