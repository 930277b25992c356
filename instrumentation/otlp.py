"""A protobuf writer for one message: opentelemetry.proto ExportTraceServiceRequest.

Why hand-written: importing the generated classes
(`opentelemetry.proto.collector.trace.v1.trace_service_pb2`) costs about 48 ms and the OTel SDK's
OTLP/HTTP exporter about 227 ms, all paid in the function's cold start. Coldtail aims at a
cold-start overhead under 20% of the opentelemetry-lambda layer's (~350 ms), which leaves no room
for those imports; writing varints and length-delimited fields for the handful of messages a
trace export needs takes a few hundred lines and no import beyond the standard library. The tests
decode this output with opentelemetry-proto and compare it field by field.

Field numbers are those of opentelemetry/proto/{collector/trace,trace,common,resource}/v1.
Scalar fields at their default value are left out, as proto3 does, except inside AnyValue, whose
oneof must be written even when empty, 0 or false.
"""

from __future__ import annotations

from instrumentation.spans import Span

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# Wire types.
_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

# Span.flags and Link.flags: the W3C trace flags (bit 0 sampled) plus "has is_remote" and
# "is_remote" of the parent or linked span (bits 8 and 9, opentelemetry.proto.trace.v1.SpanFlags).
_FLAGS_SAMPLED = 0x01
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200


def encode_export_request(resource: dict, spans: list[Span]) -> bytes:
    """One ResourceSpans with `resource` as its attributes and one ScopeSpans per distinct
    `Span.scope` (in order of first appearance)."""
    by_scope: dict[tuple[str, str], list[bytes]] = {}
    for span in spans:
        by_scope.setdefault(span.scope, []).append(_span(span))
    scope_spans = [
        _len_field(1, _scope(name, version)) + b"".join(_len_field(2, s) for s in encoded)
        for (name, version), encoded in by_scope.items()
    ]
    resource_spans = _len_field(1, _attributes(1, resource)) + b"".join(
        _len_field(2, s) for s in scope_spans
    )
    return _len_field(1, resource_spans)


def _scope(name: str, version: str) -> bytes:
    return _string(1, name) + _string(2, version)


def _span(span: Span) -> bytes:
    parts = [
        _bytes(1, span.trace_id),
        _bytes(2, span.span_id),
        _string(3, span.trace_state),
        _bytes(4, span.parent_span_id),
        _string(5, span.name),
        _key(6, _VARINT) + _varint(span.kind),
        _key(7, _FIXED64) + span.start_ns.to_bytes(8, "little"),
        _key(8, _FIXED64) + span.end_ns.to_bytes(8, "little"),
        _attributes(9, span.attributes),
        _uint(10, span.dropped_attributes),
    ]
    for event in span.events:
        event_body = (
            _key(1, _FIXED64)
            + event.time_ns.to_bytes(8, "little")
            + _string(2, event.name)
            + _attributes(3, event.attributes)
            + _uint(4, event.dropped_attributes)
        )
        parts.append(_len_field(11, event_body))
    parts.append(_uint(12, span.dropped_events))
    for link in span.links:
        context = link.context
        link_body = (
            _bytes(1, context.trace_id)
            + _bytes(2, context.span_id)
            + _string(3, context.trace_state)
            + _attributes(4, link.attributes)
            + _uint(5, link.dropped_attributes)
            + _key(6, _FIXED32)
            + _trace_flags(context.sampled, context.remote).to_bytes(4, "little")
        )
        parts.append(_len_field(13, link_body))
    parts.append(_uint(14, span.dropped_links))
    status = _string(2, span.status_message)
    if span.status_code:
        status += _key(3, _VARINT) + _varint(span.status_code)
    if status:
        parts.append(_len_field(15, status))
    parts.append(_key(16, _FIXED32) + _trace_flags(True, span.parent_remote).to_bytes(4, "little"))
    return b"".join(parts)


def _trace_flags(sampled: bool, remote: bool) -> int:
    flags = _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if remote else 0)
    return flags | (_FLAGS_SAMPLED if sampled else 0)


def _attributes(field: int, attributes: dict) -> bytes:
    """Repeated KeyValue; None values are left out."""
    return b"".join(
        _len_field(field, _string(1, str(key)) + _len_field(2, any_value(value)))
        for key, value in attributes.items()
        if value is not None
    )


def any_value(value) -> bytes:
    """The AnyValue message for a Python value: str, bool, int (outside int64: its decimal
    string, so nothing is lost), float, bytes, list/tuple (ArrayValue), dict (KeyValueList);
    None is the empty AnyValue; anything else its str()."""
    if isinstance(value, str):
        return _len_field(1, value.encode("utf-8", "replace"))
    if isinstance(value, bool):
        return _key(2, _VARINT) + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return _key(3, _VARINT) + _varint(value)
        return _len_field(1, str(value).encode())
    if isinstance(value, float):
        import struct

        return _key(4, _FIXED64) + struct.pack("<d", value)
    if isinstance(value, list | tuple):
        return _len_field(5, b"".join(_len_field(1, any_value(v)) for v in value))
    if isinstance(value, dict):
        return _len_field(6, _attributes(1, value))
    if isinstance(value, bytes | bytearray):
        return _len_field(7, bytes(value))
    if value is None:
        return b""
    return _len_field(1, str(value).encode("utf-8", "replace"))


def _varint(value: int) -> bytes:
    if value < 0:
        # int64 in two's complement: always ten bytes on the wire.
        value += 1 << 64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + payload


def _uint(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + _varint(value) if value else b""


def _bytes(field: int, value: bytes) -> bytes:
    return _len_field(field, value) if value else b""


def _string(field: int, value: str) -> bytes:
    return _len_field(field, value.encode("utf-8", "replace")) if value else b""
