"""Jaeger's data model as both wire formats carry it (Thrift `jaeger.Batch`, protobuf
`jaeger.api_v2.Batch`), decoded into one shape that `translate.py` turns into OTLP.

Ids are already bytes here (a trace id 16, a span id 8, big-endian as the Jaeger IDL says),
times nanoseconds since the epoch, and tag values the Python value of their Jaeger type (str,
bool, int, float, bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CHILD_OF = 0
FOLLOWS_FROM = 1

# A tag: (key, value).
Tag = tuple[str, Any]


@dataclass(slots=True)
class Process:
    service_name: str = ""
    tags: list[Tag] | None = None
    """None when the sender left the list out, as opposed to an empty list."""


@dataclass(slots=True)
class Ref:
    ref_type: int
    trace_id: bytes
    span_id: bytes


@dataclass(slots=True)
class Log:
    time_ns: int
    fields: list[Tag]


@dataclass(slots=True)
class Span:
    trace_id: bytes
    span_id: bytes
    name: str
    start_ns: int
    duration_ns: int
    parent_span_id: bytes = bytes(8)
    """Thrift's `parentSpanId`; protobuf has none, its parent is a reference."""
    refs: list[Ref] = field(default_factory=list)
    tags: list[Tag] = field(default_factory=list)
    logs: list[Log] = field(default_factory=list)
    process: Process | None = None
    """The span's own process (protobuf only), which takes precedence over its batch's."""


@dataclass(slots=True)
class Batch:
    process: Process | None
    spans: list[Span]


def unknown_tag_type(value_type: int) -> str:
    """The value the OTel Collector gives a tag of a type Jaeger does not define."""
    return f"<Unknown Jaeger TagType {value_type}>"
