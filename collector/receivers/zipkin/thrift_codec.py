"""Zipkin v1's Thrift body (`POST /api/v1/spans`, Content-Type application/x-thrift): a
`list<Span>` of zipkinCore.thrift in the binary protocol, read with the Apache Thrift library's
pure-Python protocol into model.py's v1 spans.

The tables below are the IDL: field ids and wire types as zipkinCore.thrift declares them
(none is required). As Thrift's generated readers do, a field with an unknown id or an
unexpected wire type is skipped. Any malformed input is a ValueError, whatever the library
raised: bodies come from the network.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, NamedTuple

from thrift.Thrift import TType

from collector.core.thrift_input import protocol
from collector.receivers.zipkin.model import (
    BinaryAnnotation,
    Endpoint,
    TagValue,
    V1Annotation,
    V1Span,
    ip_text,
    nonzero,
)

_BINARY = "binary"  # a STRING on the wire that is bytes, not text


class _Field(NamedTuple):
    name: str
    wire_type: int
    of: Any = None
    """The struct of a STRUCT field or of a LIST's elements; _BINARY for bytes."""


_Struct = dict[int, _Field]

ENDPOINT: _Struct = {
    1: _Field("ipv4", TType.I32),
    2: _Field("port", TType.I16),
    3: _Field("service_name", TType.STRING),
    4: _Field("ipv6", TType.STRING, _BINARY),
}
ANNOTATION: _Struct = {
    1: _Field("timestamp", TType.I64),
    2: _Field("value", TType.STRING),
    3: _Field("host", TType.STRUCT, ENDPOINT),
}
BINARY_ANNOTATION: _Struct = {
    1: _Field("key", TType.STRING),
    2: _Field("value", TType.STRING, _BINARY),
    3: _Field("annotation_type", TType.I32),
    4: _Field("host", TType.STRUCT, ENDPOINT),
}
SPAN: _Struct = {
    1: _Field("trace_id", TType.I64),
    3: _Field("name", TType.STRING),
    4: _Field("id", TType.I64),
    5: _Field("parent_id", TType.I64),
    6: _Field("annotations", TType.LIST, ANNOTATION),
    8: _Field("binary_annotations", TType.LIST, BINARY_ANNOTATION),
    9: _Field("debug", TType.BOOL),
    10: _Field("timestamp", TType.I64),
    11: _Field("duration", TType.I64),
    12: _Field("trace_id_high", TType.I64),
}

# zipkinCore.thrift's AnnotationType.
BOOL, BYTES, I16, I32, I64, DOUBLE, STRING = range(7)
_NUMBERS = {
    I16: struct.Struct(">h"),
    I32: struct.Struct(">i"),
    I64: struct.Struct(">q"),
    DOUBLE: struct.Struct(">d"),
}
_ID = struct.Struct(">q")


def decode(body: bytes) -> list[V1Span]:
    """The spans of a Thrift `list<Span>`; ValueError saying what is wrong."""
    reader = protocol(body)
    try:
        raw = _read_list(reader, SPAN)
    except ValueError:
        raise
    # The library raises TProtocolException, TTransportException, EOFError, struct.error and
    # others on malformed input; whichever it is, the input is what is wrong.
    except Exception as e:
        raise ValueError(f"malformed Thrift: {type(e).__name__}: {e}") from None
    spans = []
    for i, values in enumerate(raw):
        try:
            spans.append(_span(values))
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
    return spans


def _read_list(protocol, of: _Struct) -> list[dict[str, Any]]:
    element_type, size = protocol.readListBegin()
    if element_type != TType.STRUCT:
        raise ValueError(f"expected a list of structs, got elements of wire type {element_type}")
    items = [_read_struct(protocol, of) for _ in range(size)]
    protocol.readListEnd()
    return items


def _read_struct(protocol, fields: _Struct) -> dict[str, Any]:
    values: dict[str, Any] = {}
    protocol.readStructBegin()
    while True:
        _, wire_type, field_id = protocol.readFieldBegin()
        if wire_type == TType.STOP:
            break
        field = fields.get(field_id)
        if field is None or field.wire_type != wire_type:
            protocol.skip(wire_type)
        else:
            values[field.name] = _read_value(protocol, field)
        protocol.readFieldEnd()
    protocol.readStructEnd()
    return values


def _read_value(protocol, field: _Field) -> Any:
    wire_type = field.wire_type
    if wire_type == TType.STRING:
        data = protocol.readBinary()
        return data if field.of is _BINARY else data.decode("utf-8", "replace")
    if wire_type == TType.I64:
        return protocol.readI64()
    if wire_type == TType.I32:
        return protocol.readI32()
    if wire_type == TType.I16:
        return protocol.readI16()
    if wire_type == TType.BOOL:
        return protocol.readBool()
    if wire_type == TType.STRUCT:
        return _read_struct(protocol, field.of)
    return _read_list(protocol, field.of)


# --- structs to the model ---------------------------------------------------------------------


def _span(values: dict[str, Any]) -> V1Span:
    trace_id = _ID.pack(values.get("trace_id_high", 0)) + _ID.pack(values.get("trace_id", 0))
    parent_id = values.get("parent_id", 0)
    return V1Span(
        trace_id=nonzero(trace_id, "trace_id"),
        span_id=nonzero(_ID.pack(values.get("id", 0)), "id"),
        parent_id=_ID.pack(parent_id) if parent_id else b"",
        name=values.get("name", ""),
        timestamp_us=_micros(values.get("timestamp", 0), "timestamp"),
        duration_us=_micros(values.get("duration", 0), "duration"),
        annotations=[
            V1Annotation(
                _micros(a.get("timestamp", 0), "annotation timestamp"),
                a.get("value", ""),
                _endpoint(a.get("host")),
            )
            for a in values.get("annotations", ())
        ],
        binary_annotations=[_binary_annotation(b) for b in values.get("binary_annotations", ())],
        debug=values.get("debug", False),
    )


def _micros(value: int, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what}: {value} is negative")
    return value


def _endpoint(values: dict[str, Any] | None) -> Endpoint | None:
    if values is None:
        return None
    ipv4 = values.get("ipv4", 0) & 0xFFFFFFFF
    return Endpoint(
        service_name=values.get("service_name", ""),
        ipv4=ip_text(ipv4.to_bytes(4, "big"), 4, "ipv4") if ipv4 else "",
        ipv6=ip_text(values.get("ipv6", b""), 16, "ipv6"),
        # An i16 that is to be read as unsigned, zipkinCore.thrift says.
        port=values.get("port", 0) & 0xFFFF,
    )


def _binary_annotation(values: dict[str, Any]) -> BinaryAnnotation:
    kind = values.get("annotation_type", BOOL)
    data = values.get("value", b"")
    value: TagValue
    final = True
    if kind == BOOL:
        value = data == b"\x01"
    elif kind == BYTES:
        value = base64.b64encode(data).decode("ascii")
    elif kind == STRING:
        value, final = data.decode("utf-8", "replace"), False
    elif kind in _NUMBERS:
        number = _NUMBERS[kind]
        if len(data) < number.size:
            value = "<not enough bytes representing the number>"
        else:
            (value,) = number.unpack_from(data)
    else:
        value = f"<unknown zipkin v1 binary annotation type ({kind})>"
    return BinaryAnnotation(
        values.get("key", ""), value, _endpoint(values.get("host")), final=final
    )
