"""Zipkin v1's Thrift body (`POST /api/v1/spans`, Content-Type application/x-thrift): a
`list<Span>` of zipkinCore.thrift in the binary protocol, read with the Apache Thrift library's
pure-Python protocol into model.py's v1 spans.

The tables below are the IDL: field ids and wire types as zipkinCore.thrift declares them
(none is required), read by core/thrift_input.py.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from thrift.Thrift import TType

from collector.core.thrift_input import BINARY, Field, Struct, decoding, protocol, read_list
from collector.receivers.zipkin.model import (
    BinaryAnnotation,
    Endpoint,
    TagValue,
    V1Annotation,
    V1Span,
    ip_text,
    nonzero,
)

ENDPOINT = Struct(
    "Endpoint",
    {
        1: Field("ipv4", TType.I32),
        2: Field("port", TType.I16),
        3: Field("service_name", TType.STRING),
        4: Field("ipv6", TType.STRING, BINARY),
    },
)
ANNOTATION = Struct(
    "Annotation",
    {
        1: Field("timestamp", TType.I64),
        2: Field("value", TType.STRING),
        3: Field("host", TType.STRUCT, ENDPOINT),
    },
)
BINARY_ANNOTATION = Struct(
    "BinaryAnnotation",
    {
        1: Field("key", TType.STRING),
        2: Field("value", TType.STRING, BINARY),
        3: Field("annotation_type", TType.I32),
        4: Field("host", TType.STRUCT, ENDPOINT),
    },
)
SPAN = Struct(
    "Span",
    {
        1: Field("trace_id", TType.I64),
        3: Field("name", TType.STRING),
        4: Field("id", TType.I64),
        5: Field("parent_id", TType.I64),
        6: Field("annotations", TType.LIST, ANNOTATION),
        8: Field("binary_annotations", TType.LIST, BINARY_ANNOTATION),
        9: Field("debug", TType.BOOL),
        10: Field("timestamp", TType.I64),
        11: Field("duration", TType.I64),
        12: Field("trace_id_high", TType.I64),
    },
)

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
    raw = decoding(lambda: read_list(reader, SPAN))
    spans = []
    for i, values in enumerate(raw):
        try:
            spans.append(_span(values))
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
    return spans


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
