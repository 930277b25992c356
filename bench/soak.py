"""Memory under sustained load: the RSS of a collector process sampled while the throughput
benchmark's client keeps it saturated for several minutes (`make soak`; not part of `make bench`).

A collector that keeps nothing beyond its bounded queues and state levels off after its first
minute; the figure to read is the growth from the end of the first minute to the end.

    python -m bench.soak [--minutes 5] [--target PIPELINE] [--protocol grpc|http]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import psutil

from bench.sink import SinkProcess
from bench.throughput import (
    PIPELINES,
    SPANS_PER_REQUEST,
    Client,
    lambda_request,
    target_process,
)
from tests.support.process import free_port

SAMPLE_EVERY_S = 10.0


async def soak(target: str, protocol: str, minutes: float, workdir: Path) -> list[tuple]:
    """(seconds since start, RSS MiB, spans delivered) every SAMPLE_EVERY_S seconds."""
    rng = random.Random(11)
    requests = [lambda_request(rng) for _ in range(500)]
    sink = SinkProcess()
    grpc_port, http_port = free_port(), free_port()
    process = target_process(target, grpc_port, http_port, sink.port, workdir)
    samples = []
    try:
        await asyncio.to_thread(process.start)
        assert process.proc is not None
        proc = psutil.Process(process.proc.pid)
        async with Client(protocol, grpc_port, http_port) as client:
            start = time.monotonic()
            end = start + minutes * 60
            next_sample = start
            while time.monotonic() < end:
                await client.saturate(requests[:40])
                if time.monotonic() >= next_sample:
                    rss = proc.memory_info().rss / 2**20
                    samples.append((time.monotonic() - start, rss, await sink.spans()))
                    print(f"  {samples[-1][0]:5.0f} s  RSS {rss:6.1f} MiB", flush=True)
                    next_sample += SAMPLE_EVERY_S
    finally:
        await asyncio.to_thread(process.stop)
        await sink.stop()
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--target", default=list(PIPELINES)[1], choices=list(PIPELINES))
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    args = parser.parse_args(argv)
    print(f"soak: {args.target} over {args.protocol}, saturated for {args.minutes:g} min")
    with tempfile.TemporaryDirectory() as tmp:
        samples = asyncio.run(soak(args.target, args.protocol, args.minutes, Path(tmp)))
    after_first_minute = [s for s in samples if s[0] >= 60] or samples
    settled, last = after_first_minute[0], samples[-1]
    rate = (last[2] - samples[0][2]) / max(last[0] - samples[0][0], 1e-9)
    print(
        f"soak: {last[2] / SPANS_PER_REQUEST:,.0f} requests, {rate:,.0f} spans/s; RSS "
        f"{settled[1]:.1f} MiB at {settled[0]:.0f} s, {last[1]:.1f} MiB at {last[0]:.0f} s "
        f"({last[1] - settled[1]:+.1f} MiB), peak {max(s[1] for s in samples):.1f} MiB"
    )


if __name__ == "__main__":
    main()
