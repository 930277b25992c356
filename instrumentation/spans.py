"""A small span record: what the instrumentation builds and `otlp` encodes.

Ids are W3C trace-context ids: 16-byte trace ids and 8-byte span ids from os.urandom, never all
zero. Times are Unix epoch nanoseconds. A Span is owned by one thread at a time; the handler hands
it to the exporter only once it has ended (or as a `snapshot`). `FinishedSpans` collects the
spans that end on any thread between two exports.
"""

from __future__ import annotations

import os
import threading
import time

from instrumentation import __version__

# OTLP enum values (opentelemetry.proto.trace.v1.Span.SpanKind and Status.StatusCode).
KIND_INTERNAL = 1
KIND_SERVER = 2
KIND_CLIENT = 3
KIND_PRODUCER = 4
KIND_CONSUMER = 5

STATUS_UNSET = 0
STATUS_OK = 1
STATUS_ERROR = 2

# The instrumentation scope of the spans coldtail makes itself: (name, version).
SCOPE = ("coldtail.instrumentation", __version__)

_INVALID_TRACE_ID = bytes(16)
_INVALID_SPAN_ID = bytes(8)


def new_trace_id() -> bytes:
    while True:
        trace_id = os.urandom(16)
        if trace_id != _INVALID_TRACE_ID:
            return trace_id


def new_span_id() -> bytes:
    while True:
        span_id = os.urandom(8)
        if span_id != _INVALID_SPAN_ID:
            return span_id


class SpanContext:
    """A parent or link target: ids as bytes, `sampled` from the trace flags, `remote` when it
    was propagated from another process."""

    __slots__ = ("remote", "sampled", "span_id", "trace_id", "trace_state")

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        sampled: bool = True,
        trace_state: str = "",
        remote: bool = True,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.trace_state = trace_state
        self.remote = remote

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpanContext) and (
            (self.trace_id, self.span_id, self.sampled, self.trace_state, self.remote)
            == (other.trace_id, other.span_id, other.sampled, other.trace_state, other.remote)
        )

    def __hash__(self) -> int:
        return hash((self.trace_id, self.span_id))

    def __repr__(self) -> str:
        return f"SpanContext({self.trace_id.hex()}, {self.span_id.hex()}, sampled={self.sampled})"


class Event:
    __slots__ = ("attributes", "dropped_attributes", "name", "time_ns")

    def __init__(
        self, name: str, time_ns: int, attributes: dict | None = None, dropped_attributes: int = 0
    ) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes or {}
        self.dropped_attributes = dropped_attributes


class Link:
    __slots__ = ("attributes", "context", "dropped_attributes")

    def __init__(
        self, context: SpanContext, attributes: dict | None = None, dropped_attributes: int = 0
    ) -> None:
        self.context = context
        self.attributes = attributes or {}
        self.dropped_attributes = dropped_attributes


class Span:
    """One span. Attribute values are what otlp.any_value encodes (str, bool, int, float, bytes,
    and sequences and str-keyed mappings of those); None values are not stored. The `dropped_*`
    counts are what the limits of instrumentation.api left out."""

    __slots__ = (
        "attributes",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_ns",
        "events",
        "kind",
        "links",
        "name",
        "parent_remote",
        "parent_span_id",
        "scope",
        "span_id",
        "start_ns",
        "status_code",
        "status_message",
        "trace_id",
        "trace_state",
    )

    def __init__(
        self,
        name: str,
        kind: int = KIND_INTERNAL,
        parent: SpanContext | None = None,
        start_ns: int | None = None,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
        scope: tuple[str, str] = SCOPE,
    ) -> None:
        self.name = name
        self.kind = kind
        if parent is not None:
            self.trace_id = parent.trace_id
            self.parent_span_id = parent.span_id
            self.parent_remote = parent.remote
            self.trace_state = parent.trace_state
        else:
            self.trace_id = trace_id or new_trace_id()
            self.parent_span_id = b""
            self.parent_remote = False
            self.trace_state = ""
        self.span_id = span_id or new_span_id()
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.end_ns = 0
        self.attributes: dict = {}
        self.events: list[Event] = []
        self.links: list[Link] = []
        self.status_code = STATUS_UNSET
        self.status_message = ""
        self.scope = scope
        self.dropped_attributes = 0
        self.dropped_events = 0
        self.dropped_links = 0

    @property
    def context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, True, self.trace_state, remote=False)

    @property
    def ended(self) -> bool:
        return self.end_ns != 0

    def set_attribute(self, key: str, value) -> None:
        if value is not None:
            self.attributes[key] = value

    def set_attributes(self, attributes: dict) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: dict | None = None, time_ns: int | None = None):
        self.events.append(Event(name, time.time_ns() if time_ns is None else time_ns, attributes))

    def add_link(self, context: SpanContext, attributes: dict | None = None) -> None:
        self.links.append(Link(context, attributes))

    def set_status(self, code: int, message: str = "") -> None:
        self.status_code = code
        # The OTLP spec gives a description only to ERROR.
        self.status_message = message if code == STATUS_ERROR else ""

    def record_exception(self, exc: BaseException) -> None:
        """Add the semantic-convention "exception" event, copy its attributes onto the span
        (where backends that ignore events still show them) and set status ERROR."""
        import traceback

        attributes = {
            "exception.type": qualified_name(type(exc)),
            "exception.message": str(exc),
            "exception.stacktrace": "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            ),
        }
        self.add_event("exception", attributes)
        self.set_attributes(attributes)
        self.set_status(STATUS_ERROR, f"{type(exc).__name__}: {exc}")

    def end(self, end_ns: int | None = None) -> None:
        if not self.end_ns:
            self.end_ns = time.time_ns() if end_ns is None else end_ns

    def snapshot(self, span_id: bytes | None = None) -> Span:
        """A copy under a new span id (same trace, parent, name, kind and attributes), for a
        report sent while this span is still open."""
        copy = Span(self.name, self.kind, start_ns=self.start_ns, trace_id=self.trace_id)
        copy.span_id = span_id or new_span_id()
        copy.parent_span_id = self.parent_span_id
        copy.parent_remote = self.parent_remote
        copy.trace_state = self.trace_state
        copy.attributes = dict(self.attributes)
        copy.events = list(self.events)
        copy.links = list(self.links)
        copy.status_code = self.status_code
        copy.status_message = self.status_message
        copy.scope = self.scope
        copy.dropped_attributes = self.dropped_attributes
        copy.dropped_events = self.dropped_events
        copy.dropped_links = self.dropped_links
        return copy

    def __repr__(self) -> str:
        return f"Span({self.name!r}, {self.trace_id.hex()}/{self.span_id.hex()})"


class FinishedSpans:
    """Spans that ended, from any thread, waiting for the next export. Holds at most `capacity`:
    past it the oldest are dropped and counted."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._spans: list[Span] = []
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, span: Span) -> None:
        with self._lock:
            if len(self._spans) >= self.capacity:
                del self._spans[0]
                self._dropped += 1
            self._spans.append(span)

    def drain(self) -> tuple[list[Span], int]:
        """The spans held, oldest first, and how many were dropped since the last drain."""
        with self._lock:
            spans, self._spans = self._spans, []
            dropped, self._dropped = self._dropped, 0
        return spans, dropped


def qualified_name(cls: type) -> str:
    """The semantic conventions' spelling of a type (exception.type, error.type): module and
    qualified name, without the module for builtins."""
    module = cls.__module__
    if module in ("builtins", "__main__", None):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
