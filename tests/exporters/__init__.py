"""Helpers shared by the network exporter tests."""

from __future__ import annotations

from collector.core.component import Factory, Kind
from collector.core.signals import ITEM_NAMES, Signal
from collector.core.telemetry import Telemetry
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings

FAST_RETRY = {"initial_interval": "10ms", "max_interval": "20ms", "randomization_factor": 0}
NO_QUEUE = {"enabled": False}
BATCHES = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}


class Harness:
    """An exporter of `factory` for one signal, retrying fast, with the telemetry it counts
    into."""

    def __init__(self, factory: Factory, config: dict, signal: Signal = Signal.TRACES) -> None:
        config = {"retry_on_failure": FAST_RETRY, **config}
        self.telemetry = Telemetry()
        self.signal = signal
        self.type = factory.type
        settings = make_settings(Kind.EXPORTER, factory.type, telemetry=self.telemetry)
        self.exporter = factory.create(settings, factory.config.model_validate(config), signal)

    def count(self, name: str, items: str | None = None) -> float:
        """otelcol_exporter_<name>_<items>_total; items default to the signal's."""
        value = self.telemetry.registry.get_sample_value(
            f"otelcol_exporter_{name}_{items or ITEM_NAMES[self.signal]}_total",
            {"exporter": self.type},
        )
        return value or 0.0

    def queue_size(self) -> float:
        return self.telemetry.registry.get_sample_value(
            "otelcol_exporter_queue_size", {"exporter": self.type, "data_type": self.signal.value}
        )


async def started(factory: Factory, config: dict, signal: Signal = Signal.TRACES) -> Harness:
    harness = Harness(factory, config, signal)
    await harness.exporter.start(StaticHost())
    return harness
