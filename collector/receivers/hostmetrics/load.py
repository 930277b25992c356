"""The `load` scraper: the 1, 5 and 15 minute load averages."""

from __future__ import annotations

import psutil
from pydantic import Field

from collector.receivers.hostmetrics.common import (
    HostFS,
    Reading,
    ScraperConfig,
    Switch,
    describe_switches,
    gauge,
)

METRICS = {
    f"system.cpu.load_average.{window}": gauge("{thread}", f"Average CPU load over {text}.")
    for window, text in (("1m", "1 minute"), ("5m", "5 minutes"), ("15m", "15 minutes"))
}


class Config(ScraperConfig):
    """system.cpu.load_average.1m, .5m and .15m."""

    NAME = "load"
    METRICS = METRICS

    metrics: dict[str, Switch] = Field(
        default_factory=dict, description=describe_switches("metric", METRICS)
    )
    cpu_average: bool = False
    """Divide the load averages by the number of logical CPUs (default false)."""


class Scraper:
    def __init__(self, config: Config, host: HostFS) -> None:
        self.config = config

    def scrape(self, reading: Reading) -> None:
        out = reading.scope(self.config)
        averages = psutil.getloadavg()
        divisor = (psutil.cpu_count(logical=True) or 1) if self.config.cpu_average else 1
        for name, value in zip(METRICS, averages, strict=True):
            out.emit(name, [({}, value / divisor)])
