"""The `system` scraper: system.uptime."""

from __future__ import annotations

from pydantic import Field

from collector.receivers.hostmetrics.common import (
    HostFS,
    Reading,
    ScraperConfig,
    Switch,
    describe_switches,
    gauge,
)

METRICS = {"system.uptime": gauge("s", "Seconds since the system booted.")}


class Config(ScraperConfig):
    """system.uptime (seconds since boot)."""

    NAME = "system"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config = config

    def scrape(self, reading: Reading) -> None:
        uptime = (reading.now_ns - reading.boot_ns) / 1e9
        reading.scope(self.config).emit("system.uptime", [({}, uptime)])
