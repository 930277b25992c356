"""The OpenTelemetry SDK, for library instrumentations (botocore, requests, ...) only.

Set up only when OTEL_PYTHON_ENABLED_INSTRUMENTATIONS names some (the SDK costs ~118 ms of
import): a TracerProvider with coldtail's resource, whose span processor turns each finished SDK
span into a coldtail span record for the invocation's export; during the handler the invocation
span is the current OTel span (a NonRecordingSpan with its ids), so library spans join its trace.

Instrumentors are found by name in the `opentelemetry_instrumentor` entry-point group (where the
opentelemetry-instrumentation-* packages register theirs, e.g. `botocore`), and only the names
asked for are loaded; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS wins over the enabled list. A name
with no installed package logs a warning. `instrumentation_names` and `instrument` serve the
container instrumentation (instrumentation.container) too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from instrumentation.spans import Event, Link, Span, SpanContext

log = logging.getLogger("coldtail")

ENTRY_POINT_GROUP = "opentelemetry_instrumentor"
# Bounds the spans held between exports if library spans keep ending outside invocations.
_MAX_FINISHED = 1000


def instrumentation_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    def names(variable: str) -> list[str]:
        return [n.strip() for n in environ.get(variable, "").split(",") if n.strip()]

    disabled = set(names("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
    return [n for n in names("OTEL_PYTHON_ENABLED_INSTRUMENTATIONS") if n not in disabled]


def instrument(names: list[str], provider) -> None:
    """Load the instrumentors named `names` and instrument with `provider`; a missing or failing
    one logs a warning and the others still load."""
    from importlib.metadata import entry_points

    for name in names:
        try:
            found = entry_points(group=ENTRY_POINT_GROUP, name=name)
            if not found:
                log.warning(
                    "coldtail: no instrumentation named %r is installed "
                    "(pip install opentelemetry-instrumentation-%s)",
                    name,
                    name,
                )
                continue
            for entry_point in found:
                entry_point.load()().instrument(tracer_provider=provider)
        except Exception:
            log.warning("coldtail: instrumentation %r failed to load", name, exc_info=True)


class SdkBridge:
    """Thread-safe: SDK spans may end on any thread."""

    def __init__(self, resource: dict) -> None:
        from opentelemetry import context, trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

        self._context = context
        self._trace = trace
        self._finished: list[Span] = []
        self._lock = threading.Lock()
        bridge = self

        class _Processor(SpanProcessor):
            def on_end(self, span) -> None:
                bridge._on_end(span)

        self.provider = TracerProvider(resource=Resource(resource))
        self.provider.add_span_processor(_Processor())
        trace.set_tracer_provider(self.provider)

    def instrument(self, names: list[str]) -> None:
        instrument(names, self.provider)

    def attach(self, span: Span):
        """Make `span` the current OTel span; returns the token for `detach`."""
        trace = self._trace
        context = trace.SpanContext(
            trace_id=int.from_bytes(span.trace_id, "big"),
            span_id=int.from_bytes(span.span_id, "big"),
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
        current = trace.set_span_in_context(trace.NonRecordingSpan(context))
        return self._context.attach(current)

    def detach(self, token) -> None:
        self._context.detach(token)

    def drain(self) -> list[Span]:
        with self._lock:
            finished, self._finished = self._finished, []
        return finished

    def _on_end(self, sdk_span) -> None:
        try:
            span = _from_sdk(sdk_span)
        except Exception:
            log.warning("coldtail: could not convert an SDK span", exc_info=True)
            return
        with self._lock:
            if len(self._finished) >= _MAX_FINISHED:
                del self._finished[0]
            self._finished.append(span)


def _from_sdk(sdk_span) -> Span:
    """A coldtail Span from an SDK ReadableSpan. The API's SpanKind and StatusCode enums are
    the OTLP values minus one and equal to them, respectively."""
    context = sdk_span.context
    scope = sdk_span.instrumentation_scope
    span = Span(
        sdk_span.name,
        sdk_span.kind.value + 1,
        start_ns=sdk_span.start_time,
        trace_id=_trace_id(context.trace_id),
        span_id=_span_id(context.span_id),
        scope=(scope.name, scope.version or "") if scope is not None else ("", ""),
    )
    parent = sdk_span.parent
    if parent is not None:
        span.parent_span_id = _span_id(parent.span_id)
        span.parent_remote = parent.is_remote
    span.trace_state = context.trace_state.to_header() if context.trace_state else ""
    span.attributes = dict(sdk_span.attributes or {})
    span.events = [Event(e.name, e.timestamp, dict(e.attributes or {})) for e in sdk_span.events]
    span.links = [
        Link(
            SpanContext(
                _trace_id(link.context.trace_id),
                _span_id(link.context.span_id),
                link.context.trace_flags.sampled,
                link.context.trace_state.to_header() if link.context.trace_state else "",
                link.context.is_remote,
            ),
            dict(link.attributes or {}),
        )
        for link in sdk_span.links
    ]
    span.set_status(sdk_span.status.status_code.value, sdk_span.status.description or "")
    span.end(sdk_span.end_time)
    return span


def _trace_id(value: int) -> bytes:
    return value.to_bytes(16, "big")


def _span_id(value: int) -> bytes:
    return value.to_bytes(8, "big")
