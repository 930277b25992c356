"""Rotel, the Rust OpenTelemetry collector, as the throughput benchmark's peer.

Its agent binary ships inside PyPI's `rotel` wheel; `fetch` downloads the wheel with pip (from
whatever index pip is configured with) into bench/.cache/ once and unpacks the binary.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "rotel"
BINARY = "rotel/rotel-agent"


def fetch() -> Path:
    """The rotel-agent binary; RuntimeError saying why when it cannot be had."""
    binary = CACHE / "rotel-agent"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    download = subprocess.run(
        [*pip, "--only-binary=:all:", "--dest", str(CACHE), "rotel"],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = sorted(CACHE.glob("rotel-*.whl"))
    if download.returncode or not wheels:
        raise RuntimeError(f"pip download rotel failed: {download.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        binary.write_bytes(wheel.read(BINARY))
    binary.chmod(0o755)
    return binary


class RotelProcess:
    """`rotel-agent start`: OTLP/gRPC and OTLP/HTTP in, OTLP/gRPC out to `sink_port`."""

    def __init__(self, binary: Path, grpc_port: int, http_port: int, sink_port: int) -> None:
        self.args = [
            str(binary),
            "start",
            "--otlp-grpc-endpoint",
            f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint",
            f"127.0.0.1:{http_port}",
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            f"http://127.0.0.1:{sink_port}",
            "--otlp-exporter-protocol",
            "grpc",
        ]
        self.ports = (grpc_port, http_port)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> RotelProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"rotel-agent exited with {self.proc.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise TimeoutError(f"rotel-agent not listening in {timeout}s") from None
                    time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
