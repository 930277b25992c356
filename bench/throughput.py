"""Spans per CPU-second of a collector process, coldtail beside Rotel (the Rust collector).

Load: OTLP export requests of 100 spans (a Lambda function's resource, 8 attributes per span,
one SERVER entry span in ten, 5% of spans with an event), pre-encoded, 4 in flight, over
OTLP/gRPC or OTLP/HTTP protobuf. Both collectors export OTLP/gRPC to the same parse-only sink.
The load generator runs in this process, the sink (bench/sink.py) and the collector each in
their own; the collector's CPU time (user + system, from /proc) is what the figure divides by.

Runs alternate (Rotel, then each coldtail pipeline, again, ...) so that both see the same
machine; the table shows medians. Per run: spans/s (wall), the collector's CPU seconds, spans
per CPU-second, its peak RSS (VmHWM), and the p99 of the request round trip at half of the
saturating rate: both collectors answer once the data is queued, so that is the time a collector
holds its client. The same requests at the same pace then go straight to the sink, which only
parses them; the difference of the two p99s is what the collector adds (the client's own time
on this shared machine is in both).

    python -m bench.throughput [--spans N] [--rounds N] [--protocols grpc,http]

Results also go to bench/results/throughput-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import grpc
import psutil
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from bench import rotel
from bench.sink import SinkProcess
from collector.core.pdata import Traces, set_attr
from tests.support.process import CollectorProcess, free_port

RESULTS = Path(__file__).resolve().parent / "results"
SPANS_PER_REQUEST = 100
IN_FLIGHT = 4
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ROTEL = "rotel (pass-through)"

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
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      http: {{endpoint: "127.0.0.1:{http}"}}
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

ROUTES = ["/orders/{id}", "/orders", "/health", "/carts/{id}"]


def lambda_request(rng: random.Random, environments: int = 20) -> bytes:
    """One export request: a trace's worth of spans from one of a few execution environments."""
    batch = Traces()
    env = rng.randrange(environments)
    rs = batch.resource_spans.add()
    for key, value in {
        "service.name": "orders",
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "cloud.region": "eu-west-1",
        "faas.name": "orders",
        "faas.version": "$LATEST",
        "faas.instance": f"2026/11/29/[$LATEST]{env:032x}",
    }.items():
        set_attr(rs.resource.attributes, key, value)
    ss = rs.scope_spans.add()
    ss.scope.name = "coldtail.bench"
    now = time.time_ns()
    for i in range(SPANS_PER_REQUEST):
        span = ss.spans.add()
        span.trace_id = rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        route = rng.choice(ROUTES)
        duration = int(rng.lognormvariate(3, 0.6) * 1e6)
        span.start_time_unix_nano = now - duration
        span.end_time_unix_nano = now
        if i % 10 == 0:
            span.kind = Span.SPAN_KIND_SERVER
            span.name = f"GET {route}"
        else:
            span.kind = Span.SPAN_KIND_CLIENT
            span.name = "SELECT orders"
            span.parent_span_id = rng.randbytes(8)
        for key, value in {
            "http.route": route,
            "http.request.method": "GET",
            "http.response.status_code": 200,
            "url.scheme": "https",
            "server.address": "api.example.com",
            "network.protocol.version": "1.1",
            "user_agent.original": "bench/1.0",
            "db.system": "postgresql",
        }.items():
            set_attr(span.attributes, key, value)
        if rng.random() < 0.05:
            event = span.events.add()
            event.name = "exception"
            event.time_unix_nano = now
            set_attr(event.attributes, "exception.type", "TimeoutError")
    return batch.SerializeToString()


class Client:
    """Sends pre-encoded requests over OTLP/gRPC or OTLP/HTTP protobuf; returns the round trip
    of each, in seconds."""

    def __init__(self, protocol: str, grpc_port: int, http_port: int) -> None:
        self.protocol = protocol
        self.grpc_target = f"127.0.0.1:{grpc_port}"
        self.url = f"http://127.0.0.1:{http_port}/v1/traces"

    async def __aenter__(self) -> Client:
        if self.protocol == "grpc":
            self._channel = grpc.aio.insecure_channel(self.grpc_target)
            self._export = self._channel.unary_unary(EXPORT)
        else:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        if self.protocol == "grpc":
            await self._channel.close()
        else:
            await self._session.close()

    async def send(self, data: bytes) -> float:
        started = time.perf_counter()
        if self.protocol == "grpc":
            await self._export(data, timeout=30)
        else:
            headers = {"Content-Type": "application/x-protobuf"}
            async with self._session.post(self.url, data=data, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
        return time.perf_counter() - started

    async def saturate(self, requests: list[bytes]) -> None:
        queue = list(requests)

        async def worker() -> None:
            while queue:
                await self.send(queue.pop())

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))

    async def paced(self, requests: list[bytes], rate: float) -> list[float]:
        """Start one request every 1/rate seconds, whatever the answers take."""
        start = time.perf_counter()
        tasks = []
        for i, data in enumerate(requests):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(self.send(data)))
        return list(await asyncio.gather(*tasks))


@dataclass
class Run:
    target: str
    protocol: str
    spans: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    p99_half_load_ms: float
    direct_p99_ms: float  # the same paced requests straight to the sink

    @property
    def added_p99_ms(self) -> float:
        return self.p99_half_load_ms - self.direct_p99_ms

    @property
    def per_cpu_second(self) -> float:
        return self.spans / self.cpu_s


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def target_process(
    target: str, grpc_port: int, http_port: int, sink_port: int, workdir: Path
) -> rotel.RotelProcess | CollectorProcess:
    """The collector `target` names (ROTEL or a PIPELINES key), not started yet."""
    if target == ROTEL:
        return rotel.RotelProcess(rotel.fetch(), grpc_port, http_port, sink_port)
    processors = PIPELINES[target]
    config = workdir / "bench.yaml"
    config.write_text(
        CONFIG.format(
            grpc=grpc_port,
            http=http_port,
            sink=sink_port,
            processors=", ".join(processors),
            processor_configs="\n".join(f"  {p}: {PROCESSOR_CONFIGS[p]}" for p in processors),
        )
    )
    return CollectorProcess(config)


async def measure(target: str, protocol: str, requests: list[bytes], workdir: Path) -> Run:
    sink = SinkProcess()
    grpc_port, http_port = free_port(), free_port()
    process = target_process(target, grpc_port, http_port, sink.port, workdir)
    try:
        await asyncio.to_thread(process.start)
        assert process.proc is not None
        proc = psutil.Process(process.proc.pid)
        async with Client(protocol, grpc_port, http_port) as client:
            # Warm up (imports, first connections) outside the measurement.
            await client.saturate(requests[:20])
            await sink.wait_for(20 * SPANS_PER_REQUEST, 60)
            before = await sink.spans()
            cpu0, wall0 = sum(proc.cpu_times()[:2]), time.perf_counter()
            await client.saturate(requests)
            await sink.wait_for(before + len(requests) * SPANS_PER_REQUEST, 180)
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            wall = time.perf_counter() - wall0
            spans = await sink.spans() - before
            # Half of the saturating rate, for a few seconds at most.
            rate = spans / wall / SPANS_PER_REQUEST / 2
            paced = requests[: max(50, min(len(requests), int(rate * 3)))]
            p99 = _p99(await client.paced(paced, rate))
        async with Client(protocol, sink.port, sink.http_port) as direct:
            await direct.saturate(requests[:20])
            direct_p99 = _p99(await direct.paced(paced, rate))
        rss = _peak_rss_mib(process.proc.pid)
    finally:
        await asyncio.to_thread(process.stop)
        await sink.stop()
    return Run(target, protocol, spans, wall, cpu, rss, p99 * 1000, direct_p99 * 1000)


def _p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _median(runs: list[Run], field: str) -> float:
    return statistics.median(getattr(r, field) for r in runs)


def report(runs: list[Run]) -> list[dict]:
    rows = []
    for protocol in dict.fromkeys(r.protocol for r in runs):
        peer = [r for r in runs if r.protocol == protocol and r.target == ROTEL]
        peer_rate = statistics.median(r.per_cpu_second for r in peer) if peer else None
        for target in dict.fromkeys(r.target for r in runs):
            mine = [r for r in runs if r.protocol == protocol and r.target == target]
            rate = statistics.median(r.per_cpu_second for r in mine)
            rows.append(
                {
                    "protocol": protocol,
                    "target": target,
                    "runs": len(mine),
                    "spans_per_s": _median(mine, "spans") / _median(mine, "wall_s"),
                    "cpu_s": _median(mine, "cpu_s"),
                    "spans_per_cpu_s": rate,
                    "ratio_to_rotel": rate / peer_rate if peer_rate else None,
                    "peak_rss_mib": max(r.peak_rss_mib for r in mine),
                    "p99_half_load_ms": _median(mine, "p99_half_load_ms"),
                    "added_p99_ms": _median(mine, "added_p99_ms"),
                }
            )
    print(
        f"\n{'protocol':8} {'target':70} {'spans/s':>9} {'CPU-s':>6} {'spans/CPU-s':>11} "
        f"{'ratio':>5} {'RSS MiB':>7} {'p99 ms':>6} {'added':>6}"
    )
    for row in rows:
        ratio = f"{row['ratio_to_rotel']:.2f}" if row["ratio_to_rotel"] else "-"
        print(
            f"{row['protocol']:8} {row['target']:70} {row['spans_per_s']:9,.0f} "
            f"{row['cpu_s']:6.2f} {row['spans_per_cpu_s']:11,.0f} {ratio:>5} "
            f"{row['peak_rss_mib']:7.0f} {row['p99_half_load_ms']:6.1f} "
            f"{row['added_p99_ms']:6.1f}"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--spans", type=int, default=200_000, help="spans per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations (median over them)")
    parser.add_argument("--protocols", default="grpc,http")
    args = parser.parse_args(argv)

    targets = list(PIPELINES)
    try:
        rotel.fetch()
        targets.insert(0, ROTEL)
    except (RuntimeError, OSError) as e:
        print(f"throughput: Rotel left out: {e}")
    rng = random.Random(7)
    requests = [lambda_request(rng) for _ in range(args.spans // SPANS_PER_REQUEST)]
    print(
        f"throughput: {args.spans:,} spans per run, {SPANS_PER_REQUEST} spans per request, "
        f"{IN_FLIGHT} in flight, {args.rounds} alternations of {', '.join(targets)}"
    )
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in args.protocols.split(","):
            for _ in range(args.rounds):
                for target in targets:
                    run = asyncio.run(measure(target, protocol, requests, Path(tmp)))
                    print(
                        f"  {protocol} {target}: {run.per_cpu_second:,.0f} spans/CPU-s, "
                        f"{run.spans / run.wall_s:,.0f} spans/s",
                        flush=True,
                    )
                    runs.append(run)
    rows = report(runs)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"throughput-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"rows": rows, "runs": [asdict(r) for r in runs]}, indent=2))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
