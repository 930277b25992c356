"""The `processes` scraper: how many processes are in each status, and how many were created
since boot."""

from __future__ import annotations

from collections import Counter

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    LINUX,
    HostFS,
    Reading,
    ScraperConfig,
    Switch,
    cumulative,
    describe_switches,
    updown,
)

METRICS = {
    "system.processes.count": updown("{processes}", "Number of processes in each status."),
    "system.processes.created": cumulative("{processes}", "Processes created since boot."),
}

# psutil's status -> upstream's (ps's state letters: D blocked, W paging, T and t stopped).
_STATUSES = {
    psutil.STATUS_RUNNING: "running",
    psutil.STATUS_SLEEPING: "sleeping",
    psutil.STATUS_DISK_SLEEP: "blocked",
    psutil.STATUS_STOPPED: "stopped",
    psutil.STATUS_TRACING_STOP: "stopped",
    psutil.STATUS_ZOMBIE: "zombies",
    psutil.STATUS_IDLE: "idle",
    psutil.STATUS_LOCKED: "locked",
    psutil.STATUS_WAITING: "paging",
    psutil.STATUS_WAKING: "paging",
}


class Config(ScraperConfig):
    """system.processes.count per status (running, sleeping, blocked, stopped, zombies, idle,
    ...) and system.processes.created."""

    NAME = "processes"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config, self.host = config, host

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        stat = _proc_stat(self.host) if LINUX else {}
        if out.on("system.processes.count"):
            counts = _statuses()
            # The kernel counts running and blocked tasks at one instant; the walk above
            # cannot, as processes change while it runs.
            for status, key in (("running", "procs_running"), ("blocked", "procs_blocked")):
                if key in stat:
                    counts[status] = stat[key]
            out.emit(
                "system.processes.count", [({"status": s}, n) for s, n in sorted(counts.items())]
            )
        if "processes" in stat:
            out.emit("system.processes.created", [({}, stat["processes"])])


def _statuses() -> Counter[str]:
    counts: Counter[str] = Counter()
    for pid in psutil.pids():
        try:
            status = psutil.Process(pid).status()
        except psutil.Error:  # gone meanwhile, or unreadable
            continue
        counts[_STATUSES.get(status, "unknown")] += 1
    return counts


def _proc_stat(host: HostFS) -> dict[str, int]:
    values = {}
    for line in host.read_proc("stat").splitlines():
        key, _, value = line.partition(" ")
        if key in ("processes", "procs_running", "procs_blocked") and value.strip().isdigit():
            values[key] = int(value)
    return values
