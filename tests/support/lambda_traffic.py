"""Spans as a fleet of Lambda execution environments would send them, through the OpenTelemetry
SDK: each environment's first request is a cold start (the coldstart processor infers it) that
takes `cold_extra_ms` longer, most of it in an `init` span (which the processor joins to the
request as its init duration); the others are warm. Environments start on different routes."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


@dataclass
class Sent:
    """What was sent, per route: every request's duration (ms) and which were cold."""

    durations: dict[str, list[float]] = field(default_factory=dict)
    warm: dict[str, list[float]] = field(default_factory=dict)
    cold: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def send(
    endpoint: str,
    routes: dict[str, float],
    environments: int = 4,
    requests: int = 40,
    cold_extra_ms: float = 800.0,
    seed: int = 7,
) -> Sent:
    """`requests` per route, spread over `environments` environments of service `orders`, to
    the OTLP/HTTP traces `endpoint`; `routes` maps each route to its typical warm duration."""
    rng = random.Random(seed)
    sent = Sent()
    now = time.time_ns()
    for env in range(environments):
        resource = Resource.create(
            {
                "service.name": "orders",
                "cloud.provider": "aws",
                "cloud.platform": "aws_lambda",
                "faas.name": "orders",
                "faas.instance": f"2026/12/04/[$LATEST]{env:032x}",
            }
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        tracer = provider.get_tracer("orders.handler")
        first = True
        for i in range(requests * len(routes) // environments):
            route = list(routes)[(i + env) % len(routes)]
            ms = routes[route] * rng.lognormvariate(0, 0.3)
            first_request, first = first, False
            if first_request:
                ms += cold_extra_ms
                sent.cold[route] = sent.cold.get(route, 0) + 1
            start = now + i * 1_000_000
            span = tracer.start_span(f"GET {route}", kind=SpanKind.SERVER, start_time=start)
            span.set_attribute("http.route", route)
            offset = 100_000
            if first_request:
                init = tracer.start_span("init", context=_context(span), start_time=start + offset)
                init.set_attribute("coldtail.init_type", "on-demand")
                offset += int(cold_extra_ms * 0.9 * 1e6)
                init.end(end_time=start + offset)
            child = tracer.start_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                context=_context(span),
                start_time=start + offset,
            )
            child.end(end_time=start + offset + int((ms - offset / 1e6) * 0.6 * 1e6))
            if rng.random() < 0.05:
                span.set_status(Status(StatusCode.ERROR))
                sent.errors[route] = sent.errors.get(route, 0) + 1
            span.end(end_time=start + int(ms * 1e6))
            sent.durations.setdefault(route, []).append(ms)
            if not first_request:
                sent.warm.setdefault(route, []).append(ms)
        provider.shutdown()
    return sent


def _context(span):
    from opentelemetry.trace import set_span_in_context

    return set_span_in_context(span)
