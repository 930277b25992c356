"""Jaeger's Thrift structs (`jaeger.thrift`: Batch, Process, Span, Tag, Log, SpanRef) and the
agent's `emitBatch` message (`agent.thrift`), read with the Apache Thrift library's binary and
compact protocols into model.py.

The tables below are the IDL: field ids, wire types and requiredness as jaeger-idl declares
them. As Thrift's generated readers do, a field with an unknown id or an unexpected wire type
is skipped, and a missing required field is an error. Any malformed input is a ValueError,
whatever the library raised: bodies and datagrams come from the network.
"""

from __future__ import annotations

import struct
from typing import Any

from thrift.Thrift import TMessageType, TType

from collector.core.thrift_input import protocol
from collector.receivers.jaeger.model import (
    Batch,
    Log,
    Process,
    Ref,
    Span,
    Tag,
    unknown_tag_type,
)

_INT64 = range(-(1 << 63), 1 << 63)
_IDS = struct.Struct(">qq")
_ID = struct.Struct(">q")

# Value kinds beyond Thrift's wire types: both travel as TType.STRING.
_STRING = "string"
_BINARY = "binary"


class _List:
    def __init__(self, of: _Struct) -> None:
        self.of = of


class _Field:
    def __init__(self, name: str, kind: Any, required: bool = False) -> None:
        """`kind`: a TType, _STRING, _BINARY, a _Struct or a _List."""
        self.name, self.kind, self.required = name, kind, required
        if isinstance(kind, _Struct):
            self.wire_type = TType.STRUCT
        elif isinstance(kind, _List):
            self.wire_type = TType.LIST
        else:
            self.wire_type = TType.STRING if kind in (_STRING, _BINARY) else kind


class _Struct:
    def __init__(self, name: str, fields: dict[int, _Field]) -> None:
        self.name = name
        self.fields = fields
        self.required = frozenset(f.name for f in fields.values() if f.required)


# jaeger.thrift
TAG = _Struct(
    "Tag",
    {
        1: _Field("key", _STRING, required=True),
        2: _Field("vType", TType.I32, required=True),
        3: _Field("vStr", _STRING),
        4: _Field("vDouble", TType.DOUBLE),
        5: _Field("vBool", TType.BOOL),
        6: _Field("vLong", TType.I64),
        7: _Field("vBinary", _BINARY),
    },
)
LOG = _Struct(
    "Log",
    {
        1: _Field("timestamp", TType.I64, required=True),
        2: _Field("fields", _List(TAG), required=True),
    },
)
SPAN_REF = _Struct(
    "SpanRef",
    {
        1: _Field("refType", TType.I32, required=True),
        2: _Field("traceIdLow", TType.I64, required=True),
        3: _Field("traceIdHigh", TType.I64, required=True),
        4: _Field("spanId", TType.I64, required=True),
    },
)
SPAN = _Struct(
    "Span",
    {
        1: _Field("traceIdLow", TType.I64, required=True),
        2: _Field("traceIdHigh", TType.I64, required=True),
        3: _Field("spanId", TType.I64, required=True),
        4: _Field("parentSpanId", TType.I64, required=True),
        5: _Field("operationName", _STRING, required=True),
        6: _Field("references", _List(SPAN_REF)),
        7: _Field("flags", TType.I32, required=True),
        8: _Field("startTime", TType.I64, required=True),
        9: _Field("duration", TType.I64, required=True),
        10: _Field("tags", _List(TAG)),
        11: _Field("logs", _List(LOG)),
        12: _Field("incomplete", TType.BOOL),
    },
)
PROCESS = _Struct(
    "Process",
    {
        1: _Field("serviceName", _STRING, required=True),
        2: _Field("tags", _List(TAG)),
    },
)
BATCH = _Struct(
    "Batch",
    {
        1: _Field("process", PROCESS, required=True),
        2: _Field("spans", _List(SPAN), required=True),
        # 3: seqNo and 4: stats (ClientStats) are newer and carry nothing spans need.
    },
)
# agent.thrift: the arguments of `oneway void emitBatch(1: jaeger.Batch batch)`.
EMIT_BATCH_ARGS = _Struct("emitBatch_args", {1: _Field("batch", BATCH)})

# jaeger.thrift's TagType.
_TAG_VALUES = {0: "vStr", 1: "vDouble", 2: "vBool", 3: "vLong", 4: "vBinary"}
_TAG_DEFAULTS = {"vStr": "", "vDouble": 0.0, "vBool": False, "vLong": 0, "vBinary": b""}


class Invalid(ValueError):
    """Input that breaks the IDL (a missing required field, a list of the wrong type)."""


class UnsupportedMessage(Invalid):
    """A well-formed agent message this receiver does not take (`emitZipkinBatch`)."""


def decode_batch(data: bytes, compact: bool = False) -> Batch:
    """A `jaeger.Batch` struct, as the HTTP collector API takes it (binary protocol)."""
    return _decoding(lambda: _batch(_read_struct(protocol(data, compact), BATCH)))


def decode_agent_message(data: bytes, compact: bool) -> Batch:
    """An agent datagram: an `Agent.emitBatch` call message. UnsupportedMessage for
    `emitZipkinBatch`."""

    def read() -> Batch:
        reader = protocol(data, compact)
        name, message_type, _ = reader.readMessageBegin()
        if message_type not in (TMessageType.CALL, TMessageType.ONEWAY):
            raise Invalid(f"message type {message_type} is not a call")
        if name == "emitZipkinBatch":
            raise UnsupportedMessage("Agent.emitZipkinBatch (Zipkin spans) is not supported")
        if name != "emitBatch":
            raise Invalid(f"unknown agent method {name[:100]!r}")
        args = _read_struct(reader, EMIT_BATCH_ARGS)
        reader.readMessageEnd()
        batch = args.get("batch")
        return Batch(None, []) if batch is None else _batch(batch)

    return _decoding(read)


def _decoding(read):
    try:
        return read()
    except Invalid:
        raise
    # The library raises TProtocolException, TTransportException, EOFError, struct.error,
    # UnicodeDecodeError, KeyError and AssertionError (TCompactProtocol's state checks) on
    # malformed input; whichever it is, the input is what is wrong.
    except Exception as e:
        raise ValueError(f"malformed Thrift: {type(e).__name__}: {e}") from None


def _read_struct(protocol, spec: _Struct) -> dict[str, Any]:
    values: dict[str, Any] = {}
    protocol.readStructBegin()
    while True:
        _, wire_type, field_id = protocol.readFieldBegin()
        if wire_type == TType.STOP:
            break
        field = spec.fields.get(field_id)
        if field is None or field.wire_type != wire_type:
            protocol.skip(wire_type)
        else:
            values[field.name] = _read_value(protocol, field.kind)
        protocol.readFieldEnd()
    protocol.readStructEnd()
    missing = spec.required - values.keys()
    if missing:
        raise Invalid(f"{spec.name}: required field {min(missing)} is missing")
    return values


def _read_value(protocol, kind: Any) -> Any:
    if kind is _STRING:
        # Go's Thrift does not check UTF-8 either; protobuf strings must be valid.
        return protocol.readBinary().decode("utf-8", "replace")
    if kind is _BINARY:
        return protocol.readBinary()
    if kind == TType.I64:
        value = protocol.readI64()
        if value not in _INT64:  # a compact varint can hold 70 bits
            raise Invalid(f"i64 out of range: {value}")
        return value
    if kind == TType.I32:
        return protocol.readI32()
    if kind == TType.DOUBLE:
        return protocol.readDouble()
    if kind == TType.BOOL:
        return protocol.readBool()
    if isinstance(kind, _Struct):
        return _read_struct(protocol, kind)
    element_type, size = protocol.readListBegin()
    if element_type != TType.STRUCT:
        raise Invalid(f"list<{kind.of.name}> sent with elements of wire type {element_type}")
    items = [_read_struct(protocol, kind.of) for _ in range(size)]
    protocol.readListEnd()
    return items


# --- structs to the model ---------------------------------------------------------------------


def _batch(values: dict[str, Any]) -> Batch:
    process = values["process"]
    spans = [_span(span) for span in values["spans"] if not _blank(span)]
    return Batch(Process(process["serviceName"], _tags(process.get("tags"))), spans)


def _blank(span: dict[str, Any]) -> bool:
    """Every required field zero and no optional one sent: the OTel Collector skips it."""
    return span.keys() <= SPAN.required and not any(span.values())


def _span(values: dict[str, Any]) -> Span:
    start_us = values["startTime"]
    return Span(
        trace_id=_IDS.pack(values["traceIdHigh"], values["traceIdLow"]),
        span_id=_ID.pack(values["spanId"]),
        name=values["operationName"],
        start_ns=start_us * 1000,
        duration_ns=values["duration"] * 1000,
        parent_span_id=_ID.pack(values["parentSpanId"]),
        refs=[
            Ref(
                ref["refType"],
                _IDS.pack(ref["traceIdHigh"], ref["traceIdLow"]),
                _ID.pack(ref["spanId"]),
            )
            for ref in values.get("references") or ()
        ],
        tags=_tags(values.get("tags")) or [],
        logs=[
            Log(log["timestamp"] * 1000, _tags(log["fields"]) or [])
            for log in values.get("logs") or ()
        ],
    )


def _tags(tags: list[dict[str, Any]] | None) -> list[Tag] | None:
    if tags is None:
        return None
    out = []
    for tag in tags:
        field = _TAG_VALUES.get(tag["vType"])
        if field is None:
            out.append((tag["key"], unknown_tag_type(tag["vType"])))
        else:
            out.append((tag["key"], tag.get(field, _TAG_DEFAULTS[field])))
    return out
