"""Real processes on loopback for the container instrumentation's tests: the service under
`coldtail-instrument`, a local ECS task metadata endpoint and a coldtail sidecar writing what it
receives to a file, and what the tests read back."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from collector.core.pdata import any_value_to_python, iter_spans
from collector.core.signals import Signal
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


WRAPPER = ROOT / "instrumentation" / "bin" / "coldtail-instrument"


APPS = ROOT / "tests" / "container" / "apps"


VENV_BIN = str(Path(sys.executable).parent)


# Variables of the test run's own environment that would change what the service does.
_OWN_VARIABLES = ("OTEL_", "COLDTAIL_", "ECS_CONTAINER_METADATA_URI")


# The batch processor holds what the sidecar acknowledged until it is stopped, so the file shows
# what the drain on SIGTERM wrote.
SIDECAR_CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  batch: {{timeout: 60s}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [file]}}
"""


@dataclass
class ExportedSpan:
    resource: dict
    name: str
    kind: int
    status_code: int
    start_ns: int
    attributes: dict
    events: list[tuple[str, dict]]
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes


class Sidecar:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.out = tmp_path / "spans.jsonl"
        config = tmp_path / "sidecar.yaml"
        config.write_text(SIDECAR_CONFIG.format(port=self.port, out=self.out))
        self.process = CollectorProcess(config)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def written(self) -> list[ExportedSpan]:
        if not self.out.exists():
            return []
        return [
            ExportedSpan(
                resource=_attributes(rs.resource.attributes),
                name=span.name,
                kind=span.kind,
                status_code=span.status.code,
                start_ns=span.start_time_unix_nano,
                attributes=_attributes(span.attributes),
                events=[(e.name, _attributes(e.attributes)) for e in span.events],
                trace_id=span.trace_id,
                span_id=span.span_id,
                parent_span_id=span.parent_span_id,
            )
            for batch in read_requests(self.out)[Signal.TRACES]
            for rs, _, span in iter_spans(batch)
        ]

    def drain(self) -> list[ExportedSpan]:
        """Stop the sidecar with SIGTERM, as ECS does, and return what it wrote."""
        assert self.process.stop(signal.SIGTERM, timeout=15) == 0, self.process.log
        return self.written()


def _attributes(key_values) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in key_values}


class MetadataEndpoint:
    """`python -m emulator.ecs_metadata` as a process; `uri` is its
    ECS_CONTAINER_METADATA_URI_V4."""

    def __init__(self, fail: str | None = None) -> None:
        args = [sys.executable, "-m", "emulator.ecs_metadata"]
        args += ["--fail", fail] if fail else []
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        self.uri = self.proc.stdout.readline().strip()
        if not self.uri.startswith("http://"):
            self.stop()
            raise RuntimeError("the ECS metadata endpoint did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def service_environment(**env: str) -> dict[str, str]:
    """This test run's environment without what would change the service's behaviour, with the
    venv's commands first on PATH and `env` over it."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(_OWN_VARIABLES)},
        "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", ""),
        # coldtail from this checkout, whatever the venv's install of it says.
        "PYTHONPATH": str(ROOT),
        **env,
    }


class Service:
    """A command run under coldtail-instrument in tests/container/apps, listening on `port`."""

    def __init__(self, command: list[str], port: int, env: dict[str, str], log: Path) -> None:
        self.port = port
        self.log_path = log
        with open(log, "wb") as out:
            # A session of its own, so that `kill` reaches the workers too.
            self.proc = subprocess.Popen(
                ["sh", str(WRAPPER), *command],
                cwd=APPS,
                env=service_environment(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Until the port accepts connections; no request is sent, so none is spent."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}:\n{self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not listening within {timeout}s:\n{self.log}") from None
                time.sleep(0.05)

    def get(self, path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, as ECS stops a container; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def server_spans(spans: list[ExportedSpan]) -> list[ExportedSpan]:
    return [span for span in spans if span.kind == 2]  # SPAN_KIND_SERVER


def item_of(span: ExportedSpan) -> int | None:
    """The n of a GET /items/n request span."""
    target = span.attributes.get("http.target") or span.attributes.get("url.path") or ""
    prefix = "/items/"
    return int(target[len(prefix) :]) if target.startswith(prefix) else None


def stop_under_load(app: Service, requests: int = 2000) -> tuple[list[int], int]:
    """Stop `app` with SIGTERM while a client sends it GET /items/n requests one after another;
    returns the n of every request that got an answer (all 200), and the exit code."""
    responded: list[int] = []
    statuses: set[int] = set()

    def client() -> None:
        for n in range(requests):
            try:
                statuses.add(app.get(f"/items/{n}"))
            except (OSError, http.client.HTTPException):  # the server stopped listening
                return
            responded.append(n)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    time.sleep(0.5)  # under load for a while
    exit_code = app.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert statuses == {200}
    return responded, exit_code
