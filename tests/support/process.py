"""Run `coldtail run` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

READY_LINE = "everything is ready"


def free_port() -> int:
    """A port free on 127.0.0.1 right now (another process may still take it later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CollectorProcess:
    """A collector subprocess; stderr is collected line by line in `lines`."""

    def __init__(
        self, config: str | Path | None, *extra_args: str, env: dict | None = None
    ) -> None:
        """`config` None runs the embedded default pipeline."""
        config_args = ["--config", str(config)] if config is not None else []
        self.args = [sys.executable, "-m", "collector", "run", *config_args, *extra_args]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> CollectorProcess:
        self.proc = subprocess.Popen(
            self.args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not any(READY_LINE in line for line in self.lines):
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log}")
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"collector not ready in {timeout}s:\n{self.log}")
            time.sleep(0.05)
        return self

    def _read(self) -> None:
        assert self.proc and self.proc.stderr
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait for exit; returns the exit code."""
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        if self._reader:
            self._reader.join(5)
        return code

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> CollectorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
