"""Spans per CPU-second of a `coldtail run` process: OTLP/gRPC in, OTLP/gRPC out.

The load generator and the receiving sink run in this process (one event loop); the collector
is a subprocess, and its CPU time (user + system, from /proc) is what the figure divides by,
so the other processes sharing the machine do not distort it much.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import Traces, count_spans, set_attr
from tests.support.process import CollectorProcess, free_port

SPANS_PER_REQUEST = 100
CONCURRENCY = 8
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

PIPELINES = {
    "otlp -> batch -> otlp": ["batch"],
    "otlp -> memory_limiter -> coldstart -> tail_latency -> batch -> otlp": [
        "memory_limiter",
        "coldstart",
        "tail_latency",
        "batch",
    ],
}

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
{processor_configs}
exporters:
  otlp: {{endpoint: "127.0.0.1:{sink}", tls: {{insecure: true}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [{processors}], exporters: [otlp]}}
"""


PROCESSOR_CONFIGS = {
    "batch": "{timeout: 200ms}",
    "memory_limiter": "{check_interval: 1s, limit_mib: 2000}",
    "coldstart": "",
    "tail_latency": "",
}


def lambda_request(rng: random.Random, environments: int = 20) -> bytes:
    """One export request: spans of a Lambda function from a few execution environments."""
    batch = Traces()
    env = rng.randrange(environments)
    rs = batch.resource_spans.add()
    for key, value in {
        "service.name": "orders",
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "faas.name": "orders",
        "faas.instance": f"2026/11/29/[$LATEST]{env:032x}",
    }.items():
        set_attr(rs.resource.attributes, key, value)
    ss = rs.scope_spans.add()
    ss.scope.name = "coldtail.bench"
    now = time.time_ns()
    routes = ["/orders/{id}", "/orders", "/health", "/carts/{id}"]
    for _ in range(SPANS_PER_REQUEST):
        span = ss.spans.add()
        span.trace_id = rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        span.kind = Span.SPAN_KIND_SERVER
        route = rng.choice(routes)
        span.name = f"GET {route}"
        duration = int(rng.lognormvariate(3, 0.6) * 1e6)
        span.start_time_unix_nano = now - duration
        span.end_time_unix_nano = now
        set_attr(span.attributes, "http.route", route)
        set_attr(span.attributes, "http.request.method", "GET")
        set_attr(span.attributes, "http.response.status_code", 200)
    return batch.SerializeToString()


class Sink:
    """An OTLP/gRPC trace endpoint that only counts spans."""

    def __init__(self) -> None:
        self.spans = 0
        self.changed = asyncio.Event()

    async def _export(self, data: bytes, context) -> bytes:
        self.spans += count_spans(Traces.FromString(data))
        self.changed.set()
        return b""

    async def start(self) -> int:
        self.server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port

    async def wait_for(self, spans: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.spans < spans:
                self.changed.clear()
                await self.changed.wait()


async def _load(port: int, requests: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        export = channel.unary_unary(EXPORT)
        queue = list(requests)

        async def worker() -> None:
            while queue:
                await export(queue.pop(), timeout=30)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def measure(processors: list[str], spans: int, workdir: Path) -> tuple[float, float]:
    """(spans per CPU-second of the collector, spans per wall-second) for one run."""
    sink = Sink()
    sink_port = await sink.start()
    port = free_port()
    config = workdir / "bench.yaml"
    config.write_text(
        CONFIG.format(
            port=port,
            sink=sink_port,
            processors=", ".join(processors),
            processor_configs="\n".join(f"  {p}: {PROCESSOR_CONFIGS[p]}" for p in processors),
        )
    )
    rng = random.Random(7)
    requests = [lambda_request(rng) for _ in range(spans // SPANS_PER_REQUEST)]
    collector = CollectorProcess(config)
    try:
        await asyncio.to_thread(collector.start)
        proc = psutil.Process(collector.proc.pid)
        # Warm up (imports, first connections) outside the measurement.
        await _load(port, requests[:20])
        await sink.wait_for(20 * SPANS_PER_REQUEST, 60)
        sink.spans = 0
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.perf_counter()
        await _load(port, requests)
        await sink.wait_for(len(requests) * SPANS_PER_REQUEST, 120)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        wall = time.perf_counter() - wall0
    finally:
        if collector.proc and collector.proc.poll() is None:
            await asyncio.to_thread(collector.stop)
        await sink.server.stop(0)
    return sink.spans / cpu, sink.spans / wall


def available(processors: list[str]) -> bool:
    from collector.core.component import Kind
    from collector.registry import registry

    return all(registry().get(Kind.PROCESSOR, p) for p in processors)


def main(spans: int = 100_000, runs: int = 3) -> None:
    print(
        f"throughput: {spans} spans per run, {SPANS_PER_REQUEST} spans per request, "
        f"{CONCURRENCY} concurrent requests, median of {runs} runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, processors in PIPELINES.items():
            if not available(processors):
                print(f"  {name}: skipped (component not available)")
                continue
            results = [asyncio.run(measure(processors, spans, Path(tmp))) for _ in range(runs)]
            per_cpu = statistics.median(r[0] for r in results)
            per_wall = statistics.median(r[1] for r in results)
            print(f"  {name}: {per_cpu:,.0f} spans/CPU-s (collector), {per_wall:,.0f} spans/s wall")


if __name__ == "__main__":
    main()
