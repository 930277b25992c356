"""The hostmetrics receiver reading this machine."""

import asyncio

from collector.core.component import Kind
from collector.core.pdata import Metrics
from collector.core.signals import Signal
from collector.receivers import hostmetrics
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

EVERY = {
    name: {} for name in ("cpu", "memory", "load", "disk", "filesystem", "network", "processes")
}


def receiver(sink=None, **config) -> hostmetrics.HostMetricsReceiver:
    cfg = hostmetrics.Config.model_validate({"scrapers": EVERY, **config})
    settings = make_settings(Kind.RECEIVER, "hostmetrics")
    return hostmetrics.HostMetricsReceiver(settings, cfg, {Signal.METRICS: sink or SinkConsumer()})


def by_name(batch: Metrics) -> dict:
    return {m.name: m for m in batch.resource_metrics[0].scope_metrics[0].metrics}


def points(metric) -> dict:
    data = metric.sum if metric.HasField("sum") else metric.gauge
    return {
        tuple((kv.key, kv.value.string_value) for kv in p.attributes): p.as_int or p.as_double
        for p in data.data_points
    }


def test_one_reading_has_every_scrapers_metrics_with_sane_values():
    metrics = by_name(receiver().scrape())
    assert {
        "system.cpu.time",
        "system.memory.usage",
        "system.memory.utilization",
        "system.cpu.load_average.1m",
        "system.disk.io",
        "system.filesystem.usage",
        "system.network.io",
        "system.processes.count",
    } <= set(metrics)
    cpu = points(metrics["system.cpu.time"])
    assert (("cpu", "cpu0"), ("state", "user")) in cpu
    assert metrics["system.cpu.time"].sum.is_monotonic
    memory = points(metrics["system.memory.usage"])
    assert memory[(("state", "used"),)] > 0
    assert not metrics["system.memory.usage"].sum.is_monotonic
    assert sum(points(metrics["system.processes.count"]).values()) > 1
    assert any(key[0] == ("device", "lo") for key in points(metrics["system.network.io"]))


async def test_readings_repeat_every_interval_and_cumulative_sums_grow():
    sink = SinkConsumer()
    r = receiver(sink, collection_interval="100ms", initial_delay="0s")
    await r.start(StaticHost())
    try:
        async with asyncio.timeout(10):
            while len(sink.batches) < 2:
                await asyncio.sleep(0.05)
    finally:
        await r.shutdown()
    first, second = (points(by_name(b)["system.cpu.time"]) for b in sink.batches[:2])
    assert all(second[key] >= first[key] for key in first)
    starts = {
        p.start_time_unix_nano
        for b in sink.batches[:2]
        for p in by_name(b)["system.cpu.time"].sum.data_points
    }
    assert len(starts) == 1  # cumulative from the receiver's start
