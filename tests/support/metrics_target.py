"""A scrape target for tests: a process exposing metrics with prometheus-client's own HTTP
server (text format or OpenMetrics, as the scraper's Accept header asks), changed by commands.

    async with MetricsTarget() as target:
        await target.send({"op": "inc", "name": "requests", "labels": {"route": "/a"}, "value": 3})
        scrape target.address ...

Metrics: `requests` (counter, label route), `temp_celsius` (gauge), `lat_seconds` (histogram,
buckets 0.1 and 1), `size_bytes` (summary), `build` (info). Commands, one JSON object per line
on stdin, each answered with a line: `inc`, `set`, `observe` (name, labels, value), `remove`
(name, labels: that series disappears), `restart` (every metric starts over, as after a
process restart: counters reset; `requests` maps routes to the new counts).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    Summary,
    start_http_server,
)


def _metrics(registry: CollectorRegistry) -> dict:
    return {
        "requests": Counter("requests", "Requests served.", ["route"], registry=registry),
        "temp_celsius": Gauge("temp_celsius", "Temperature.", registry=registry, unit="celsius"),
        "lat_seconds": Histogram(
            "lat_seconds", "Latency.", ["route"], buckets=(0.1, 1.0), registry=registry
        ),
        "size_bytes": Summary("size_bytes", "Response size.", registry=registry),
        "build": Info("build", "Build information.", registry=registry),
    }


class _Switch:
    """A registry whose metrics can be replaced wholesale (a restart)."""

    def __init__(self) -> None:
        self.inner = CollectorRegistry()
        self.metrics = _metrics(self.inner)
        self.metrics["build"].info({"version": "1.2.3"})

    def collect(self):
        return self.inner.collect()

    def restart(self, requests: dict[str, float]) -> None:
        inner = CollectorRegistry()
        metrics = _metrics(inner)
        metrics["build"].info({"version": "1.2.4"})
        for route, value in requests.items():
            metrics["requests"].labels(route=route).inc(value)
        self.inner, self.metrics = inner, metrics


def main() -> None:
    switch = _Switch()
    registry = CollectorRegistry()
    registry.register(switch)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        metric: Any = switch.metrics.get(command.get("name", ""))
        labels = command.get("labels") or {}
        child = metric.labels(**labels) if metric is not None and labels else metric
        if op == "inc":
            child.inc(command["value"])
        elif op == "set":
            child.set(command["value"])
        elif op == "observe":
            child.observe(command["value"])
        elif op == "remove":
            metric.remove(*labels.values())
        elif op == "restart":
            switch.restart(command.get("requests", {}))
        print("ok", flush=True)


class MetricsTarget:
    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> MetricsTarget:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.metrics_target"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = int(await asyncio.to_thread(self._proc.stdout.readline))
        return self

    async def send(self, *commands: dict) -> None:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        for command in commands:
            self._proc.stdin.write(json.dumps(command) + "\n")
            self._proc.stdin.flush()
            reply = await asyncio.to_thread(self._proc.stdout.readline)
            if reply.strip() != "ok":
                raise RuntimeError(f"metrics target refused {command}: {reply!r}")

    async def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
            self._proc = None

    async def __aenter__(self) -> MetricsTarget:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()


if __name__ == "__main__":
    main()
