"""How throughput grows from one collector process to two on this machine: the throughput
benchmark's load, split evenly over 1 or 2 coldtail processes on their own ports, as two worker
processes sharing a port would see it (one process is single-threaded Python; a second is the
way to use a second core).

    python -m bench.scaling [--spans N] [--rounds N] [--target PIPELINE]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from bench.sink import SinkProcess
from bench.throughput import (
    IN_FLIGHT,
    PIPELINES,
    SPANS_PER_REQUEST,
    Client,
    lambda_request,
    target_process,
)
from tests.support.process import free_port


async def measure(target: str, processes: int, requests: list[bytes], workdir: Path) -> tuple:
    """(spans per wall second, spans per CPU-second of all collector processes)."""
    sink = SinkProcess()
    started, clients = [], []
    try:
        for i in range(processes):
            grpc_port, http_port = free_port(), free_port()
            folder = workdir / str(i)
            folder.mkdir(exist_ok=True)
            process = target_process(target, grpc_port, http_port, sink.port, folder)
            await asyncio.to_thread(process.start)
            started.append(process)
            clients.append(await Client("grpc", grpc_port, http_port).__aenter__())
        procs = [psutil.Process(p.proc.pid) for p in started if p.proc is not None]
        share = len(requests) // processes
        parts = [requests[i * share : (i + 1) * share] for i in range(processes)]
        await asyncio.gather(*(c.saturate(p[:20]) for c, p in zip(clients, parts, strict=True)))
        await sink.wait_for(20 * processes * SPANS_PER_REQUEST, 60)
        before = await sink.spans()
        cpu0 = sum(sum(p.cpu_times()[:2]) for p in procs)
        wall0 = time.perf_counter()
        await asyncio.gather(*(c.saturate(p) for c, p in zip(clients, parts, strict=True)))
        sent = share * processes * SPANS_PER_REQUEST
        await sink.wait_for(before + sent, 180)
        wall = time.perf_counter() - wall0
        cpu = sum(sum(p.cpu_times()[:2]) for p in procs) - cpu0
        spans = await sink.spans() - before
    finally:
        for client in clients:
            await client.__aexit__(None, None, None)
        for process in started:
            await asyncio.to_thread(process.stop)
        await sink.stop()
    return spans / wall, spans / cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling")
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", default=next(iter(PIPELINES)), choices=list(PIPELINES))
    args = parser.parse_args(argv)
    rng = random.Random(7)
    requests = [lambda_request(rng) for _ in range(args.spans // SPANS_PER_REQUEST)]
    print(
        f"scaling: {args.target} over gRPC, {args.spans:,} spans per run, {IN_FLIGHT} in "
        f"flight per process, {psutil.cpu_count()} CPUs, median of {args.rounds}"
    )
    results: dict[int, list[tuple]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for processes in results:
                run = asyncio.run(measure(args.target, processes, requests, Path(tmp)))
                results[processes].append(run)
    base = statistics.median(r[0] for r in results[1])
    for processes, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        per_cpu = statistics.median(r[1] for r in runs)
        print(
            f"  {processes} process{'es' if processes > 1 else ''}: {wall:,.0f} spans/s "
            f"({wall / base:.2f}x), {per_cpu:,.0f} spans/CPU-s"
        )


if __name__ == "__main__":
    main()
