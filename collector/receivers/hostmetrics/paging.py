"""The `paging` scraper: swap usage per swap device, paging operations and page faults."""

from __future__ import annotations

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    HostFS,
    Points,
    Reading,
    ScraperConfig,
    Switch,
    cumulative,
    describe_switches,
    gauge,
    updown,
)

METRICS = {
    "system.paging.usage": updown("By", "Swap usage per swap device and state (used, free)."),
    "system.paging.operations": cumulative(
        "{operations}",
        "Paging operations by direction (page_in, page_out) and type: major for swap-ins "
        "and swap-outs, minor for all pages paged in and out.",
    ),
    "system.paging.faults": cumulative("{faults}", "Page faults by type (major, minor)."),
    "system.paging.utilization": gauge(
        "1", "Share of each swap device in each state (0 to 1).", on=False
    ),
}


class Config(ScraperConfig):
    """system.paging.usage per swap device, system.paging.operations and system.paging.faults;
    optional system.paging.utilization."""

    NAME = "paging"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        devices = _swap_devices(self.host)
        usage: Points = []
        shares: Points = []
        for device, size, used in devices:
            for state, value in (("used", used), ("free", size - used)):
                usage.append(({"device": device, "state": state}, value))
                if size > 0:
                    shares.append(({"device": device, "state": state}, value / size))
        out.emit("system.paging.usage", usage)
        out.emit("system.paging.utilization", shares)
        if LINUX and (out.on("system.paging.operations") or out.on("system.paging.faults")):
            vmstat = _vmstat(self.host)
            out.emit("system.paging.operations", _operations(vmstat))
            major = vmstat.get("pgmajfault", 0)
            minor = vmstat.get("pgfault", 0) - major
            out.emit(
                "system.paging.faults", [({"type": "major"}, major), ({"type": "minor"}, minor)]
            )


def _swap_devices(host: HostFS) -> list[tuple[str, int, int]]:
    """(device, size, used) in bytes per swap device."""
    if not LINUX:
        swap = psutil.swap_memory()
        return [("swap", swap.total, swap.used)] if swap.total else []
    devices = []
    for line in host.read_proc("swaps").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[2].isdigit() and fields[3].isdigit():
            devices.append((fields[0], int(fields[2]) * 1024, int(fields[3]) * 1024))
    return devices


def _vmstat(host: HostFS) -> dict[str, int]:
    values = {}
    for line in host.read_proc("vmstat").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def _operations(vmstat: dict[str, int]) -> Points:
    # The kernel's counters as /proc/vmstat has them: pages for pswp*, KiB for pgpg*.
    return [
        ({"direction": direction, "type": kind}, vmstat.get(key, 0))
        for key, direction, kind in (
            ("pswpin", "page_in", "major"),
            ("pswpout", "page_out", "major"),
            ("pgpgin", "page_in", "minor"),
            ("pgpgout", "page_out", "minor"),
        )
    ]
