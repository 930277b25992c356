"""The `coldtail_ui` exporter: feeds the `coldtail_ui` extension's live page from a traces
pipeline (collector.core.live_view). It sends nothing anywhere; put it beside the pipeline's
real exporters, after the coldstart and tail_latency processors so that their tags are seen."""

from __future__ import annotations

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.live_view import LiveView
from collector.core.pdata import count_items
from collector.core.signals import Signal


class Config(ComponentConfig):
    """No options: the extension's page shows what this exporter records."""


class LiveViewExporter:
    mutates_data = False

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        self.view = settings.shared.get(LiveView)
        self.view.recording = True
        self._sent = settings.telemetry.exporter_sent[signal].labels(exporter=str(settings.id))

    async def start(self, host) -> None:
        pass

    async def consume(self, batch) -> None:
        self.view.record(batch)
        self._sent.inc(count_items(batch))

    async def shutdown(self) -> None:
        pass


factory = Factory(
    kind=Kind.EXPORTER,
    type="coldtail_ui",
    config=Config,
    create=LiveViewExporter,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Feeds the coldtail_ui extension's live page: requests, cold starts and the "
    "latency tail per route, and the latest cold and tail traces.",
)
