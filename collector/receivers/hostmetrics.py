"""The `hostmetrics` receiver: the host's (or container's) CPU, memory, load, disk, filesystem,
network and process counts every `collection_interval`, read with psutil, under the OTel
Collector's system.* metric names and attributes (semantic conventions for system metrics).

Each configured scraper adds its metrics to one batch per interval, with a start time at the
receiver's start for cumulative sums. A scraper that fails (a file the container cannot read)
is logged once per failure kind and the others still report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping

import psutil
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from pydantic import Field, model_validator

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, count_items, set_attr
from collector.core.signals import Signal

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


class ScraperConfig(ComponentConfig):
    """A scraper's options: none yet beyond being listed."""


class Scrapers(ComponentConfig):
    cpu: ScraperConfig | None = None
    """system.cpu.time per logical CPU and state (seconds, cumulative)."""
    memory: ScraperConfig | None = None
    """system.memory.usage per state (bytes) and system.memory.utilization."""
    load: ScraperConfig | None = None
    """system.cpu.load_average.1m, .5m and .15m."""
    disk: ScraperConfig | None = None
    """system.disk.io (bytes) and system.disk.operations per device and direction."""
    filesystem: ScraperConfig | None = None
    """system.filesystem.usage per device, mountpoint, type and state (bytes)."""
    network: ScraperConfig | None = None
    """system.network.io (bytes), .packets, .errors and .dropped per device and direction."""
    processes: ScraperConfig | None = None
    """system.processes.count per status and system.processes.created."""

    @model_validator(mode="before")
    @classmethod
    def _listed_is_on(cls, data: object) -> object:
        # `cpu:` with nothing after it, as configs often write, turns the scraper on.
        if isinstance(data, dict):
            return {k: {} if v is None else v for k, v in data.items()}
        return data


class Config(ComponentConfig):
    collection_interval: Duration = Field(60.0, gt=0)
    """How often the scrapers read the host (default 1m)."""
    initial_delay: Duration = Field(1.0, ge=0)
    """Wait before the first reading (default 1s)."""
    scrapers: Scrapers = Field(default_factory=Scrapers)
    """The scrapers to run, each as `name: {}`. At least one."""

    @model_validator(mode="after")
    def _some_scraper(self) -> Config:
        if not any(getattr(self.scrapers, name) is not None for name in _SCRAPERS):
            raise ValueError("scrapers: configure at least one, like cpu: {}")
        return self


def _metric(batch_metrics, name: str, unit: str, description: str) -> Metric:
    metric = batch_metrics.add()
    metric.name, metric.unit, metric.description = name, unit, description
    return metric


class _Reading:
    """One scrape's metrics, stamped `now`, sums starting at `start` (ns)."""

    def __init__(self, metrics, start: int, now: int) -> None:
        self.metrics, self.start, self.now = metrics, start, now

    def sum(self, name: str, unit: str, description: str, points, monotonic: bool = True) -> None:
        metric = _metric(self.metrics, name, unit, description)
        metric.sum.aggregation_temporality = _CUMULATIVE
        metric.sum.is_monotonic = monotonic
        for attributes, value in points:
            point = metric.sum.data_points.add()
            self._stamp(point, attributes)
            if isinstance(value, int):
                point.as_int = value
            else:
                point.as_double = float(value)

    def gauge(self, name: str, unit: str, description: str, points) -> None:
        metric = _metric(self.metrics, name, unit, description)
        for attributes, value in points:
            point = metric.gauge.data_points.add()
            self._stamp(point, attributes)
            point.as_double = float(value)

    def _stamp(self, point, attributes: dict) -> None:
        point.start_time_unix_nano, point.time_unix_nano = self.start, self.now
        for key, value in attributes.items():
            set_attr(point.attributes, key, value)


def _cpu(r: _Reading) -> None:
    points = []
    for cpu, times in enumerate(psutil.cpu_times(percpu=True)):
        for state, value in times._asdict().items():
            points.append(({"cpu": f"cpu{cpu}", "state": state}, float(value)))
    r.sum("system.cpu.time", "s", "Total seconds each logical CPU spent on each mode.", points)


def _memory(r: _Reading) -> None:
    memory = psutil.virtual_memory()
    states = {"used": memory.used, "free": memory.free}
    for state in ("buffers", "cached", "slab"):
        if hasattr(memory, state):
            states["buffered" if state == "buffers" else state] = getattr(memory, state)
    r.sum(
        "system.memory.usage",
        "By",
        "Bytes of memory in use.",
        [({"state": s}, int(v)) for s, v in states.items()],
        monotonic=False,
    )
    r.gauge(
        "system.memory.utilization",
        "1",
        "Percentage of memory bytes in use.",
        [({"state": s}, v / memory.total) for s, v in states.items()],
    )


def _load(r: _Reading) -> None:
    one, five, fifteen = os.getloadavg()
    for name, value in (("1m", one), ("5m", five), ("15m", fifteen)):
        r.gauge(
            f"system.cpu.load_average.{name}",
            "{thread}",
            f"Average CPU load over {name}.",
            [({}, value)],
        )


def _disk(r: _Reading) -> None:
    disks = psutil.disk_io_counters(perdisk=True) or {}
    io, ops = [], []
    for device, c in disks.items():
        io += [({"device": device, "direction": "read"}, int(c.read_bytes))]
        io += [({"device": device, "direction": "write"}, int(c.write_bytes))]
        ops += [({"device": device, "direction": "read"}, int(c.read_count))]
        ops += [({"device": device, "direction": "write"}, int(c.write_count))]
    r.sum("system.disk.io", "By", "Disk bytes transferred.", io)
    r.sum("system.disk.operations", "{operations}", "Disk operations count.", ops)


def _filesystem(r: _Reading) -> None:
    points = []
    for part in psutil.disk_partitions(all=False):
        with contextlib.suppress(OSError):
            usage = psutil.disk_usage(part.mountpoint)
            base = {"device": part.device, "mountpoint": part.mountpoint, "type": part.fstype}
            points += [({**base, "state": "used"}, int(usage.used))]
            points += [({**base, "state": "free"}, int(usage.free))]
    r.sum("system.filesystem.usage", "By", "Filesystem bytes used.", points, monotonic=False)


def _network(r: _Reading) -> None:
    counters = psutil.net_io_counters(pernic=True) or {}
    series: dict[str, list] = {"io": [], "packets": [], "errors": [], "dropped": []}
    for device, c in counters.items():
        for direction, sent in (("transmit", True), ("receive", False)):
            labels = {"device": device, "direction": direction}
            series["io"].append((labels, int(c.bytes_sent if sent else c.bytes_recv)))
            series["packets"].append((labels, int(c.packets_sent if sent else c.packets_recv)))
            series["errors"].append((labels, int(c.errout if sent else c.errin)))
            series["dropped"].append((labels, int(c.dropout if sent else c.dropin)))
    units = {"io": "By", "packets": "{packets}", "errors": "{errors}", "dropped": "{packets}"}
    for kind, points in series.items():
        r.sum(f"system.network.{kind}", units[kind], f"Network {kind}.", points)


def _processes(r: _Reading) -> None:
    statuses: dict[str, int] = {}
    for process in psutil.process_iter(["status"]):
        status = process.info.get("status") or "unknown"
        statuses[status] = statuses.get(status, 0) + 1
    r.sum(
        "system.processes.count",
        "{processes}",
        "Total number of processes in each state.",
        [({"status": s}, n) for s, n in sorted(statuses.items())],
        monotonic=False,
    )
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/stat") as stat:
            created = next(int(line.split()[1]) for line in stat if line.startswith("processes "))
        r.sum("system.processes.created", "{processes}", "Processes created.", [({}, created)])


_SCRAPERS: dict[str, Callable[[_Reading], None]] = {
    "cpu": _cpu,
    "memory": _memory,
    "load": _load,
    "disk": _disk,
    "filesystem": _filesystem,
    "network": _network,
    "processes": _processes,
}


class HostMetricsReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self._scrapers = [
            (name, scrape)
            for name, scrape in _SCRAPERS.items()
            if getattr(config.scrapers, name) is not None
        ]
        self._start_ns = time.time_ns()
        self._task: asyncio.Task | None = None
        self._failing: set[tuple[str, str]] = set()  # (scraper, error) already logged
        self._accepted, _ = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), ""
        )

    async def start(self, host: Host) -> None:
        self._start_ns = time.time_ns()
        self._task = asyncio.create_task(self._run(), name="hostmetrics")

    def scrape(self) -> Metrics:
        """One reading of every configured scraper as a batch."""
        batch = Metrics()
        rm = batch.resource_metrics.add()
        sm = rm.scope_metrics.add()
        sm.scope.name = "coldtail/hostmetrics"
        reading = _Reading(sm.metrics, self._start_ns, time.time_ns())
        for name, scrape in self._scrapers:
            try:
                scrape(reading)
            except Exception as e:  # one scraper's failure leaves the others
                if (name, type(e).__name__) not in self._failing:
                    self._failing.add((name, type(e).__name__))
                    self.log.warning(f"hostmetrics: the {name} scraper failed: {e!r}")
        return batch

    async def _run(self) -> None:
        await asyncio.sleep(self.config.initial_delay)
        while True:
            batch = await asyncio.to_thread(self.scrape)
            try:
                await self.next.consume(batch)
                self._accepted.inc(count_items(batch))
            except Exception as e:
                self.log.warning(f"hostmetrics: reading not accepted by the pipeline: {e}")
            await asyncio.sleep(self.config.collection_interval)

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


factory = Factory(
    kind=Kind.RECEIVER,
    type="hostmetrics",
    aliases=("host_metrics",),
    config=Config,
    create=HostMetricsReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Reads the host's CPU, memory, load, disk, filesystem, network and processes.",
)
