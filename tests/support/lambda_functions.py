"""Driving the Lambda instrumentation in-process and in fresh processes: the collector's OTLP
receiver as the export peer (on its own event loop thread, since the instrumentation exports
synchronously), the Python runtime's own LambdaContext, the test functions and their events."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from awslambdaric.lambda_context import LambdaContext

from collector.core.pdata import any_value_to_python, iter_spans
from collector.core.signals import Signal
from collector.receivers.otlp import Config, OtlpReceiver
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

ROOT = Path(__file__).resolve().parents[2]


EVENTS = ROOT / "tests" / "instrumentation" / "events"


FUNCTIONS = "tests.instrumentation.functions"


FUNCTION_NAME = "my-function"


FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-function:prod"


def attributes(kvs) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in kvs}


class Exported:
    """One exported span with its resource and scope, attributes as a dict."""

    def __init__(self, resource_spans, scope_spans, span) -> None:
        self.resource = attributes(resource_spans.resource.attributes)
        self.scope = (scope_spans.scope.name, scope_spans.scope.version)
        self.span = span
        self.attributes = attributes(span.attributes)

    def __getattr__(self, name):
        return getattr(self.span, name)

    def __repr__(self) -> str:
        return f"Exported({self.span.name!r}, {self.span.span_id.hex()})"


class Receiver:
    """The collector's OTLP/HTTP receiver (port 0: a free one), served from a background
    thread."""

    def __init__(self, port: int = 0) -> None:
        self.sink = SinkConsumer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        endpoint = f"127.0.0.1:{port}"
        config = Config.model_validate({"protocols": {"http": {"endpoint": endpoint}}})
        self.receiver = OtlpReceiver(
            make_settings("receiver", "otlp"), config, {Signal.TRACES: self.sink}
        )
        self._run(self.receiver.start(StaticHost()))
        self.endpoint = f"http://{self.receiver.http_endpoint}"

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    @property
    def requests(self) -> list:
        return list(self.sink.batches)

    def spans(self) -> list[Exported]:
        return [Exported(*found) for batch in self.requests for found in iter_spans(batch)]

    def named(self, name: str) -> list[Exported]:
        return [s for s in self.spans() if s.name == name]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Exported]:
        deadline = time.monotonic() + timeout
        while len(self.spans()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.spans()

    def reset(self) -> None:
        self.sink.batches.clear()

    def close(self) -> None:
        self._run(self.receiver.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def make_context(remaining_ms: int = 30_000, client_context: dict | None = None) -> LambdaContext:
    deadline_ms = int(time.time() * 1000) + remaining_ms
    return LambdaContext(str(uuid.uuid4()), client_context, None, deadline_ms, FUNCTION_ARN)


def load_event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def fresh_import(*modules: str) -> None:
    """Forget `modules` (test functions), so the next load imports them as a new process
    would."""
    package = sys.modules.get(FUNCTIONS)
    for module in modules:
        sys.modules.pop(f"{FUNCTIONS}.{module}", None)
        # `from package import module` takes the package's attribute when it has one.
        if package is not None and hasattr(package, module):
            delattr(package, module)


def run_python(code: str, env: dict, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def process_env(lambda_env: dict, **extra: str) -> dict:
    """This process's environment without OTEL_/COLDTAIL_ variables, with the Lambda variables
    and `extra`; this checkout (after extra's PYTHONPATH) on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "COLDTAIL_"))}
    env.update(lambda_env)
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (extra.get("PYTHONPATH"), str(ROOT)) if p is not None
    )
    return env
