"""The registry of every built-in component type."""

from __future__ import annotations

import functools
import importlib

from collector.component import Registry

_MODULES = [
    "collector.receivers.otlp",
    "collector.receivers.lambda_telemetry",
    "collector.processors.batch",
    "collector.processors.memory_limiter",
    "collector.processors.attributes",
    "collector.processors.resource",
    "collector.processors.filter",
    "collector.processors.coldstart",
    "collector.processors.tail_latency",
    "collector.processors.tail_sampling",
    "collector.connectors.forward",
    "collector.connectors.span_metrics",
    "collector.exporters.debug",
    "collector.exporters.file",
    "collector.exporters.otlp",
    "collector.exporters.otlphttp",
    "collector.exporters.prometheus",
    "collector.exporters.prometheusremotewrite",
    "collector.extensions.health_check",
]


@functools.cache
def registry() -> Registry:
    reg = Registry()
    for name in _MODULES:
        reg.register(importlib.import_module(name).factory)
    return reg
