"""The OpenTelemetry tracing API served without the SDK, in the Lambda function: the spans the
function starts with `opentelemetry.trace` (its own, and those of opentelemetry-instrumentation-*
libraries) become coldtail span records, exported with the invocation's spans.

Imported only once the function has loaded the API (its own opentelemetry-api package: the layer
ships none), so importing `opentelemetry` here costs nothing more; the SDK is never imported.

What it does where the API leaves the choice to the implementation:

- Parent: the span in the `context` given, else in the current context, else (no context given)
  the invocation being served, so that spans started on threads that do not carry the context
  (a pool the handler hands work to) still nest under their invocation; outside invocations, a
  new trace.
- Sampling: parent-based, always on at the root. A child of an unsampled parent records nothing:
  it is a NonRecordingSpan with a span id of its own and the parent's flags and trace state, so
  the trace context still propagates.
- Limits, from the SDK's variables: OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_SPAN_EVENT_COUNT_LIMIT,
  OTEL_SPAN_LINK_COUNT_LIMIT, OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT, OTEL_LINK_ATTRIBUTE_COUNT_LIMIT
  (each defaults to OTEL_ATTRIBUTE_COUNT_LIMIT where the spec says so, else 128);
  OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT and OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT (default none)
  cut string values. Past a count limit new entries are discarded and counted (the OTLP dropped
  counts), as the spec asks.
- Attribute values: the API's AnyValue (str, bool, int, float, bytes, sequences of those and
  mappings with str keys); None and other values are left out.
- Status: UNSET is ignored, OK is final, a description is kept for ERROR only.
- Exceptions: record_exception adds the semantic-convention `exception` event (exception.type
  fully qualified); an Exception leaving `with tracer.start_span(...)` or
  `start_as_current_span` is recorded and sets ERROR, as record_exception and
  set_status_on_exception ask.
- The instrumentation scope is the tracer's name and version; its schema URL and attributes are
  not exported.

The invocation span is the current span while the handler runs (`activate`): what the function
sets on `trace.get_current_span()` lands on it, ending it through the API does nothing (the
invocation ends it), and outgoing calls propagate its context.

Thread-safe: a span may be changed and ended on any thread. Ended spans go to the
instrumentation's FinishedSpans and out with its next export.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Mapping, Sequence

from opentelemetry import context as context_api
from opentelemetry import trace

from instrumentation import spans
from instrumentation.resource import whole_number

try:
    # What the API's own tracers use: it also decorates coroutine functions correctly.
    from opentelemetry.util._decorator import _agnosticcontextmanager as _contextmanager
except ImportError:  # an API older than 1.24
    # The same call shape; the checker only sees two different return types.
    from contextlib import contextmanager as _contextmanager  # type: ignore[assignment]

log = logging.getLogger("coldtail")

_DEFAULT_LIMIT = 128
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


class Limits:
    """Span limits from the environment (see the module docstring)."""

    __slots__ = (
        "attribute_length",
        "attributes",
        "event_attributes",
        "events",
        "link_attributes",
        "links",
        "span_attribute_length",
    )

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        count = whole_number(environ, "OTEL_ATTRIBUTE_COUNT_LIMIT", _DEFAULT_LIMIT)
        length = whole_number(environ, "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", None)
        self.attributes = whole_number(environ, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", count)
        self.events = whole_number(environ, "OTEL_SPAN_EVENT_COUNT_LIMIT", _DEFAULT_LIMIT)
        self.links = whole_number(environ, "OTEL_SPAN_LINK_COUNT_LIMIT", _DEFAULT_LIMIT)
        self.event_attributes = whole_number(environ, "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", count)
        self.link_attributes = whole_number(environ, "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT", count)
        self.span_attribute_length = whole_number(
            environ, "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", length
        )
        self.attribute_length = length


class TracerProvider(trace.TracerProvider):
    """Serves `owner` (an instrumentation.invocation.Instrumentation): ended spans go to
    `owner.finished`, and `owner.active` is the invocation span, the parent of last resort."""

    def __init__(self, owner, limits: Limits | None = None) -> None:
        self.owner = owner
        self.limits = limits or Limits()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes=None,
    ) -> Tracer:
        scope = (instrumenting_module_name or "", instrumenting_library_version or "")
        return Tracer(self, scope)


class Tracer(trace.Tracer):
    def __init__(self, provider: TracerProvider, scope: tuple[str, str]) -> None:
        self._provider = provider
        self._scope = scope

    def start_span(
        self,
        name: str,
        context=None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes=None,
        links=None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent = self._parent(context)
        if parent is not None and not parent.trace_flags.sampled:
            return _unsampled_child(parent)
        record = spans.Span(
            name,
            kind.value + 1,  # the API's SpanKind values are OTLP's minus one
            parent=_record_context(parent) if parent is not None else None,
            start_ns=start_time,
            scope=self._scope,
        )
        provider = self._provider
        span = Span(
            record,
            provider.limits,
            provider.owner.finished,
            record_exception,
            set_status_on_exception,
        )
        if attributes:
            span.set_attributes(attributes)
        for link in links or ():
            span.add_link(link.context, link.attributes)
        return span

    @_contextmanager
    def start_as_current_span(
        self,
        name: str,
        context=None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes=None,
        links=None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ):
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current

    def _parent(self, context) -> trace.SpanContext | None:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            return parent
        invocation = self._provider.owner.active
        if context is None and invocation is not None:
            return _api_context(invocation)
        return None


class Span(trace.Span):
    """A recording span over a coldtail span record. When it ends the record goes to `finished`;
    with `finished` None it is a view of the invocation span, which `end` leaves open and
    `close` stops changing."""

    def __init__(
        self,
        record: spans.Span,
        limits: Limits,
        finished: spans.FinishedSpans | None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> None:
        self._record = record
        self._limits = limits
        self._finished = finished
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._context = _api_context(record)
        self._lock = threading.Lock()
        self._closed = False

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._closed

    def set_attributes(self, attributes) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def set_attribute(self, key: str, value) -> None:
        value = _clean(value, self._limits.span_attribute_length)
        if not key or not isinstance(key, str) or value is None:
            return
        with self._lock:
            if not self._closed:
                record = self._record
                if not _put(record.attributes, key, value, self._limits.attributes):
                    record.dropped_attributes += 1

    def add_event(self, name: str, attributes=None, timestamp: int | None = None) -> None:
        limits = self._limits
        kept, dropped = _bounded(attributes, limits.event_attributes, limits.attribute_length)
        event = spans.Event(name, time.time_ns() if timestamp is None else timestamp, kept, dropped)
        with self._lock:
            if self._closed:
                return
            record = self._record
            if len(record.events) < limits.events:
                record.events.append(event)
            else:
                record.dropped_events += 1

    def add_link(self, context: trace.SpanContext, attributes=None) -> None:
        # The API allows ignoring a link that carries nothing.
        if context is None or not (context.is_valid or attributes or context.trace_state):
            return
        limits = self._limits
        kept, dropped = _bounded(attributes, limits.link_attributes, limits.attribute_length)
        link = spans.Link(_record_context(context), kept, dropped)
        with self._lock:
            if self._closed:
                return
            record = self._record
            if len(record.links) < limits.links:
                record.links.append(link)
            else:
                record.dropped_links += 1

    def update_name(self, name: str) -> None:
        with self._lock:
            if not self._closed:
                self._record.name = name

    def set_status(self, status, description: str | None = None) -> None:
        if isinstance(status, trace.Status):
            code, description = status.status_code, status.description
        else:
            code = status
        if code is trace.StatusCode.UNSET:
            return
        with self._lock:
            record = self._record
            if not self._closed and record.status_code != spans.STATUS_OK:
                record.set_status(code.value, description or "")

    def record_exception(
        self,
        exception: BaseException,
        attributes=None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        event_attributes = {
            "exception.type": spans.qualified_name(type(exception)),
            "exception.message": str(exception),
            "exception.stacktrace": "".join(
                traceback.format_exception(type(exception), exception, exception.__traceback__)
            ),
        }
        event_attributes.update(attributes or {})
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._finished is None:
            return
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._record.end(end_time)
        self._finished.add(self._record)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __exit__(self, exc_type, exc_value, exc_traceback) -> None:
        # As trace.use_span does: BaseExceptions that are not Exceptions are not errors.
        if isinstance(exc_value, Exception) and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_value)
            if self._set_status_on_exception:
                self.set_status(trace.StatusCode.ERROR, f"{type(exc_value).__name__}: {exc_value}")
        self.end()

    def __repr__(self) -> str:
        return f"coldtail {self._record!r}"


def provider_for(owner) -> TracerProvider:
    """coldtail's TracerProvider serving `owner`: the global one when it is coldtail's already
    (the API lets a process set its provider once, so a second Instrumentation in the same
    process takes it over), else a new one."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        current.owner = owner
        return current
    return TracerProvider(owner)


def install(provider: TracerProvider) -> bool:
    """Make `provider` the global TracerProvider unless one is set already (by the function's own
    SDK setup, or OTEL_PYTHON_TRACER_PROVIDER); returns whether it is the global one."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    return trace.get_tracer_provider() is provider


def activate(record: spans.Span, limits: Limits) -> tuple[Span, object]:
    """Make the invocation span `record` the current span; returns what `deactivate` takes. Call
    both on the same thread."""
    view = Span(record, limits, None)
    return view, context_api.attach(trace.set_span_in_context(view))


def deactivate(view: Span, token) -> None:
    view.close()
    context_api.detach(token)


def _unsampled_child(parent: trace.SpanContext) -> trace.NonRecordingSpan:
    context = trace.SpanContext(
        parent.trace_id,
        int.from_bytes(spans.new_span_id(), "big"),
        is_remote=False,
        trace_flags=parent.trace_flags,
        trace_state=parent.trace_state,
    )
    return trace.NonRecordingSpan(context)


def _api_context(record: spans.Span) -> trace.SpanContext:
    state = trace.TraceState.from_header([record.trace_state]) if record.trace_state else None
    return trace.SpanContext(
        int.from_bytes(record.trace_id, "big"),
        int.from_bytes(record.span_id, "big"),
        is_remote=False,
        trace_flags=_SAMPLED,
        trace_state=state,
    )


def _record_context(context: trace.SpanContext) -> spans.SpanContext:
    return spans.SpanContext(
        context.trace_id.to_bytes(16, "big"),
        context.span_id.to_bytes(8, "big"),
        context.trace_flags.sampled,
        context.trace_state.to_header() if context.trace_state else "",
        context.is_remote,
    )


def _clean(value, max_length: int | None):
    """`value` as an attribute holds it, strings cut to `max_length`; None when it is not an
    attribute value."""
    if isinstance(value, str):
        return value if max_length is None else value[:max_length]
    if isinstance(value, bool | int | float | bytes):
        return value
    if isinstance(value, Sequence):
        return tuple(_clean(item, max_length) for item in value)
    if isinstance(value, Mapping):
        return {
            key: _clean(item, max_length)
            for key, item in value.items()
            if key and isinstance(key, str)
        }
    return None


def _put(attributes: dict, key: str, value, limit: int) -> bool:
    """Set `key` unless that would take `attributes` past `limit`; whether it was set."""
    if key in attributes or len(attributes) < limit:
        attributes[key] = value
        return True
    return False


def _bounded(attributes, limit: int, max_length: int | None) -> tuple[dict, int]:
    """The valid ones of `attributes` up to `limit`, and how many the limit dropped."""
    kept: dict = {}
    dropped = 0
    for key, value in (attributes or {}).items():
        value = _clean(value, max_length)
        if key and isinstance(key, str) and value is not None:
            dropped += not _put(kept, key, value, limit)
    return kept, dropped
