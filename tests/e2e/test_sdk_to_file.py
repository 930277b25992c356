"""The OpenTelemetry Python SDK's OTLP exporters send to a real `coldtail run` process; the file
exporter's output holds every span, metric point and log record exactly as sent."""

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collector.core.signals import Signal
from tests.e2e import otlp_items
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

RESOURCE = Resource.create(
    {"service.name": "orders", "cloud.platform": "aws_lambda", "faas.name": "orders-fn"}
)


def make_spans():
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("orders.handler", "1.2.3")
    with tracer.start_as_current_span("GET /orders/{id}", kind=SpanKind.SERVER) as root:
        root.set_attribute("http.route", "/orders/{id}")
        root.set_attribute("http.response.status_code", 200)
        root.set_attribute("retry.ratios", [0.5, 1.5])
        root.add_event("cache.miss", {"cache.key": "order:42"})
        with tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
            child.record_exception(ValueError("slow"))
    other = tracer.start_span(
        "consume",
        kind=SpanKind.CONSUMER,
        links=[Link(root.get_span_context(), {"link.kind": "batch"})],
    )
    other.end()
    provider.shutdown()
    return memory.get_finished_spans()


def make_metrics():
    reader = InMemoryMetricReader()
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("orders.metrics", "1.0")
    meter.create_counter("orders.placed", unit="1").add(3, {"region": "eu"})
    meter.create_histogram("orders.latency", unit="ms").record(12.5, {"route": "/orders"})
    meter.create_up_down_counter("orders.inflight").add(-2)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def make_logs():
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("orders.e2e", "2.0")
    logger.emit(
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        body="order 42 failed",
        attributes={"order.id": 42},
    )
    logger.emit(severity_number=SeverityNumber.INFO, body={"event": "placed", "items": [1, 2]})
    provider.shutdown()
    return memory.get_finished_logs()


CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [file]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [file]}}
"""


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporters_to_file_lose_and_change_nothing(tmp_path, transport):
    grpc_port, http_port = free_port(), free_port()
    out = tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(grpc=grpc_port, http=http_port, out=out))
    spans, metrics, logs = make_spans(), make_metrics(), make_logs()
    if transport == "grpc":
        endpoint = f"127.0.0.1:{grpc_port}"
        exporters = (
            GrpcSpans(endpoint=endpoint, insecure=True),
            GrpcMetrics(endpoint=endpoint, insecure=True),
            GrpcLogs(endpoint=endpoint, insecure=True),
        )
    else:
        base = f"http://127.0.0.1:{http_port}"
        exporters = (
            HttpSpans(endpoint=f"{base}/v1/traces"),
            HttpMetrics(endpoint=f"{base}/v1/metrics"),
            HttpLogs(endpoint=f"{base}/v1/logs"),
        )
    with CollectorProcess(config) as collector:
        assert exporters[0].export(spans) == SpanExportResult.SUCCESS
        assert exporters[1].export(metrics) == MetricExportResult.SUCCESS
        assert exporters[2].export(logs) == LogRecordExportResult.SUCCESS
        for exporter in exporters:
            exporter.shutdown()
        assert collector.stop() == 0, collector.log

    got = read_requests(out)
    sent_spans = otlp_items.spans([encode_spans(spans)])
    assert len(sent_spans) == 3
    assert otlp_items.spans(got[Signal.TRACES]) == sent_spans
    assert otlp_items.metric_point_set(got[Signal.METRICS]) == otlp_items.metric_point_set(
        [encode_metrics(metrics)]
    )
    assert len(otlp_items.metric_point_set(got[Signal.METRICS])) == 3
    assert otlp_items.log_record_set(got[Signal.LOGS]) == otlp_items.log_record_set(
        [encode_logs(logs)]
    )
    assert len(otlp_items.log_record_set(got[Signal.LOGS])) == 2
