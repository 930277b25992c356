"""The `cpu` scraper: CPU time and utilization per logical CPU and state, frequency, counts."""

from __future__ import annotations

from typing import Any

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
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
    "system.cpu.time": cumulative(
        "s", "Seconds each logical CPU spent in each state.", double=True
    ),
    "system.cpu.utilization": gauge(
        "1",
        "Share of each logical CPU's time in each state since the last reading (0 to 1).",
        on=False,
    ),
    "system.cpu.frequency": gauge("Hz", "Current frequency of each logical CPU.", on=False),
    "system.cpu.logical.count": updown("{cpu}", "Number of available logical CPUs.", on=False),
    "system.cpu.physical.count": updown("{cpu}", "Number of available physical CPUs.", on=False),
}

# psutil's field -> upstream's state; guest time is already within user time.
_STATES = {
    "user": "user",
    "system": "system",
    "idle": "idle",
    "irq": "interrupt",
    "nice": "nice",
    "softirq": "softirq",
    "steal": "steal",
    "iowait": "wait",
}


class Config(ScraperConfig):
    """system.cpu.time per logical CPU (cpu0, cpu1, ...) and state; optional utilization,
    frequency and CPU counts."""

    NAME = "cpu"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config = config
        self._previous: list[Any] | None = None  # the last reading's per-CPU times

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        times = psutil.cpu_times(percpu=True)
        out.emit(
            "system.cpu.time", [p for i, t in enumerate(times) for p in _points(i, _by_state(t))]
        )
        if self._previous is not None and len(self._previous) == len(times):
            out.emit("system.cpu.utilization", _utilization(self._previous, times))
        self._previous = times
        if out.on("system.cpu.logical.count"):
            out.emit("system.cpu.logical.count", [({}, psutil.cpu_count(logical=True) or 0)])
        if out.on("system.cpu.physical.count"):
            physical = psutil.cpu_count(logical=False)
            out.emit("system.cpu.physical.count", [({}, physical)] if physical else [])
        if out.on("system.cpu.frequency"):
            frequencies = psutil.cpu_freq(percpu=True) or []
            out.emit(
                "system.cpu.frequency",
                [({"cpu": f"cpu{i}"}, f.current * 1e6) for i, f in enumerate(frequencies)],
            )


def _by_state(times: Any) -> dict[str, float]:
    values = times._asdict()
    return {state: float(values[name]) for name, state in _STATES.items() if name in values}


def _points(cpu: int, by_state: dict[str, float]) -> Points:
    return [({"cpu": f"cpu{cpu}", "state": state}, value) for state, value in by_state.items()]


def _utilization(before: list[Any], after: list[Any]) -> Points:
    """Each state's share of the CPU time that passed, per CPU: upstream divides by the sum
    of all states (guest included), which is the elapsed time of a CPU that stayed online.
    Shares are held within 0..1: the float sums can overshoot by a rounding error, and Linux's
    iowait counter may go backwards (proc(5))."""
    points: Points = []
    for cpu, (old, new) in enumerate(zip(before, after, strict=True)):
        elapsed = sum(new) - sum(old)
        old_states = _by_state(old)
        shares = {
            state: min(max((value - old_states[state]) / elapsed, 0.0), 1.0) if elapsed > 0 else 0.0
            for state, value in _by_state(new).items()
        }
        points += _points(cpu, shares)
    return points
