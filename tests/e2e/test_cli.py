"""The command line as a user runs it: validate, components, print-config, the version, otelcol's
flag forms, and run on the embedded default."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from collector.core.component import Kind
from collector.core.signals import Signal
from collector.registry import registry
from tests.e2e.test_sdk_to_file import make_spans
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port


def coldtail(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args], capture_output=True, text=True, timeout=60
    )


def test_validate_accepts_the_shipped_default():
    result = coldtail("validate", "--config", "config/default.yaml")
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout


def test_validate_exits_2_listing_every_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "receivers: {otlp: {protocols: {grpc: {endpoint: nowhere}}}}\n"
        "processors: {batch: {timeout: soon}}\n"
        "exporters: {debug: }\n"
        "service: {pipelines: {traces: {receivers: [otlp], processors: [batch], "
        "exporters: [debug, file]}}}\n"
    )
    result = coldtail("validate", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "invalid configuration (3 errors):",
        "  receivers::otlp::protocols::grpc::endpoint: invalid endpoint 'nowhere': expected "
        "host:port, like 127.0.0.1:4317",
        "  processors::batch::timeout: invalid duration 'soon': expected a number with a unit "
        "(ns, us, ms, s, m, h), like 200ms, 5s or 1m",
        "  service::pipelines::traces::exporters::1: references exporter or connector file "
        "which is not configured under exporters or connectors",
    ]


def test_validate_applies_set_and_reports_unreadable_files(tmp_path):
    result = coldtail(
        "validate", "--config", "config/default.yaml", "--set", "processors::batch::timeout=never"
    )
    assert result.returncode == 2
    assert "processors::batch::timeout: invalid duration 'never'" in result.stderr
    missing = coldtail("validate", "--config", str(tmp_path / "none.yaml"))
    assert missing.returncode == 2
    assert "cannot read config" in missing.stderr


def test_validate_never_prints_a_secret(tmp_path):
    secret = "s3cr3t-t0ken-value"
    config = tmp_path / "secret.yaml"
    for extension, exporter_headers in (
        ({"token": secret}, {"authorization": f"Bearer {secret}"}),  # valid
        ({"token": secret, "filename": "/tmp/also"}, f"Bearer {secret}"),  # two errors
    ):
        config.write_text(
            yaml.safe_dump(
                {
                    "extensions": {"bearertokenauth": extension},
                    "receivers": {"otlp": {"protocols": {"grpc": {}}}},
                    "exporters": {
                        "otlphttp": {
                            "endpoint": "https://otlp.example.com",
                            "headers": exporter_headers,
                        }
                    },
                    "service": {
                        "extensions": ["bearertokenauth"],
                        "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
                    },
                }
            )
        )
        result = coldtail("validate", "--config", str(config))
        assert result.returncode == (0 if isinstance(exporter_headers, dict) else 2), result
        assert secret not in result.stdout + result.stderr


def test_run_with_invalid_config_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers: {}\n")
    result = coldtail("run", "--config", str(bad))
    assert result.returncode == 2
    assert "service::pipelines: at least one pipeline is required" in result.stderr


def test_components_text_lists_every_type_with_signals():
    result = coldtail("components", "--format", "text")
    assert result.returncode == 0
    for kind in Kind:
        assert f"{kind.section}:" in result.stdout
        for factory in registry().factories(kind):
            assert f"\n  {factory.type}" in result.stdout
    assert "signals: traces: beta, metrics: beta, logs: beta" in result.stdout


def test_components_prints_yaml_as_otelcol_does():
    result = coldtail("components")
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert document["buildinfo"] == {
        "command": "coldtail",
        "description": "coldtail collector",
        "version": importlib.metadata.version("coldtail"),
    }
    levels = {"Development", "Alpha", "Beta", "Stable", "Deprecated", "Undefined"}
    for kind in Kind:
        listed = {c["name"]: c for c in document[kind.section]}
        assert set(listed) == {f.type for f in registry().factories(kind)}
        for component in listed.values():
            assert set(component["stability"].values()) <= levels, component
    otlp = next(c for c in document["receivers"] if c["name"] == "otlp")
    assert otlp["stability"] == {"traces": "Beta", "metrics": "Beta", "logs": "Beta"}
    assert otlp["module"] == "collector.receivers.otlp"
    statsd = next(c for c in document["receivers"] if c["name"] == "statsd")
    assert statsd["stability"]["traces"] == "Undefined"
    forward = next(c for c in document["connectors"] if c["name"] == "forward")
    assert forward["stability"]["traces-to-traces"] == "Beta"
    assert forward["stability"]["traces-to-metrics"] == "Undefined"
    assert {"scheme": "env", "module": "collector.core.confmap"} in document["providers"]
    # The same document as JSON.
    as_json = coldtail("components", "--format", "json")
    assert json.loads(as_json.stdout) == document


@pytest.mark.parametrize("args", [["--version"], ["version"]])
def test_version(args):
    result = coldtail(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"coldtail version {importlib.metadata.version('coldtail')}\n"


def test_config_and_set_without_a_command_run_the_collector(tmp_path):
    """otelcol's form: `coldtail --config FILE --set KEY=VALUE` is `coldtail run ...`."""
    metrics = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        "receivers: {otlp: {protocols: {http: {endpoint: 127.0.0.1:0}}}}\n"
        "exporters: {debug: }\n"
        "service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n"
    )
    collector = CollectorProcess(None)
    collector.args = [
        sys.executable,
        "-m",
        "collector",
        f"--config={config}",
        "--set",
        f"service::telemetry::metrics::address=127.0.0.1:{metrics}",
    ]
    with collector:
        # The --set took effect: the own metrics are where it said.
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        assert b"otelcol_process_uptime_total" in scrape.read()
        assert collector.stop() == 0
    # Nothing at all is a usage error that lists the commands.
    bare = coldtail()
    assert bare.returncode == 2 and "print-config" in bare.stderr


SECRET_CONFIG = """
extensions:
  bearertokenauth: {token: "${env:BEARER}"}
receivers:
  otlp: {protocols: {grpc: {endpoint: "127.0.0.1:4317", auth: {authenticator: bearertokenauth}}}}
exporters:
  otlphttp:
    endpoint: "${env:BACKEND}"
    headers:
      Authorization: "Bearer header-s3cr3t"
      X-Tenant: acme
service:
  extensions: [bearertokenauth]
  pipelines: {traces: {receivers: [otlp], exporters: [otlphttp]}}
"""


def test_print_config_merges_expands_and_redacts_secrets(tmp_path):
    base, override = tmp_path / "base.yaml", tmp_path / "override.yaml"
    base.write_text(SECRET_CONFIG)
    override.write_text("exporters: {otlphttp: {compression: none}}\n")
    env = {**os.environ, "BEARER": "env-t0ken-s3cr3t", "BACKEND": "https://otlp.example.com"}
    args = [
        "--config",
        str(base),
        "--config",
        str(override),
        "--set",
        "service::shutdown_timeout=3s",
    ]

    def print_config(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "collector", "print-config", *args, *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    redacted = print_config()
    assert redacted.returncode == 0, redacted.stderr
    assert "s3cr3t" not in redacted.stdout + redacted.stderr
    tree = yaml.safe_load(redacted.stdout)
    assert tree["extensions"]["bearertokenauth"]["token"] == "[REDACTED]"
    exporter = tree["exporters"]["otlphttp"]
    assert exporter["headers"] == {"Authorization": "[REDACTED]", "X-Tenant": "acme"}
    assert exporter["endpoint"] == "https://otlp.example.com"  # ${env:...} expanded
    assert exporter["compression"] == "none"  # the second source merged
    assert tree["service"]["shutdown_timeout"] == "3s"  # --set applied
    assert tree["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"

    unredacted = print_config("--mode", "unredacted", "--format", "json")
    assert unredacted.returncode == 0, unredacted.stderr
    tree = json.loads(unredacted.stdout)
    assert tree["extensions"]["bearertokenauth"]["token"] == "env-t0ken-s3cr3t"
    assert tree["exporters"]["otlphttp"]["headers"]["Authorization"] == "Bearer header-s3cr3t"


def test_print_config_refuses_an_invalid_config_unless_told_not_to_validate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "extensions: {bearertokenauth: {token: s3cr3t, filename: /tmp/also}}\n"
        "exporters: {debug: }\n"
    )
    refused = coldtail("print-config", "--config", str(bad))
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "extensions::bearertokenauth" in refused.stderr and "s3cr3t" not in refused.stderr
    printed = coldtail("print-config", "--config", str(bad), "--validate=false")
    assert printed.returncode == 0, printed.stderr
    assert yaml.safe_load(printed.stdout)["extensions"]["bearertokenauth"] == {
        "token": "[REDACTED]",
        "filename": "/tmp/also",
    }


def test_run_embedded_default_pipeline(tmp_path):
    grpc, http, metrics = free_port(), free_port(), free_port()
    out = tmp_path / "otlp.jsonl"
    overrides = [
        f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc}",
        f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{http}",
        f"exporters::file::path={out}",
        f"service::telemetry::metrics::address=127.0.0.1:{metrics}",
    ]
    args = [a for o in overrides for a in ("--set", o)]
    spans = make_spans()
    with CollectorProcess(None, *args) as collector:
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http}/v1/traces")
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        # The batch processor holds spans up to 200ms; the own metrics show them arrive.
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        text = scrape.read().decode()
        accepted = [
            line
            for line in text.splitlines()
            if line.startswith('otelcol_receiver_accepted_spans_total{receiver="otlp",')
            and 'transport="http"' in line
        ]
        assert len(accepted) == 1 and accepted[0].endswith(" 3.0"), text
        # The own telemetry's resource labels every metric.
        assert 'service_name="coldtail"' in accepted[0]
        assert re.search(r'service_instance_id="[0-9a-f-]{36}"', accepted[0])
        assert 'service_version="' in accepted[0]
        assert collector.stop() == 0
    assert any("Traces" in line and "spans" in line for line in collector.lines), collector.log
    assert (
        sum(
            len(ss.spans)
            for r in read_requests(out)[Signal.TRACES]
            for rs in r.resource_spans
            for ss in rs.scope_spans
        )
        == 3
    )


def test_emulate_invokes_a_handler_in_the_local_lambda(tmp_path):
    event = tmp_path / "event.json"
    event.write_text('{"order": 42}')
    result = coldtail(
        "emulate",
        "--handler",
        "echo.handler",
        "--code",
        "tests/emulator/lambda_functions",
        "--event",
        str(event),
        "--invocations",
        "2",
    )
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["status"], first["cold"], second["cold"]) == ("success", True, False)
    assert first["payload"]["event"] == {"order": 42}


def test_run_serves_own_metrics_where_a_helm_chart_style_reader_says(tmp_path):
    metrics = free_port()
    config = tmp_path / "helm.yaml"
    config.write_text(
        f"""
receivers: {{otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{free_port()}"}}}}}}}}
exporters: {{debug: {{}}}}
service:
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus:
                host: ${{env:POD_IP}}
                port: {metrics}
    resource:
      service.name: gateway
      service.instance.id: null
      deployment.environment: prod
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""
    )
    with CollectorProcess(config, env={"POD_IP": "127.0.0.1"}) as collector:
        scrape = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5)
        first = next(
            line for line in scrape.read().decode().splitlines() if line.startswith("otelcol_")
        )
        assert 'service_name="gateway"' in first
        assert 'deployment_environment="prod"' in first
        assert "service_instance_id" not in first
        assert collector.stop() == 0
