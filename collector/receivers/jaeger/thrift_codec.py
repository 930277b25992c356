"""Jaeger's Thrift structs (`jaeger.thrift`: Batch, Process, Span, Tag, Log, SpanRef) and the
agent's `emitBatch` message (`agent.thrift`), read with the Apache Thrift library's binary and
compact protocols into model.py.

The tables below are the IDL: field ids, wire types and requiredness as jaeger-idl declares
them, read by core/thrift_input.py.
"""

from __future__ import annotations

import struct
from typing import Any

from thrift.Thrift import TMessageType, TType

from collector.core.thrift_input import (
    BINARY,
    Field,
    Invalid,
    Struct,
    decoding,
    protocol,
    read_struct,
)
from collector.receivers.jaeger.model import (
    Batch,
    Log,
    Process,
    Ref,
    Span,
    Tag,
    unknown_tag_type,
)

_IDS = struct.Struct(">qq")
_ID = struct.Struct(">q")


def _list(name: str, of: Struct, required: bool = False) -> Field:
    return Field(name, TType.LIST, of, required)


# jaeger.thrift
TAG = Struct(
    "Tag",
    {
        1: Field("key", TType.STRING, required=True),
        2: Field("vType", TType.I32, required=True),
        3: Field("vStr", TType.STRING),
        4: Field("vDouble", TType.DOUBLE),
        5: Field("vBool", TType.BOOL),
        6: Field("vLong", TType.I64),
        7: Field("vBinary", TType.STRING, BINARY),
    },
)
LOG = Struct(
    "Log",
    {
        1: Field("timestamp", TType.I64, required=True),
        2: _list("fields", TAG, required=True),
    },
)
SPAN_REF = Struct(
    "SpanRef",
    {
        1: Field("refType", TType.I32, required=True),
        2: Field("traceIdLow", TType.I64, required=True),
        3: Field("traceIdHigh", TType.I64, required=True),
        4: Field("spanId", TType.I64, required=True),
    },
)
SPAN = Struct(
    "Span",
    {
        1: Field("traceIdLow", TType.I64, required=True),
        2: Field("traceIdHigh", TType.I64, required=True),
        3: Field("spanId", TType.I64, required=True),
        4: Field("parentSpanId", TType.I64, required=True),
        5: Field("operationName", TType.STRING, required=True),
        6: _list("references", SPAN_REF),
        7: Field("flags", TType.I32, required=True),
        8: Field("startTime", TType.I64, required=True),
        9: Field("duration", TType.I64, required=True),
        10: _list("tags", TAG),
        11: _list("logs", LOG),
        12: Field("incomplete", TType.BOOL),
    },
)
PROCESS = Struct(
    "Process",
    {
        1: Field("serviceName", TType.STRING, required=True),
        2: _list("tags", TAG),
    },
)
BATCH = Struct(
    "Batch",
    {
        1: Field("process", TType.STRUCT, PROCESS, required=True),
        2: _list("spans", SPAN, required=True),
        # 3: seqNo and 4: stats (ClientStats) are newer and carry nothing spans need.
    },
)
# agent.thrift: the arguments of `oneway void emitBatch(1: jaeger.Batch batch)`.
EMIT_BATCH_ARGS = Struct("emitBatch_args", {1: Field("batch", TType.STRUCT, BATCH)})

# jaeger.thrift's TagType.
_TAG_VALUES = {0: "vStr", 1: "vDouble", 2: "vBool", 3: "vLong", 4: "vBinary"}
_TAG_DEFAULTS = {"vStr": "", "vDouble": 0.0, "vBool": False, "vLong": 0, "vBinary": b""}


class UnsupportedMessage(Invalid):
    """A well-formed agent message this receiver does not take (`emitZipkinBatch`)."""


def decode_batch(data: bytes, compact: bool = False) -> Batch:
    """A `jaeger.Batch` struct, as the HTTP collector API takes it (binary protocol)."""
    return decoding(lambda: _batch(read_struct(protocol(data, compact), BATCH)))


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
        args = read_struct(reader, EMIT_BATCH_ARGS)
        reader.readMessageEnd()
        batch = args.get("batch")
        return Batch(None, []) if batch is None else _batch(batch)

    return decoding(read)


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
