"""The receiver: its options and the loop that runs the configured scrapers every
`collection_interval`, in a worker thread, one batch per reading."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Protocol

import psutil
from pydantic import Field, field_validator, model_validator

import collector.receivers.hostmetrics.cpu as cpu_scraper
import collector.receivers.hostmetrics.disk as disk_scraper
import collector.receivers.hostmetrics.filesystem as filesystem_scraper
import collector.receivers.hostmetrics.load as load_scraper
import collector.receivers.hostmetrics.memory as memory_scraper
import collector.receivers.hostmetrics.network as network_scraper
import collector.receivers.hostmetrics.paging as paging_scraper
import collector.receivers.hostmetrics.process as process_scraper
import collector.receivers.hostmetrics.processes as processes_scraper
import collector.receivers.hostmetrics.system as system_scraper
from collector.core import tasks
from collector.core.component import Host, Settings
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, count_items
from collector.core.signals import Signal
from collector.receivers.hostmetrics.common import HostFS, Reading, ScraperConfig

_MODULES = {
    "cpu": cpu_scraper,
    "disk": disk_scraper,
    "filesystem": filesystem_scraper,
    "load": load_scraper,
    "memory": memory_scraper,
    "network": network_scraper,
    "paging": paging_scraper,
    "processes": processes_scraper,
    "process": process_scraper,
    "system": system_scraper,
}


class Scrapers(ComponentConfig):
    cpu: cpu_scraper.Config | None = None
    """CPU time per logical CPU and state; utilization, frequency and counts optional."""
    disk: disk_scraper.Config | None = None
    """I/O per block device: bytes, operations, times, queue, merges."""
    filesystem: filesystem_scraper.Config | None = None
    """Space and inodes per mounted file system; utilization optional."""
    load: load_scraper.Config | None = None
    """The 1, 5 and 15 minute load averages."""
    memory: memory_scraper.Config | None = None
    """Memory usage per state; utilization, limit and Linux extras optional."""
    network: network_scraper.Config | None = None
    """Traffic per interface and TCP connections per state; conntrack optional."""
    paging: paging_scraper.Config | None = None
    """Swap usage per device, paging operations and page faults; utilization optional."""
    processes: processes_scraper.Config | None = None
    """Process counts per status and processes created."""
    process: process_scraper.Config | None = None
    """Per process CPU, memory and disk I/O, each process its own resource."""
    system: system_scraper.Config | None = None
    """system.uptime."""

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
    root_path: str = ""
    """Where the host's / is mounted when the collector runs in a container, like /hostfs
    (`docker run -v /:/hostfs`): procfs, mount points and file systems are read under it.
    Default: empty, this machine's own. Checked when the receiver starts; every hostmetrics
    receiver of a collector should name the same one."""
    scrapers: Scrapers = Field(default_factory=Scrapers)
    """The scrapers to run, each as `name:` or `name: {options}`. At least one."""

    @field_validator("root_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError(f"expected an absolute path like /hostfs, got {value!r}")
        return value

    @model_validator(mode="after")
    def _some_scraper(self) -> Config:
        if not any(getattr(self.scrapers, name) is not None for name in _MODULES):
            raise ValueError("scrapers: configure at least one, like cpu: {}")
        return self


class _Scraper(Protocol):
    config: ScraperConfig

    def scrape(self, reading: Reading) -> None: ...


class HostMetricsReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self.host = HostFS(config.root_path.rstrip("/"))
        self._scrapers: list[_Scraper] = [
            module.Scraper(scraper_config, self.host)
            for name, module in _MODULES.items()
            if (scraper_config := getattr(config.scrapers, name)) is not None
        ]
        self._started = time.time_ns()
        self._task: asyncio.Task | None = None
        self._logged: set[tuple[str, str]] = set()  # (scraper, kind) already logged
        self._accepted, _ = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), ""
        )

    async def start(self, host: Host) -> None:
        _check_root(self.host.root)
        self._started = time.time_ns()
        self._task = asyncio.create_task(self._run(), name="hostmetrics")

    def scrape(self) -> Metrics:
        """One reading of every configured scraper as a batch."""
        with self.host.psutil_procfs():
            reading = Reading(now_ns=time.time_ns(), boot_ns=self._boot_ns())
            for scraper in self._scrapers:
                try:
                    scraper.scrape(reading)
                except Exception as e:  # one scraper's failure leaves the others
                    name = scraper.config.NAME
                    why = f"{type(e).__name__}: {e}"
                    self._report((name, type(e).__name__), f"the {name} scraper failed: {why}")
        for (name, kind), problem in reading.problems.items():
            more = f" [{problem.count} like it this reading]" if problem.count > 1 else ""
            self._report((name, kind), f"the {name} scraper: {problem.example}{more}")
        return reading.finish()

    def _boot_ns(self) -> int:
        try:
            return int(psutil.boot_time() * 1e9)
        except Exception as e:  # sums then start at the receiver's start
            self._report(("", "boot_time"), f"cannot read the boot time: {type(e).__name__}: {e}")
            return self._started

    def _report(self, kind: tuple[str, str], message: str) -> None:
        """Each kind of failure, by (scraper, kind), once as a warning, then at debug level."""
        text = f"hostmetrics: {message}"
        if kind in self._logged:
            self.log.debug(text)
            return
        self._logged.add(kind)
        self.log.warning(f"{text}; such failures are logged once")

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
        await tasks.cancel([self._task])
        self._task = None


def _check_root(root: str) -> None:
    """A root_path must hold the host's file system, procfs at least."""
    if not root:
        return
    if not os.path.isdir(root):
        raise ValueError(
            f"root_path {root!r} is not a directory: mount the host's / there "
            "(like docker run -v /:/hostfs) or remove root_path"
        )
    if not os.path.isdir(f"{root}/proc"):
        raise ValueError(f"root_path {root!r} has no proc directory: mount the host's /proc there")
