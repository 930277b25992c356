"""Fresh processes: what importing the handler module loads, the module-level bootstrap the
runtime uses, a library instrumentor found by entry point, and the exec wrapper script."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.support.lambda_functions import (
    FUNCTION_ARN,
    FUNCTIONS,
    ROOT,
    process_env,
    run_python,
)

WRAPPER = ROOT / "instrumentation" / "bin" / "coldtail-instrument"
# `typing` too: the runtime has not imported it, and it costs milliseconds of cold start.
HEAVY_MODULES = (
    "opentelemetry",
    "google.protobuf",
    "http.client",
    "urllib.request",
    "ssl",
    "typing",
)

CHECK_IMPORTS = f"""
import json, sys
import instrumentation.handler
heavy = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"
               or any(m == h or m.startswith(h + ".") for h in {HEAVY_MODULES!r}))
print(json.dumps(heavy))
"""

INVOKE = f"""
import json, sys, time
import instrumentation.handler
from awslambdaric.lambda_context import LambdaContext
for request_id in ("first", "second"):
    deadline_ms = int(time.time() * 1000) + 30_000
    context = LambdaContext(request_id, None, None, deadline_ms, {FUNCTION_ARN!r})
    print(json.dumps(instrumentation.handler.handler(json.loads(sys.argv[1]), context)))
"""

FAKE_LIBRARY = """
def call():
    return "real result"
"""

FAKE_INSTRUMENTOR = '''
import fake_library


class FakeInstrumentor:
    """Wraps fake_library.call in a CLIENT span, as opentelemetry-instrumentation-* do."""

    def instrument(self, tracer_provider=None, **kwargs):
        from opentelemetry import trace

        tracer = trace.get_tracer("fake.instrumentation", "1.2.3", tracer_provider)
        original = fake_library.call

        def call():
            with tracer.start_as_current_span("fake call", kind=trace.SpanKind.CLIENT):
                return original()

        fake_library.call = call
'''

LIBRARY_APP = """
import fake_library


def handler(event, context):
    return {"statusCode": 200, "body": fake_library.call()}
"""


def test_importing_the_handler_loads_no_heavy_module(lambda_env):
    env = process_env(lambda_env, ORIG_HANDLER=f"{FUNCTIONS}.app.handler")
    result = run_python(CHECK_IMPORTS, env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_module_bootstrap_serves_the_original_handler(lambda_env, collector):
    env = process_env(lambda_env, ORIG_HANDLER=f"{FUNCTIONS}.app.handler")
    result = run_python(INVOKE, env, json.dumps({"status": 202}))

    assert result.returncode == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"statusCode": 202, "body": ""}
    ] * 2
    invocations = [s for s in collector.spans() if s.kind != Span.SPAN_KIND_INTERNAL]
    assert [s.attributes["faas.invocation_id"] for s in invocations] == ["first", "second"]
    assert [s.attributes["faas.coldstart"] for s in invocations] == [True, False]
    assert len(collector.named("init")) == 1
    modules = {s.attributes["coldtail.import.module"] for s in collector.named("coldtail.import")}
    assert f"{FUNCTIONS}.slow_dependency" in modules


def test_bootstrap_without_orig_handler_fails_at_invocation(lambda_env):
    result = run_python(INVOKE, process_env(lambda_env), "{}")
    assert result.returncode != 0
    assert "ORIG_HANDLER is not set" in result.stderr


@pytest.fixture
def fake_instrumentation(tmp_path) -> Path:
    """A library, its instrumentor and the distribution metadata registering the instrumentor
    under the name `fakelib`, on a directory to put on PYTHONPATH."""
    (tmp_path / "fake_library.py").write_text(FAKE_LIBRARY)
    (tmp_path / "fake_instrumentor.py").write_text(FAKE_INSTRUMENTOR)
    (tmp_path / "library_app.py").write_text(LIBRARY_APP)
    dist_info = tmp_path / "fake_instrumentation-0.0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: fake-instrumentation\nVersion: 0.0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nfakelib = fake_instrumentor:FakeInstrumentor\n"
    )
    return tmp_path


def test_enabled_instrumentations_join_the_invocation_trace(
    lambda_env, collector, fake_instrumentation
):
    env = process_env(
        lambda_env,
        PYTHONPATH=str(fake_instrumentation),
        ORIG_HANDLER="library_app.handler",
        OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="fakelib,notinstalled",
    )
    result = run_python(INVOKE, env, "{}")

    assert result.returncode == 0, result.stderr
    assert "no instrumentation named 'notinstalled'" in result.stderr
    assert json.loads(result.stdout.splitlines()[0]) == {"statusCode": 200, "body": "real result"}
    library_spans = collector.named("fake call")
    assert len(library_spans) == 2
    invocations = {s.span_id: s for s in collector.spans() if s.kind == Span.SPAN_KIND_SERVER}
    for library_span in library_spans:
        parent = invocations[library_span.parent_span_id]
        assert library_span.trace_id == parent.trace_id
        assert library_span.kind == Span.SPAN_KIND_CLIENT
        assert library_span.scope == ("fake.instrumentation", "1.2.3")
        assert library_span.resource == parent.resource
        assert parent.start_time_unix_nano <= library_span.start_time_unix_nano
        assert library_span.end_time_unix_nano <= parent.end_time_unix_nano


def test_disabled_instrumentations_win(lambda_env, collector, fake_instrumentation):
    env = process_env(
        lambda_env,
        PYTHONPATH=str(fake_instrumentation),
        ORIG_HANDLER="library_app.handler",
        OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="fakelib",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="fakelib",
    )
    result = run_python(CHECK_IMPORTS, env)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_enabled_instrumentations_load_the_api_and_never_the_sdk(lambda_env, fake_instrumentation):
    env = process_env(
        lambda_env,
        PYTHONPATH=str(fake_instrumentation),
        ORIG_HANDLER="library_app.handler",
        OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="fakelib",
    )
    result = run_python(CHECK_IMPORTS, env)

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "opentelemetry.trace" in loaded
    assert not [m for m in loaded if m.startswith("opentelemetry.sdk")]


# --- the exec wrapper ----------------------------------------------------------------------


def run_wrapper(env: dict) -> dict:
    result = subprocess.run(
        ["sh", str(WRAPPER), "env"], env=env, capture_output=True, text=True, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_exec_wrapper_swaps_the_handler_in_lambda():
    env = run_wrapper(
        {
            "PATH": os.environ["PATH"],
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "_HANDLER": "app.h",
        }
    )
    assert env["ORIG_HANDLER"] == "app.h"
    assert env["_HANDLER"] == "instrumentation.handler.handler"


def test_exec_wrapper_run_twice_keeps_the_users_handler():
    env = run_wrapper(
        {
            "PATH": os.environ["PATH"],
            "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
            "_HANDLER": "instrumentation.handler.handler",
            "ORIG_HANDLER": "app.h",
        }
    )
    assert env["ORIG_HANDLER"] == "app.h"


def test_exec_wrapper_outside_lambda_runs_the_command_unchanged():
    env = run_wrapper({"PATH": os.environ["PATH"], "_HANDLER": "app.h"})
    assert env["_HANDLER"] == "app.h"
    assert "ORIG_HANDLER" not in env


def test_exec_wrapper_is_executable():
    assert os.access(WRAPPER, os.X_OK)
    assert WRAPPER.read_text().startswith("#!/bin/sh\n")
