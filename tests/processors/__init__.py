"""Helpers shared by the processor tests."""

from __future__ import annotations

from collector.core.component import Factory, Kind
from collector.core.signals import Signal
from tests.support.components import make_settings
from tests.support.sinks import SinkConsumer


def make_processor(
    factory: Factory, config: dict, signal: Signal = Signal.TRACES, sink=None, **kwargs
):
    """(processor, sink) for `config` of `factory`, created in pipeline `<signal>`; `sink`
    is a new SinkConsumer unless given."""
    sink = sink if sink is not None else SinkConsumer()
    settings = make_settings(Kind.PROCESSOR, factory.type, pipeline=signal.value)
    processor = factory.create(
        settings, factory.config.model_validate(config), signal, sink, **kwargs
    )
    return processor, sink


def processor_metric(processor, direction: str) -> float:
    """otelcol_processor_<direction>_items of `processor` ("incoming" or "outgoing")."""
    return (
        processor.settings.telemetry.registry.get_sample_value(
            f"otelcol_processor_{direction}_items_total",
            {
                "processor": str(processor.settings.id),
                "pipeline": processor.settings.pipeline,
                "otel_signal": processor.signal.value,
            },
        )
        or 0.0
    )
