"""The `memory` scraper: memory usage by state, utilization, limit and the Linux extras
(available, dirty, shared, huge pages), read from /proc/meminfo."""

from __future__ import annotations

import os

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    HostFS,
    Reading,
    ScraperConfig,
    Switch,
    describe_switches,
    gauge,
    meminfo,
    updown,
)

METRICS = {
    "system.memory.usage": updown("By", "Bytes of memory in use, by state."),
    "system.memory.utilization": gauge("1", "Share of memory in each state (0 to 1).", on=False),
    "system.memory.limit": updown("By", "Total bytes of memory available.", on=False),
    "system.memory.page_size": gauge(
        "By", "The system's configured page size.", on=False, integer=True
    ),
    "system.linux.memory.available": updown(
        "By",
        "Estimate of memory available for starting new applications without swapping "
        "(MemAvailable).",
        on=False,
    ),
    "system.linux.memory.dirty": updown("By", "Dirty memory (Dirty in /proc/meminfo).", on=False),
    "system.memory.linux.shared": updown(
        "By", "Shared memory: tmpfs and System V/POSIX shared memory (Shmem).", on=False
    ),
    "system.memory.linux.hugepages.limit": updown(
        "{page}", "Total number of huge pages.", on=False
    ),
    "system.memory.linux.hugepages.page_size": gauge(
        "By", "Huge page size.", on=False, integer=True
    ),
    "system.memory.linux.hugepages.reserved": gauge(
        "{page}", "Huge pages reserved but not yet allocated.", on=False, integer=True
    ),
    "system.memory.linux.hugepages.surplus": gauge(
        "{page}", "Huge pages beyond the persistent pool.", on=False, integer=True
    ),
    "system.memory.linux.hugepages.usage": updown(
        "{page}", "Huge pages by state (used, free).", on=False
    ),
    "system.memory.linux.hugepages.utilization": gauge(
        "1", "Share of huge pages by state (0 to 1).", on=False
    ),
}

_HUGEPAGES_STATE = "system.memory.linux.hugepages.state"


class Config(ScraperConfig):
    """system.memory.usage per state (used, free, buffered, cached, slab_reclaimable,
    slab_unreclaimable; bytes); optional utilization, limit and Linux extras."""

    NAME = "memory"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        info = meminfo(self.host) if LINUX else {}
        total, states = _states(info)
        out.emit("system.memory.usage", [({"state": s}, v) for s, v in states.items()])
        if total > 0:
            shares = [({"state": s}, v / total) for s, v in states.items()]
            out.emit("system.memory.utilization", shares)
        out.emit("system.memory.limit", [({}, total)])
        out.emit("system.memory.page_size", [({}, os.sysconf("SC_PAGE_SIZE"))])
        for name, key in (
            ("system.linux.memory.available", "MemAvailable"),
            ("system.linux.memory.dirty", "Dirty"),
            ("system.memory.linux.shared", "Shmem"),
            ("system.memory.linux.hugepages.limit", "HugePages_Total"),
            ("system.memory.linux.hugepages.page_size", "Hugepagesize"),
            ("system.memory.linux.hugepages.reserved", "HugePages_Rsvd"),
            ("system.memory.linux.hugepages.surplus", "HugePages_Surp"),
        ):
            if key in info:
                out.emit(name, [({}, info[key])])
        _hugepages(out, info)


def _states(info: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Total bytes and bytes per state. As upstream (and `free`), cached includes reclaimable
    slab and used is what remains of the total after free, buffers and cached."""
    if not info:  # not Linux: what psutil knows
        memory = psutil.virtual_memory()
        states = {"used": memory.used, "free": memory.free}
        if hasattr(memory, "inactive"):
            states["inactive"] = memory.inactive
        return memory.total, states
    total, free, buffers = info["MemTotal"], info["MemFree"], info.get("Buffers", 0)
    reclaimable = info.get("SReclaimable", 0)
    cached = info.get("Cached", 0) + reclaimable
    return total, {
        "used": max(total - free - buffers - cached, 0),
        "free": free,
        "buffered": buffers,
        "cached": cached,
        "slab_reclaimable": reclaimable,
        "slab_unreclaimable": info.get("SUnreclaim", 0),
    }


def _hugepages(out, info: dict[str, int]) -> None:
    total, free = info.get("HugePages_Total"), info.get("HugePages_Free")
    if total is None or free is None:
        return
    states = {"used": total - free, "free": free}
    out.emit(
        "system.memory.linux.hugepages.usage",
        [({_HUGEPAGES_STATE: s}, v) for s, v in states.items()],
    )
    if total > 0:
        out.emit(
            "system.memory.linux.hugepages.utilization",
            [({_HUGEPAGES_STATE: s}, v / total) for s, v in states.items()],
        )
