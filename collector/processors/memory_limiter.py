"""memory_limiter processor: refuses data while the process uses too much memory, so senders
back off and retry instead of the collector running out of memory.

Every `check_interval` the process RSS is measured. At or above the soft limit (limit minus
spike) a garbage collection runs and the C allocator is asked to give freed memory back to the
system (glibc's malloc_trim): CPython and protobuf free memory without returning it, so without
this the RSS of a drained collector stays at its peak and data would be refused long after the
burst. If the RSS is still at or above the soft limit, new data is refused with a retryable
error (503 / UNAVAILABLE at a receiver) until it falls below the resume mark, 95% of the soft
limit (hysteresis: no flapping at the limit). Receivers also refuse,
before parsing, a request too large for the headroom left (collector/core/memory.py). Nothing
is dropped silently.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from pathlib import Path

import psutil
from pydantic import Field, model_validator

from collector.core import tasks
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer, RetryableError
from collector.core.memory import MemoryPressure
from collector.core.pdata import accepts_encoded, count_items
from collector.core.signals import Signal
from collector.processors.internal.base import Processor

MIB = 1 << 20
# cgroup v2, then v1; the first that holds a limit below physical memory wins.
_CGROUP_LIMIT_FILES = (
    "/sys/fs/cgroup/memory.max",
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
)


class Config(ComponentConfig):
    check_interval: Duration = Field(gt=0)
    """Time between two memory measurements, like 1s. Required, greater than 0."""
    limit_mib: int = Field(0, ge=0)
    """Hard limit of process memory (RSS) in MiB. Exactly one of limit_mib and limit_percentage
    must be set. Default 0: unset."""
    spike_limit_mib: int = Field(0, ge=0)
    """Headroom below limit_mib in MiB: data is refused from limit_mib - spike_limit_mib on. Must
    be less than limit_mib. Default 0: 20% of limit_mib."""
    limit_percentage: int = Field(0, ge=0, le=100)
    """Hard limit as a percentage (1..100) of total memory: the cgroup memory limit when one is
    set, else physical memory. Exactly one of limit_mib and limit_percentage must be set.
    Default 0: unset."""
    spike_limit_percentage: int = Field(0, ge=0, le=100)
    """Headroom below limit_percentage, in percent of total memory. Must be less than
    limit_percentage. Default 0: 20% of the limit."""

    @model_validator(mode="after")
    def _limits(self):
        if bool(self.limit_mib) == bool(self.limit_percentage):
            raise ValueError("set exactly one of limit_mib or limit_percentage (greater than 0)")
        if self.limit_mib:
            if self.spike_limit_percentage:
                raise ValueError(
                    "spike_limit_percentage needs limit_percentage; with limit_mib "
                    "use spike_limit_mib"
                )
            if self.spike_limit_mib >= self.limit_mib:
                raise ValueError(
                    f"spike_limit_mib ({self.spike_limit_mib}) must be less than "
                    f"limit_mib ({self.limit_mib})"
                )
        else:
            if self.spike_limit_mib:
                raise ValueError(
                    "spike_limit_mib needs limit_mib; with limit_percentage use "
                    "spike_limit_percentage"
                )
            if self.spike_limit_percentage >= self.limit_percentage:
                raise ValueError(
                    f"spike_limit_percentage ({self.spike_limit_percentage}) must be less than "
                    f"limit_percentage ({self.limit_percentage})"
                )
        return self

    def limits(self, total_memory: int) -> tuple[int, int]:
        """(hard, soft) limits in bytes; `total_memory` in bytes is used for percentages."""
        if self.limit_mib:
            hard, spike = self.limit_mib * MIB, self.spike_limit_mib * MIB
        else:
            hard = total_memory * self.limit_percentage // 100
            spike = total_memory * self.spike_limit_percentage // 100
        return hard, hard - (spike or hard // 5)


def total_memory() -> int:
    """Bytes this process may use: the cgroup memory limit when one is set, else physical
    memory."""
    physical = psutil.virtual_memory().total
    for path in _CGROUP_LIMIT_FILES:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        # "max" (v2) or a huge number (v1) means no limit.
        if text.isdigit() and 0 < int(text) < physical:
            return int(text)
    return physical


def _malloc_trim() -> Callable[[], object]:
    """glibc's malloc_trim(0), or nothing where the C library has none (musl)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    return lambda: trim(0)


def process_rss() -> Callable[[], int]:
    """A reader of this process's resident set size in bytes."""
    process = psutil.Process()
    return lambda: process.memory_info().rss


class MemoryLimiter(Processor):
    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        next: Consumer,
        *,
        memory_usage: Callable[[], int] | None = None,
        total: Callable[[], int] = total_memory,
    ) -> None:
        super().__init__(settings, config, signal, next)
        # Bytes in use now; replaced in tests to drive the limiter.
        self.memory_usage = memory_usage or process_rss()
        self.hard_limit, self.soft_limit = config.limits(total())
        # Hysteresis: refusing stops a little below where it starts, so that it does not flap
        # at the limit, yet above what a drained process keeps.
        self.resume_limit = self.soft_limit * 95 // 100
        self.pressure = settings.shared.get(MemoryPressure)
        self._trim = _malloc_trim()
        self.usage = 0
        self._state = "normal"
        self._task: asyncio.Task | None = None

    @property
    def accepts_encoded(self) -> bool:
        # It only counts items: the data passes on as it came.
        return accepts_encoded(self.next)

    @property
    def refusing(self) -> bool:
        return self._state != "normal"

    async def start(self, host) -> None:
        self.check()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.settings.id} check")

    async def shutdown(self) -> None:
        await tasks.cancel([self._task])
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            self.check()

    def check(self) -> None:
        """Measure memory and decide whether new data is refused."""
        usage = self.memory_usage()
        if usage >= self.resume_limit and (self.refusing or usage >= self.soft_limit):
            gc.collect()
            self._trim()
            usage = self.memory_usage()
        self.usage = usage
        if usage >= self.hard_limit:
            state = "hard"
        elif usage >= self.soft_limit or (self.refusing and usage >= self.resume_limit):
            state = "soft"
        else:
            state = "normal"
        if state != self._state:
            self._log_transition(state)
            self._state = state
        self.pressure.refusing = self.refusing
        self.pressure.headroom = max(self.soft_limit - usage, 0)

    def _log_transition(self, state: str) -> None:
        kv = {
            "usage_mib": self.usage // MIB,
            "soft_limit_mib": self.soft_limit // MIB,
            "hard_limit_mib": self.hard_limit // MIB,
        }
        if state == "normal":
            self.log.info("memory usage below the resume mark, accepting data", extra={"kv": kv})
        elif state == "soft":
            self.log.warning("memory usage above the soft limit, refusing data", extra={"kv": kv})
        else:
            self.log.warning(
                "memory usage above the hard limit after garbage collection, refusing data",
                extra={"kv": kv},
            )

    async def consume(self, batch) -> None:
        items = count_items(batch)
        self._incoming.inc(items)
        if self.refusing:
            raise RetryableError(
                f"memory usage {self.usage // MIB} MiB is above the soft limit "
                f"{self.soft_limit // MIB} MiB",
                retry_after=self.config.check_interval,
            )
        await self.forward(batch, items)


factory = Factory(
    kind=Kind.PROCESSOR,
    type="memory_limiter",
    config=Config,
    create=MemoryLimiter,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    description="Refuses data with a retryable error while process memory is above a limit.",
)
