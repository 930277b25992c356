"""coldtail chained to coldtail over OTLP gRPC and OTLP HTTP (protobuf and JSON), gzip on,
loses and changes nothing."""

import pytest
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from collector.core.signals import Signal
from tests.e2e import otlp_items
from tests.e2e.test_sdk_to_file import make_logs, make_metrics, make_spans
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

FRONT = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  {exporter}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [{exporter_id}]}}
    metrics: {{receivers: [otlp], processors: [batch], exporters: [{exporter_id}]}}
    logs: {{receivers: [otlp], processors: [batch], exporters: [{exporter_id}]}}
"""

BACK = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
    metrics: {{receivers: [otlp], exporters: [file]}}
    logs: {{receivers: [otlp], exporters: [file]}}
"""


def hop_exporter(hop: str, grpc: int, http: int) -> tuple[str, str]:
    """(exporter id, its YAML flow map) for the hop between the two collectors."""
    if hop == "grpc":
        return (
            "otlp",
            f'{{endpoint: "127.0.0.1:{grpc}", tls: {{insecure: true}}, compression: gzip}}',
        )
    encoding = hop.removeprefix("http-")
    return "otlphttp", (
        f'{{endpoint: "http://127.0.0.1:{http}", compression: gzip, encoding: {encoding}}}'
    )


@pytest.mark.parametrize("hop", ["grpc", "http-proto", "http-json"])
def test_chain_loses_and_changes_nothing(tmp_path, hop):
    front_port, grpc, http = free_port(), free_port(), free_port()
    out = tmp_path / "back.jsonl"
    back_cfg = tmp_path / "back.yaml"
    back_cfg.write_text(BACK.format(grpc=grpc, http=http, out=out))
    exporter_id, exporter = hop_exporter(hop, grpc, http)
    front_cfg = tmp_path / "front.yaml"
    front_cfg.write_text(
        FRONT.format(
            port=front_port, exporter_id=exporter_id, exporter=f"{exporter_id}: {exporter}"
        )
    )
    spans, metrics, logs = make_spans(), make_metrics(), make_logs()
    endpoint = f"127.0.0.1:{front_port}"
    with CollectorProcess(back_cfg) as back, CollectorProcess(front_cfg) as front:
        OTLPSpanExporter(endpoint=endpoint, insecure=True).export(spans)
        OTLPMetricExporter(endpoint=endpoint, insecure=True).export(metrics)
        OTLPLogExporter(endpoint=endpoint, insecure=True).export(logs)
        assert front.stop() == 0, front.log
        assert back.stop() == 0, back.log

    got = read_requests(out)
    assert otlp_items.spans(got[Signal.TRACES]) == otlp_items.spans([encode_spans(spans)])
    assert otlp_items.metric_point_set(got[Signal.METRICS]) == otlp_items.metric_point_set(
        [encode_metrics(metrics)]
    )
    assert otlp_items.log_record_set(got[Signal.LOGS]) == otlp_items.log_record_set(
        [encode_logs(logs)]
    )
