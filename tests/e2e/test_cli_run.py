"""`coldtail run` as a user meets it: a taken port is one line naming the key to change, the
start-up banner, log levels and durations as the OTel Collector writes them, and a second
Ctrl-C during the shutdown ends the process at once without a traceback."""

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.support.builders import make_traces
from tests.support.process import CollectorProcess, free_port

# Every listener kind on port 0, so a test takes exactly the one it names.
CONFIG = {
    "receivers": {
        "otlp": {
            "protocols": {
                "grpc": {"endpoint": "127.0.0.1:0"},
                "http": {"endpoint": "127.0.0.1:0"},
            }
        },
        "statsd": {"endpoint": "127.0.0.1:0"},
        "lambda_telemetry": {"endpoint": "127.0.0.1:0"},
        "jaeger": {
            "protocols": {
                "grpc": {"endpoint": "127.0.0.1:0"},
                "thrift_http": {"endpoint": "127.0.0.1:0"},
            }
        },
        "zipkin": {"endpoint": "127.0.0.1:0"},
    },
    "exporters": {"debug": {}, "coldtail_ui": {}, "prometheus": {"endpoint": "127.0.0.1:0"}},
    "extensions": {
        "health_check": {"endpoint": "127.0.0.1:0"},
        "awsproxy": {"endpoint": "127.0.0.1:0", "region": "eu-west-1"},
        "coldtail_ui": {"endpoint": "127.0.0.1:0"},
        "zpages": {"endpoint": "127.0.0.1:0"},
        "pprof": {"endpoint": "127.0.0.1:0"},
    },
    "service": {
        "extensions": ["health_check", "awsproxy", "coldtail_ui", "zpages", "pprof"],
        "telemetry": {"metrics": {"address": "127.0.0.1:0"}},
        "pipelines": {
            "traces": {
                "receivers": ["otlp", "lambda_telemetry", "jaeger", "zipkin"],
                "exporters": ["debug", "coldtail_ui"],
            },
            "metrics": {"receivers": ["otlp", "statsd"], "exporters": ["prometheus"]},
        },
    },
}

# A Go duration as the Collector prints a measured one, rounded: 5.078s, 112.346ms, 34m52.3s.
GO_DURATION = r"(\d+h)?(\d+m)?\d+(\.\d{1,3})?(s|ms|µs)|\d+ns"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@contextmanager
def taken(transport: str = "tcp"):
    """A port on 127.0.0.1 that another socket holds (listening, for TCP)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as holder:
        holder.bind(("127.0.0.1", 0))
        if transport == "tcp":
            holder.listen()
        yield holder.getsockname()[1]


def run(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("key", "transport"),
    [
        ("service::telemetry::metrics::address", "tcp"),
        ("receivers::otlp::protocols::grpc::endpoint", "tcp"),
        ("receivers::otlp::protocols::http::endpoint", "tcp"),
        ("extensions::health_check::endpoint", "tcp"),
        ("exporters::prometheus::endpoint", "tcp"),
        ("receivers::statsd::endpoint", "udp"),
        ("receivers::lambda_telemetry::endpoint", "tcp"),
        ("receivers::jaeger::protocols::grpc::endpoint", "tcp"),
        ("receivers::jaeger::protocols::thrift_http::endpoint", "tcp"),
        ("extensions::awsproxy::endpoint", "tcp"),
        ("receivers::zipkin::endpoint", "tcp"),
        ("extensions::coldtail_ui::endpoint", "tcp"),
        ("extensions::zpages::endpoint", "tcp"),
        ("extensions::pprof::endpoint", "tcp"),
    ],
)
def test_a_taken_port_is_one_line_naming_the_key_to_change(config, key, transport):
    with taken(transport) as port:
        result = run("run", "--config", str(config), "--set", f"{key}=127.0.0.1:{port}")
    assert result.returncode == 1, result.stderr
    address = f"udp 127.0.0.1:{port}" if transport == "udp" else f"127.0.0.1:{port}"
    # One line: no traceback, no gRPC core log, nothing said to listen before it.
    [line] = result.stderr.splitlines()
    expected = (
        rf"\S+Z\terror\tcannot listen on {re.escape(address)} \(address in use\): "
        rf"set {key}, e\.g\. --set {key}=127\.0\.0\.1:(\d+)"
    )
    match = re.fullmatch(expected, line)
    assert match, line
    assert int(match.group(1)) != port


def test_the_suggested_endpoint_starts(config):
    key = "receivers::otlp::protocols::grpc::endpoint"
    with taken() as port:
        failed = run("run", "--config", str(config), "--set", f"{key}=127.0.0.1:{port}")
        suggestion = failed.stderr.strip().rpartition("--set ")[2]
        assert suggestion.startswith(f"{key}=127.0.0.1:"), failed.stderr
        with CollectorProcess(config, "--set", suggestion) as collector:
            grpc_port = suggestion.rpartition(":")[2]
            assert any(f"127.0.0.1:{grpc_port}  receiver otlp" in line for line in collector.lines)
            assert collector.stop() == 0


@pytest.mark.parametrize("encoding", ["console", "json"])
def test_warnings_are_logged_at_level_warn(config, encoding):
    """An unused component is a warning; the level is written `warn`, as the Collector does."""
    with taken() as port:
        result = run(
            "run",
            "--config",
            str(config),
            "--set",
            "exporters::file::path=/dev/null",
            "--set",
            f"service::telemetry::logs::encoding={encoding}",
            "--set",
            f"service::telemetry::metrics::address=127.0.0.1:{port}",
        )
    assert result.returncode == 1
    warning, failure = result.stderr.splitlines()
    if encoding == "json":
        assert json.loads(warning)["level"] == "warn"
        assert json.loads(warning)["msg"].startswith("exporters::file:")
        assert json.loads(failure)["level"] == "error"
    else:
        _, level, message = warning.split("\t")
        assert level == "warn" and message.startswith("exporters::file:")
    assert "warning" not in result.stderr


def banner(lines: list[str]) -> list[str]:
    """The start-up banner: its first line and the indented lines of its block."""
    start = next(i for i, line in enumerate(lines) if re.search(r"\tcoldtail \S+ started$", line))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    return block


def test_the_banner_says_version_sources_pipelines_and_listeners(config):
    from collector.core.telemetry import coldtail_version

    with CollectorProcess(config, "--set", "processors::batch::timeout=0s") as collector:
        lines = banner(collector.lines)
        assert lines[0].endswith(f"\tinfo\tcoldtail {coldtail_version()} started")
        assert lines[1] == f"config:     {config}"
        assert lines[2] == "set:        processors::batch::timeout"  # its key, not its value
        assert lines[3] == "pipelines:  metrics: otlp, statsd -> prometheus"  # as the file orders
        assert lines[4] == "traces: otlp, lambda_telemetry, jaeger, zipkin -> debug, coldtail_ui"
        assert "extensions: health_check, awsproxy, coldtail_ui, zpages, pprof" in lines
        # The last part of the block: "listening:  ADDRESS  OWNER", then "ADDRESS  OWNER".
        first = next(i for i, line in enumerate(lines) if line.startswith("listening:"))
        entries = [line.removeprefix("listening:").strip() for line in lines[first:]]
        listening = {owner: address for address, _, owner in (e.partition("  ") for e in entries)}
        assert set(listening) >= {
            "own metrics",
            "extension health_check",
            "receiver otlp (OTLP/gRPC)",
            "receiver otlp (OTLP/HTTP)",
            "exporter prometheus (Prometheus metrics)",
            "receiver statsd",
            "receiver lambda_telemetry (Telemetry API)",
        }, lines
        # The listeners' own lines are folded into the banner, not repeated.
        assert not any(line.endswith("OTLP/gRPC listening") for line in collector.lines)
        assert "everything is ready" in collector.lines[-1]
        # Every listener above runs on uvloop's event loop: its extension module is loaded.
        assert "/uvloop/loop." in Path(f"/proc/{collector.proc.pid}/maps").read_text()
        # The health check's uptime is a rounded Go duration.
        health = listening["extension health_check"]
        body = json.load(urllib.request.urlopen(f"http://{health}/", timeout=5))
        assert re.fullmatch(GO_DURATION, body["uptime"]), body
        assert collector.stop() == 0


def test_the_event_loop_is_asyncios_where_uvloop_is_missing(monkeypatch):
    import uvloop

    from collector.cli import event_loop_factory

    assert event_loop_factory() is uvloop.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if not installed: ImportError
    assert event_loop_factory() is None


def test_a_second_signal_during_the_shutdown_exits_at_once(tmp_path):
    """The first SIGINT starts draining into a backend that is down (retried up to the 30s
    shutdown timeout); the second ends the process at once with one line."""
    http, down = free_port(), free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "receivers": {"otlp": {"protocols": {"http": {"endpoint": f"127.0.0.1:{http}"}}}},
                "exporters": {
                    "otlphttp": {
                        "endpoint": f"http://127.0.0.1:{down}",
                        "retry_on_failure": {"initial_interval": "100ms", "max_interval": "200ms"},
                    }
                },
                "service": {
                    "shutdown_timeout": "30s",
                    "telemetry": {"metrics": {"level": "none"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}},
                },
            }
        )
    )
    with CollectorProcess(config) as collector:
        assert collector.proc is not None
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/v1/traces",
            data=make_traces(3).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert urllib.request.urlopen(request, timeout=5).status == 200  # queued
        wait_for(collector, "will retry in")
        collector.proc.send_signal(signal.SIGINT)
        wait_for(collector, "received stop signal; shutting down")
        time.sleep(0.3)  # draining: the backend is still down
        assert collector.proc.poll() is None
        began = time.monotonic()
        code = collector.stop(signal.SIGINT, timeout=5)
    assert code == 128 + signal.SIGINT
    assert time.monotonic() - began < 3
    assert "Traceback" not in collector.log and "KeyboardInterrupt" not in collector.log
    assert "shutdown complete" not in collector.log
    assert collector.lines[-1].endswith(
        "\twarn\treceived a second stop signal; exiting now, without draining what the "
        "pipelines hold"
    )
    # Retry delays are written as rounded Go durations.
    delays = [
        line.partition("will retry in ")[2].partition(":")[0]
        for line in collector.lines
        if "will retry in" in line
    ]
    assert delays and all(re.fullmatch(GO_DURATION, d) for d in delays), delays


def wait_for(collector: CollectorProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in line for line in collector.lines):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{collector.log}"
        time.sleep(0.05)
