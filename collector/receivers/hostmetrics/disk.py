"""The `disk` scraper: I/O per block device, from /proc/diskstats on Linux."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    DeviceMatch,
    HostFS,
    Points,
    Reading,
    ScraperConfig,
    Switch,
    cumulative,
    describe_switches,
    included,
    updown,
)

METRICS = {
    "system.disk.io": cumulative("By", "Disk bytes transferred, by device and direction."),
    "system.disk.operations": cumulative("{operations}", "Disk operations count."),
    "system.disk.io_time": cumulative("s", "Time the disk spent active.", double=True),
    "system.disk.operation_time": cumulative("s", "Time spent in disk operations.", double=True),
    "system.disk.weighted_io_time": cumulative(
        "s", "Time the disk spent active multiplied by the queue length.", double=True
    ),
    "system.disk.pending_operations": updown(
        "{operations}", "The queue size of pending I/O operations."
    ),
    "system.disk.merged": cumulative(
        "{operations}", "Reads and writes merged into single physical disk accesses."
    ),
}

_SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own size


class Config(ScraperConfig):
    """system.disk.io, .operations, .io_time, .operation_time, .weighted_io_time,
    .pending_operations and .merged per device (and direction)."""

    NAME = "disk"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )
    include: DeviceMatch = Field(default_factory=DeviceMatch)
    """Only these devices (`devices` and `match_type`); default all."""
    exclude: DeviceMatch = Field(default_factory=DeviceMatch)
    """Not these devices (`devices` and `match_type`)."""


@dataclass
class _Counters:
    reads: int
    writes: int
    read_bytes: int
    write_bytes: int
    read_ms: int
    write_ms: int
    read_merged: int | None = None
    write_merged: int | None = None
    busy_ms: int | None = None
    pending: int | None = None
    weighted_ms: int | None = None


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        devices = {
            name: counters
            for name, counters in (_diskstats(self.host) if LINUX else _psutil()).items()
            if included(name, self.config.include, self.config.exclude)
        }
        series: dict[str, Points] = {name: [] for name in METRICS}
        for device, c in devices.items():
            for direction, ops, size, ms, merged in (
                ("read", c.reads, c.read_bytes, c.read_ms, c.read_merged),
                ("write", c.writes, c.write_bytes, c.write_ms, c.write_merged),
            ):
                labels = {"device": device, "direction": direction}
                series["system.disk.io"].append((labels, size))
                series["system.disk.operations"].append((labels, ops))
                series["system.disk.operation_time"].append((labels, ms / 1000))
                if merged is not None:
                    series["system.disk.merged"].append((labels, merged))
            labels = {"device": device}
            if c.busy_ms is not None:
                series["system.disk.io_time"].append((labels, c.busy_ms / 1000))
            if c.weighted_ms is not None:
                series["system.disk.weighted_io_time"].append((labels, c.weighted_ms / 1000))
            if c.pending is not None:
                series["system.disk.pending_operations"].append((labels, c.pending))
        for name, points in series.items():
            out.emit(name, points)


def _diskstats(host: HostFS) -> dict[str, _Counters]:
    devices = {}
    for line in host.read_proc("diskstats").splitlines():
        fields = line.split()
        if len(fields) < 14:
            continue
        n = [int(f) for f in fields[3:14]]
        devices[fields[2]] = _Counters(
            reads=n[0],
            read_merged=n[1],
            read_bytes=n[2] * _SECTOR,
            read_ms=n[3],
            writes=n[4],
            write_merged=n[5],
            write_bytes=n[6] * _SECTOR,
            write_ms=n[7],
            pending=n[8],
            busy_ms=n[9],
            weighted_ms=n[10],
        )
    return devices


def _psutil() -> dict[str, _Counters]:
    disks = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
    return {
        name: _Counters(
            reads=d.read_count,
            writes=d.write_count,
            read_bytes=d.read_bytes,
            write_bytes=d.write_bytes,
            read_ms=d.read_time,
            write_ms=d.write_time,
            busy_ms=getattr(d, "busy_time", None),
        )
        for name, d in disks.items()
    }
