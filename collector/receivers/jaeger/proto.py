"""Jaeger's protobuf API (`jaeger.api_v2`: model.proto's Batch and its parts, collector.proto's
PostSpansRequest), built at import from the field numbers jaeger-idl declares, so that no
generated code or protoc step is needed; and the request decoded into model.py.

The messages live in a private descriptor pool (collector.core.proto_schema): another package
defining `jaeger.api_v2` in the default pool cannot clash with them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, duration_pb2, timestamp_pb2
from google.protobuf.message import DecodeError

from collector.core.proto_schema import OPTIONAL, REPEATED, F, Field, add_fields, message_classes
from collector.receivers.jaeger.model import (
    Batch,
    Log,
    Process,
    Ref,
    Span,
    Tag,
    unknown_tag_type,
)

SERVICE = "jaeger.api_v2.CollectorService"
METHOD = "PostSpans"

# message -> [(field name, number, type, label, message or enum type name)], as in
# jaeger-idl's proto/api_v2/model.proto and collector.proto.
_MESSAGES: dict[str, list[Field]] = {
    "KeyValue": [
        ("key", 1, F.TYPE_STRING, OPTIONAL, ""),
        ("v_type", 2, F.TYPE_ENUM, OPTIONAL, ".jaeger.api_v2.ValueType"),
        ("v_str", 3, F.TYPE_STRING, OPTIONAL, ""),
        ("v_bool", 4, F.TYPE_BOOL, OPTIONAL, ""),
        ("v_int64", 5, F.TYPE_INT64, OPTIONAL, ""),
        ("v_float64", 6, F.TYPE_DOUBLE, OPTIONAL, ""),
        ("v_binary", 7, F.TYPE_BYTES, OPTIONAL, ""),
    ],
    "Log": [
        ("timestamp", 1, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
        ("fields", 2, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.KeyValue"),
    ],
    "SpanRef": [
        ("trace_id", 1, F.TYPE_BYTES, OPTIONAL, ""),
        ("span_id", 2, F.TYPE_BYTES, OPTIONAL, ""),
        ("ref_type", 3, F.TYPE_ENUM, OPTIONAL, ".jaeger.api_v2.SpanRefType"),
    ],
    "Process": [
        ("service_name", 1, F.TYPE_STRING, OPTIONAL, ""),
        ("tags", 2, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.KeyValue"),
    ],
    "Span": [
        ("trace_id", 1, F.TYPE_BYTES, OPTIONAL, ""),
        ("span_id", 2, F.TYPE_BYTES, OPTIONAL, ""),
        ("operation_name", 3, F.TYPE_STRING, OPTIONAL, ""),
        ("references", 4, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.SpanRef"),
        ("flags", 5, F.TYPE_UINT32, OPTIONAL, ""),
        ("start_time", 6, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Timestamp"),
        ("duration", 7, F.TYPE_MESSAGE, OPTIONAL, ".google.protobuf.Duration"),
        ("tags", 8, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.KeyValue"),
        ("logs", 9, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.Log"),
        ("process", 10, F.TYPE_MESSAGE, OPTIONAL, ".jaeger.api_v2.Process"),
        ("process_id", 11, F.TYPE_STRING, OPTIONAL, ""),
        ("warnings", 12, F.TYPE_STRING, REPEATED, ""),
    ],
    "Batch": [
        ("spans", 1, F.TYPE_MESSAGE, REPEATED, ".jaeger.api_v2.Span"),
        ("process", 2, F.TYPE_MESSAGE, OPTIONAL, ".jaeger.api_v2.Process"),
    ],
    "PostSpansRequest": [
        ("batch", 1, F.TYPE_MESSAGE, OPTIONAL, ".jaeger.api_v2.Batch"),
    ],
    "PostSpansResponse": [],
}
_ENUMS = {
    "ValueType": ["STRING", "BOOL", "INT64", "FLOAT64", "BINARY"],
    "SpanRefType": ["CHILD_OF", "FOLLOWS_FROM"],
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="coldtail/jaeger/api_v2.proto",
        package="jaeger.api_v2",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto", "google/protobuf/duration.proto"],
    )
    for name, values in _ENUMS.items():
        enum = file.enum_type.add(name=name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    for name, fields in _MESSAGES.items():
        add_fields(file.message_type.add(name=name), fields)
    service = file.service.add(name="CollectorService")
    service.method.add(
        name=METHOD,
        input_type=".jaeger.api_v2.PostSpansRequest",
        output_type=".jaeger.api_v2.PostSpansResponse",
    )
    return file


MESSAGES = message_classes(_file(), _MESSAGES, (timestamp_pb2, duration_pb2))
PostSpansRequest = MESSAGES["PostSpansRequest"]
PostSpansResponse = MESSAGES["PostSpansResponse"]

_VALUE_FIELDS = {0: "v_str", 1: "v_bool", 2: "v_int64", 3: "v_float64", 4: "v_binary"}


def decode_post_spans(data: bytes) -> Batch:
    """The batch of a PostSpansRequest; ValueError when it is not one."""
    try:
        request: Any = PostSpansRequest.FromString(data)
    except (DecodeError, RecursionError) as e:
        raise ValueError(f"not a jaeger.api_v2.PostSpansRequest: {e}") from None
    batch = request.batch
    spans = []
    for i, span in enumerate(batch.spans):
        if span.ByteSize() == 0:
            continue  # an empty span: the OTel Collector skips it
        try:
            spans.append(_span(span))
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
    return Batch(_process(batch.process) if batch.HasField("process") else None, spans)


def _process(process) -> Process:
    return Process(process.service_name, _tags(process.tags) if process.tags else None)


def _span(span) -> Span:
    trace_id = _trace_id(span.trace_id)
    return Span(
        trace_id=trace_id,
        span_id=_span_id(span.span_id),
        name=span.operation_name,
        start_ns=_time_ns(span.start_time),
        duration_ns=_time_ns(span.duration),
        refs=[
            Ref(ref.ref_type, _trace_id(ref.trace_id), _span_id(ref.span_id))
            for ref in span.references
        ],
        tags=_tags(span.tags),
        logs=[Log(_time_ns(log.timestamp), _tags(log.fields)) for log in span.logs],
        process=_process(span.process) if span.HasField("process") else None,
    )


def _trace_id(data: bytes) -> bytes:
    """16 bytes from Jaeger's 16 (high, low) or 8 (low only); none is zero."""
    if len(data) == 16:
        return data
    if len(data) in (0, 8):
        return data.rjust(16, b"\0")
    raise ValueError(f"invalid trace_id: {len(data)} bytes, expected 16 or 8")


def _span_id(data: bytes) -> bytes:
    if len(data) == 8:
        return data
    if not data:
        return bytes(8)
    raise ValueError(f"invalid span_id: {len(data)} bytes, expected 8")


def _time_ns(value) -> int:
    """A Timestamp or a Duration in nanoseconds."""
    return value.seconds * 1_000_000_000 + value.nanos


def _tags(tags) -> list[Tag]:
    out = []
    for tag in tags:
        field = _VALUE_FIELDS.get(tag.v_type)
        value = getattr(tag, field) if field else unknown_tag_type(tag.v_type)
        out.append((tag.key, value))
    return out
