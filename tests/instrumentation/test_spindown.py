"""The last export when the process ends, in fresh processes that serve one invocation through
the module bootstrap with the collector down, so that its spans are kept, then get SIGTERM (or
exit) with the collector up. Their main thread waits where Python runs signal handlers, as the
python3.12+ runtimes' does; tests/e2e/test_lambda_instrumentation.py has the runtime whose main
thread waits in C code."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.lambda_functions import FUNCTION_ARN, FUNCTIONS, ROOT, Receiver, process_env
from tests.support.process import free_port

SERVE = f"""
import signal, sys, time
{{before}}
import instrumentation.handler
from awslambdaric.lambda_context import LambdaContext
deadline_ms = int(time.time() * 1000) + 30_000
context = LambdaContext("request-0", None, None, deadline_ms, {FUNCTION_ARN!r})
instrumentation.handler.handler({{{{}}}}, context)
print(signal.getsignal(signal.SIGTERM), flush=True)
sys.stdin.read()  # until the test closes stdin, or a signal ends the process
"""
# The spans of a cold invocation of the test function: invocation, init and three imports.
COLD_SPANS = 5


class Served:
    """A process that served one invocation with the collector down on `port`."""

    def __init__(self, lambda_env: dict, before: str = "") -> None:
        self.port = free_port()
        env = process_env(
            lambda_env,
            ORIG_HANDLER=f"{FUNCTIONS}.app.handler",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{self.port}",
            AWS_LAMBDA_RUNTIME_API="127.0.0.1:9001",  # in Lambda: never called here
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE.format(before=before)],
            env=env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.sigterm_handler = self.proc.stdout.readline().strip()

    def end(self, how) -> tuple[int, float, str]:
        """`how(proc)` ends it; returns the exit code, the seconds it took and stderr."""
        started = time.monotonic()
        how(self.proc)
        exit_code = self.proc.wait(10)
        return exit_code, time.monotonic() - started, self.proc.stderr.read()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def served(lambda_env):
    started = []

    def serve(before: str = "") -> Served:
        started.append(Served(lambda_env, before))
        assert started[-1].sigterm_handler, started[-1].proc.stderr.read()
        return started[-1]

    yield serve
    for process in started:
        process.kill()


def sigterm(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)


def close_stdin(proc: subprocess.Popen) -> None:
    proc.stdin.close()


def test_sigterm_exports_the_kept_spans_then_the_process_dies_of_it(served):
    process = served()
    receiver = Receiver(process.port)
    try:
        exit_code, seconds, stderr = process.end(sigterm)
        spans = receiver.spans()
    finally:
        receiver.close()

    assert "kept for the next export" in stderr
    # Killed by the signal (the handler) or exited with 128 + SIGTERM (the wakeup thread),
    # whichever of the two finished the flush first.
    assert exit_code in (-signal.SIGTERM, 128 + signal.SIGTERM), stderr
    assert seconds < 1.0
    assert len(spans) == COLD_SPANS
    assert [s.attributes["faas.invocation_id"] for s in spans if s.name == "my-function"] == [
        "request-0"
    ]


def test_a_previous_python_handler_runs_after_the_flush(served):
    process = served("signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))")
    receiver = Receiver(process.port)
    try:
        exit_code, _, stderr = process.end(sigterm)
        spans = receiver.spans()
    finally:
        receiver.close()

    assert exit_code == 3, stderr
    assert len(spans) == COLD_SPANS


def test_an_ignored_sigterm_stays_ignored_and_a_normal_exit_exports(served):
    process = served("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    assert process.sigterm_handler == str(signal.SIG_IGN)
    receiver = Receiver(process.port)
    try:
        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert process.proc.poll() is None
        assert receiver.spans() == []
        exit_code, _, stderr = process.end(close_stdin)
        spans = receiver.spans()
    finally:
        receiver.close()

    assert exit_code == 0, stderr
    assert len(spans) == COLD_SPANS


def test_a_collector_that_never_answers_costs_the_budget_and_one_line(served):
    process = served()
    # Connections complete in the backlog; no answer ever comes.
    with socket.create_server(("127.0.0.1", process.port)):
        exit_code, seconds, stderr = process.end(sigterm)

    assert exit_code in (-signal.SIGTERM, 128 + signal.SIGTERM), stderr
    assert 0.15 <= seconds < 0.6  # the 150 ms budget, and a loaded machine's delays
    failures = [line for line in stderr.splitlines() if "spans failed" in line]
    assert len(failures) == 2, stderr  # the invocation's export, then the last one
    assert f"export of {COLD_SPANS} spans failed (dropped)" in failures[1]
    assert "timed out" in failures[1]


def test_with_the_wakeup_fd_taken_sigterm_keeps_its_default_action(served):
    process = served(
        "import os; read_fd, write_fd = os.pipe(); os.set_blocking(write_fd, False); "
        "signal.set_wakeup_fd(write_fd)"
    )
    # Without the wakeup thread a handler could keep the process from dying: none is set.
    assert process.sigterm_handler == str(signal.SIG_DFL)
    exit_code, seconds, _ = process.end(sigterm)

    assert exit_code == -signal.SIGTERM
    assert seconds < 0.5
