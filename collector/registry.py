"""The registry of every built-in component type, by kind, type names (type first, then aliases)
and the module defining its factory; modules are imported on first use."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from collector.core.component import Kind, Registry

UPSTREAM = Path(__file__).resolve().parent / "upstream_components.yaml"

_COMPONENTS = [
    (Kind.RECEIVER, ("otlp",), "collector.receivers.otlp"),
    (Kind.RECEIVER, ("lambda_telemetry",), "collector.receivers.lambda_telemetry"),
    (Kind.RECEIVER, ("awsxray",), "collector.receivers.awsxray"),
    (Kind.RECEIVER, ("statsd",), "collector.receivers.statsd"),
    (Kind.RECEIVER, ("zipkin",), "collector.receivers.zipkin"),
    (Kind.RECEIVER, ("hostmetrics", "host_metrics"), "collector.receivers.hostmetrics"),
    (Kind.RECEIVER, ("prometheus",), "collector.receivers.prometheus"),
    (Kind.RECEIVER, ("jaeger",), "collector.receivers.jaeger"),
    (Kind.RECEIVER, ("kafka",), "collector.receivers.kafka"),
    (Kind.RECEIVER, ("nats",), "collector.receivers.nats"),
    (Kind.RECEIVER, ("httpcheck", "http_check"), "collector.receivers.httpcheck"),
    (Kind.RECEIVER, ("filelog", "file_log"), "collector.receivers.filelog"),
    (
        Kind.RECEIVER,
        ("awsecscontainermetrics",),
        "collector.receivers.awsecscontainermetrics",
    ),
    (Kind.PROCESSOR, ("batch",), "collector.processors.batch"),
    (Kind.PROCESSOR, ("memory_limiter",), "collector.processors.memory_limiter"),
    (Kind.PROCESSOR, ("attributes",), "collector.processors.attributes"),
    (Kind.PROCESSOR, ("resource",), "collector.processors.resource"),
    (
        Kind.PROCESSOR,
        ("resourcedetection", "resource_detection"),
        "collector.processors.resourcedetection",
    ),
    (Kind.PROCESSOR, ("filter",), "collector.processors.filter"),
    (Kind.PROCESSOR, ("coldstart",), "collector.processors.coldstart"),
    (Kind.PROCESSOR, ("tail_latency",), "collector.processors.tail_latency"),
    (Kind.PROCESSOR, ("tail_sampling",), "collector.processors.tail_sampling"),
    (Kind.PROCESSOR, ("metricstransform",), "collector.processors.metricstransform"),
    (Kind.PROCESSOR, ("transform",), "collector.processors.transform"),
    (Kind.CONNECTOR, ("forward",), "collector.connectors.forward"),
    (Kind.CONNECTOR, ("span_metrics", "spanmetrics"), "collector.connectors.span_metrics"),
    (Kind.CONNECTOR, ("servicegraph",), "collector.connectors.servicegraph"),
    (Kind.EXPORTER, ("awsemf",), "collector.exporters.awsemf"),
    (Kind.EXPORTER, ("awsxray",), "collector.exporters.awsxray"),
    (Kind.EXPORTER, ("coldtail_ui",), "collector.exporters.coldtail_ui"),
    (Kind.EXPORTER, ("debug",), "collector.exporters.debug"),
    (Kind.EXPORTER, ("file",), "collector.exporters.file"),
    (Kind.EXPORTER, ("kafka",), "collector.exporters.kafka"),
    (Kind.EXPORTER, ("loadbalancing", "load_balancing"), "collector.exporters.loadbalancing"),
    (Kind.EXPORTER, ("logging",), "collector.exporters.logging_exporter"),
    (Kind.EXPORTER, ("nats",), "collector.exporters.nats"),
    (Kind.EXPORTER, ("otlp", "otlp_grpc"), "collector.exporters.otlp"),
    (Kind.EXPORTER, ("otlphttp", "otlp_http"), "collector.exporters.otlphttp"),
    (Kind.EXPORTER, ("prometheus",), "collector.exporters.prometheus"),
    (Kind.EXPORTER, ("prometheusremotewrite",), "collector.exporters.prometheusremotewrite"),
    (Kind.EXTENSION, ("awsproxy",), "collector.extensions.awsproxy"),
    (Kind.EXTENSION, ("basicauth",), "collector.extensions.basicauth"),
    (Kind.EXTENSION, ("bearertokenauth",), "collector.extensions.bearertokenauth"),
    (Kind.EXTENSION, ("coldtail_ui",), "collector.extensions.coldtail_ui"),
    (Kind.EXTENSION, ("file_storage",), "collector.extensions.file_storage"),
    (Kind.EXTENSION, ("headers_setter",), "collector.extensions.headers_setter"),
    (Kind.EXTENSION, ("health_check",), "collector.extensions.health_check"),
    (Kind.EXTENSION, ("pprof",), "collector.extensions.pprof"),
    (Kind.EXTENSION, ("sigv4auth",), "collector.extensions.sigv4auth"),
    (Kind.EXTENSION, ("zpages",), "collector.extensions.zpages"),
]


@functools.cache
def upstream_components() -> dict[Kind, dict[str, dict]]:
    """The OTel Collector component types configs commonly use, by kind and type (aliases
    included): their `note` says what coldtail has or what to use instead."""
    data = yaml.safe_load(UPSTREAM.read_text())
    table: dict[Kind, dict[str, dict]] = {}
    for kind in Kind:
        entries = table[kind] = {}
        for type_, entry in (data.get(kind.section) or {}).items():
            for name in (type_, *(entry or {}).get("aliases", [])):
                entries[name] = {"type": type_, **(entry or {})}
    return table


def _missing(kind: Kind, type_: str) -> str | None:
    entry = upstream_components()[kind].get(type_)
    if entry is None:
        return None
    note = entry.get("note") or "not yet"
    return f"the OTel Collector's {entry['type']} {kind.value} is not in coldtail: {note}"


@functools.cache
def registry() -> Registry:
    reg = Registry(_missing)
    for kind, names, module in _COMPONENTS:
        reg.register_lazy(kind, names, module)
    return reg
