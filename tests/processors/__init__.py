"""Helpers shared by the processor tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from collector.component import Factory, Kind, Signal
from collector.testing.components import make_settings
from collector.testing.sinks import SinkConsumer

TESTDATA = Path(__file__).parent / "testdata"


def config_cases(name: str) -> tuple[list, list]:
    """(valid, invalid) pytest params from testdata/<name>.yaml: `valid` maps a case name to a
    config; `invalid` lists {name, config, error} where error is a fragment of the message."""
    data = yaml.safe_load((TESTDATA / f"{name}.yaml").read_text())
    valid = [pytest.param(config or {}, id=case) for case, config in data["valid"].items()]
    invalid = [
        pytest.param(case["config"] or {}, case["error"], id=case["name"])
        for case in data["invalid"]
    ]
    return valid, invalid


def make_processor(factory: Factory, config: dict, signal: Signal = Signal.TRACES, **kwargs):
    """(processor, sink) for `config` of `factory`, created in pipeline `<signal>`."""
    sink = SinkConsumer()
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
