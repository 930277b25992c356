"""Spans per second through one gateway's `nats` receiver, and the lag from an agent's publish
to the gateway's acknowledgement, against a real single-node nats-server on loopback.

1. Drain: `--spans` spans are published first (the `nats` exporter, batches of 512 spans in
   traces of 8), then one receiver consumes the backlog into a counting pipeline.
2. Live: the exporter publishes at `--rate` spans per second for `--seconds` while the receiver
   consumes; lag is measured per batch as acceptance time minus the time its spans were made
   (the exporter's send, the stream, the fetch and the pipeline; the ack goes out right after).

    python -m bench.nats_gateway [--spans 200000] [--rate 20000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from collector.core.pdata import Traces, count_items, iter_spans
from collector.core.signals import Signal
from collector.exporters import nats as nats_exporter
from collector.receivers import nats as nats_receiver
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.nats_cluster import NatsServer

PARTITIONS = 16


class Counting:
    """The pipeline: counts spans and records each batch's lag."""

    mutates_data = False

    def __init__(self) -> None:
        self.spans = 0
        self.lags: list[float] = []
        self.first: float | None = None  # perf_counter at the first batch

    async def consume(self, batch: Traces) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        self.spans += count_items(batch)
        now = time.time_ns()
        oldest = min(span.start_time_unix_nano for _, _, span in iter_spans(batch))
        self.lags.append((now - oldest) / 1e9)


def batch_of(spans: int) -> Traces:
    batch = Traces()
    for _ in range(spans // 8):
        batch.MergeFrom(make_traces(8, trace_id=os.urandom(16)))
    return batch


async def exporter(url: str):
    cfg = nats_exporter.Config.model_validate(
        {"url": url, "partitions": PARTITIONS, "sending_queue": {"queue_size": 100_000}}
    )
    exp = nats_exporter.factory.create(make_settings("exporter", "nats"), cfg, Signal.TRACES)
    await exp.start(StaticHost())
    await asyncio.wait_for(exp.ready.wait(), 10)
    return exp


async def receiver(url: str, pipeline: Counting):
    cfg = nats_receiver.factory.config.model_validate(
        {"url": url, "partitions": PARTITIONS, "member": "gw", "lease_ttl": "3s"}
    )
    rcv = nats_receiver.factory.create(
        make_settings("receiver", "nats"), cfg, {Signal.TRACES: pipeline}
    )
    await rcv.start(StaticHost())
    return rcv


async def drain(url: str, spans: int) -> None:
    exp = await exporter(url)
    batches = [batch_of(512) for _ in range(spans // 512)]
    started = time.perf_counter()
    for batch in batches:
        await exp.consume(batch)
    await exp.flush()
    published = time.perf_counter() - started
    await exp.shutdown()
    total = 512 * len(batches)
    pipeline = Counting()
    started = time.perf_counter()
    rcv = await receiver(url, pipeline)
    while pipeline.spans < total:
        await asyncio.sleep(0.01)
    ended = time.perf_counter()
    took = ended - started
    assert pipeline.first is not None
    consuming = ended - pipeline.first
    await rcv.shutdown()
    print(f"publish: {total} spans in {published:.2f}s = {total / published:,.0f} spans/s")
    print(
        f"drain:   {total} spans in {consuming:.2f}s from the first batch = "
        f"{total / consuming:,.0f} spans/s through one gateway ({took:.2f}s with its start "
        "and first lease round)"
    )


async def live(url: str, rate: int, seconds: float) -> None:
    pipeline = Counting()
    rcv = await receiver(url, pipeline)
    await asyncio.sleep(1.5)  # its leases
    exp = await exporter(url)
    per_tick = max(8, rate // 20)
    sent = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        await exp.consume(batch_of(per_tick))
        sent += per_tick // 8 * 8
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    await exp.flush()
    while pipeline.spans < sent:
        await asyncio.sleep(0.01)
    await exp.shutdown()
    await rcv.shutdown()
    lags = sorted(pipeline.lags)
    q = statistics.quantiles(lags, n=100)
    print(
        f"live:    {sent} spans at {rate:,} spans/s for {seconds:g}s; lag publish -> accept "
        f"(ack right after): p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, "
        f"max {lags[-1] * 1000:.1f} ms"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nats_gateway", description=__doc__)
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    with NatsServer() as server:
        asyncio.run(drain(server.url, args.spans))
    with NatsServer() as server:
        asyncio.run(live(server.url, args.rate, args.seconds))


if __name__ == "__main__":
    main()
