"""configure(), the exec wrapper's bootstrap and the cold-start rule, each on its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from instrumentation.container import bootstrap
from instrumentation.container.coldstart import ColdStartProcessor
from tests.support.containers import APPS, WRAPPER, server_spans, service_environment

START_NS = 1_700_000_000_000_000_000


def started(cold_requests: int, *kinds: SpanKind, reset_after: int | None = None) -> list:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    cold_start = ColdStartProcessor(cold_requests, START_NS)
    provider.add_span_processor(cold_start)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for i, kind in enumerate(kinds):
        if i == reset_after:
            cold_start.reset()
        tracer.start_span("request", kind=kind, start_time=START_NS + (i + 1) * 1_000_000).end()
    return [dict(span.attributes) for span in exporter.get_finished_spans()]


def test_the_first_server_spans_are_cold_and_carry_the_time_since_start():
    server, client = SpanKind.SERVER, SpanKind.CLIENT
    first, outgoing, second, third = started(2, server, client, server, server)
    assert first == {
        "coldtail.cold_start": True,
        "coldtail.cold_start.source": "instrumentation",
        "coldtail.time_since_start_ms": 1.0,
    }
    assert outgoing == {}
    assert second["coldtail.cold_start"] is True
    assert second["coldtail.time_since_start_ms"] == 3.0
    assert third == {"coldtail.cold_start": False, "coldtail.cold_start.source": "instrumentation"}


def test_reset_makes_the_next_request_cold_and_zero_turns_cold_starts_off():
    spans = started(1, SpanKind.SERVER, SpanKind.SERVER, SpanKind.SERVER, reset_after=2)
    assert [span["coldtail.cold_start"] for span in spans] == [True, False, True]
    spans = started(0, SpanKind.SERVER)
    assert [span["coldtail.cold_start"] for span in spans] == [False]


def test_python_path_puts_the_autostart_directory_first_once():
    autostart = bootstrap.AUTOSTART_DIR
    assert bootstrap.python_path("") == autostart
    assert bootstrap.python_path(os.pathsep.join(["/app", autostart, "/lib"])) == (
        os.pathsep.join([autostart, "/app", "/lib"])
    )


def run_wrapped(*command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(WRAPPER), *command],
        env=service_environment(**env),
        capture_output=True,
        text=True,
        timeout=30,
    )


PROBE = """
import json, os, sys
import instrumentation
from opentelemetry import trace
provider = instrumentation.configure()
parent = dict(provider.resource.attributes)
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, json.dumps(dict(trace.get_tracer_provider().resource.attributes)).encode())
    os._exit(0)
os.wait()
child = json.loads(os.read(read, 65536))
print(json.dumps({
    "sitecustomize": sys.modules["sitecustomize"].__file__,
    "start_ns": os.environ["COLDTAIL_START_NS"],
    "same_provider": provider is trace.get_tracer_provider(),
    "parent": parent,
    "child": child,
}))
"""


def test_the_wrapper_sets_up_every_python_process_and_forks_are_new_instances():
    result = run_wrapped(sys.executable, "-c", PROBE, OTEL_SERVICE_NAME="checkout")
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    assert probe["sitecustomize"].startswith(bootstrap.AUTOSTART_DIR)
    assert int(probe["start_ns"]) > 0
    assert probe["same_provider"]  # configure() in code returns the one set up at start
    parent, child = probe["parent"], probe["child"]
    assert parent["service.name"] == child["service.name"] == "checkout"
    assert parent["telemetry.distro.name"] == "coldtail"
    assert parent["process.pid"] != child["process.pid"]
    assert parent["service.instance.id"] != child["service.instance.id"]


def test_configured_resource_attributes_win_also_in_forked_processes():
    result = run_wrapped(
        sys.executable,
        "-c",
        PROBE,
        OTEL_RESOURCE_ATTRIBUTES="service.instance.id=checkout-1,cloud.region=eu-west-1",
    )
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout)
    for resource in probe["parent"], probe["child"]:
        assert resource["service.instance.id"] == "checkout-1"
        assert resource["cloud.region"] == "eu-west-1"


def test_otel_sdk_disabled_sets_up_nothing():
    code = "import instrumentation; print(instrumentation.configure())"
    result = run_wrapped(sys.executable, "-c", code, OTEL_SDK_DISABLED="true")
    assert (result.returncode, result.stdout) == (0, "None\n"), result.stderr


def test_a_missing_command_fails_like_a_shell():
    result = run_wrapped("no-such-command-coldtail")
    assert result.returncode == 127
    assert "no-such-command-coldtail" in result.stderr


@pytest.mark.parametrize(("argument", "exit_code"), [("", -signal.SIGTERM), ("own-handler", 3)])
def test_sigterm_exports_the_spans_and_ends_the_process_as_it_would_have(
    sidecar, argument, exit_code
):
    environ = service_environment(
        OTEL_EXPORTER_OTLP_ENDPOINT=sidecar.endpoint, OTEL_SERVICE_NAME="plain"
    )
    proc = subprocess.Popen(
        [sys.executable, "plain_app.py", argument],
        cwd=APPS,
        env=environ,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == exit_code
    finally:
        proc.kill()
        proc.wait()
    (span,) = server_spans(sidecar.drain())
    assert span.name == "GET /orders"
    assert span.attributes["coldtail.cold_start"] is True
