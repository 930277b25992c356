"""Zipkin's protobuf model (openzipkin/zipkin-api's zipkin.proto, package `zipkin.proto3`),
built at import from its field numbers, so that no generated code or protoc step is needed;
and a `ListOfSpans` body read into model.py's v2 spans.

The messages live in a private descriptor pool (collector.core.proto_schema): tracers that
register their own generated `zipkin.proto3` in the default pool (py_zipkin does) cannot clash
with them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from collector.core.proto_schema import OPTIONAL, REPEATED, F, Field, add_fields, message_classes
from collector.receivers.zipkin.model import Annotation, Endpoint, Span, byte_id, ip_text, port

_PACKAGE = "zipkin.proto3"

# message -> [(field name, number, type, label, message or enum type name)], as zipkin.proto.
_MESSAGES: dict[str, list[Field]] = {
    "Span": [
        ("trace_id", 1, F.TYPE_BYTES, OPTIONAL, ""),
        ("parent_id", 2, F.TYPE_BYTES, OPTIONAL, ""),
        ("id", 3, F.TYPE_BYTES, OPTIONAL, ""),
        ("kind", 4, F.TYPE_ENUM, OPTIONAL, ".zipkin.proto3.Span.Kind"),
        ("name", 5, F.TYPE_STRING, OPTIONAL, ""),
        ("timestamp", 6, F.TYPE_FIXED64, OPTIONAL, ""),
        ("duration", 7, F.TYPE_UINT64, OPTIONAL, ""),
        ("local_endpoint", 8, F.TYPE_MESSAGE, OPTIONAL, ".zipkin.proto3.Endpoint"),
        ("remote_endpoint", 9, F.TYPE_MESSAGE, OPTIONAL, ".zipkin.proto3.Endpoint"),
        ("annotations", 10, F.TYPE_MESSAGE, REPEATED, ".zipkin.proto3.Annotation"),
        ("tags", 11, F.TYPE_MESSAGE, REPEATED, ".zipkin.proto3.Span.TagsEntry"),
        ("debug", 12, F.TYPE_BOOL, OPTIONAL, ""),
        ("shared", 13, F.TYPE_BOOL, OPTIONAL, ""),
    ],
    "Endpoint": [
        ("service_name", 1, F.TYPE_STRING, OPTIONAL, ""),
        ("ipv4", 2, F.TYPE_BYTES, OPTIONAL, ""),
        ("ipv6", 3, F.TYPE_BYTES, OPTIONAL, ""),
        ("port", 4, F.TYPE_INT32, OPTIONAL, ""),
    ],
    "Annotation": [
        ("timestamp", 1, F.TYPE_FIXED64, OPTIONAL, ""),
        ("value", 2, F.TYPE_STRING, OPTIONAL, ""),
    ],
    "ListOfSpans": [
        ("spans", 1, F.TYPE_MESSAGE, REPEATED, ".zipkin.proto3.Span"),
    ],
}
# Span.Kind, by number.
_KINDS = ["SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="coldtail/zipkin/zipkin.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        add_fields(message, fields)
        if name == "Span":
            kind = message.enum_type.add(name="Kind")
            for number, value in enumerate(_KINDS):
                kind.value.add(name=value, number=number)
            # `map<string, string> tags` is a repeated nested entry message.
            entry = message.nested_type.add(name="TagsEntry")
            entry.options.map_entry = True
            add_fields(
                entry,
                [
                    ("key", 1, F.TYPE_STRING, OPTIONAL, ""),
                    ("value", 2, F.TYPE_STRING, OPTIONAL, ""),
                ],
            )
    return file


MESSAGES = message_classes(_file(), _MESSAGES)
ListOfSpans = MESSAGES["ListOfSpans"]


def decode(body: bytes) -> list[Span]:
    """The spans of a ListOfSpans; ValueError when it is not one or a span is malformed."""
    try:
        message: Any = ListOfSpans.FromString(body)
    except (DecodeError, RecursionError) as e:
        raise ValueError(f"not a zipkin.proto3.ListOfSpans: {e}") from None
    spans = []
    for i, span in enumerate(message.spans):
        try:
            spans.append(_span(span))
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
    return spans


def _span(span: Any) -> Span:
    kind = _KINDS[span.kind] if 0 < span.kind < len(_KINDS) else ""
    return Span(
        trace_id=byte_id(span.trace_id, 16, "trace_id"),
        span_id=byte_id(span.id, 8, "id"),
        parent_id=byte_id(span.parent_id, 8, "parent_id") if span.parent_id else b"",
        name=span.name,
        kind=kind,
        timestamp_us=span.timestamp,
        duration_us=span.duration,
        local=_endpoint(span.local_endpoint, "local_endpoint")
        if span.HasField("local_endpoint")
        else None,
        remote=_endpoint(span.remote_endpoint, "remote_endpoint")
        if span.HasField("remote_endpoint")
        else None,
        annotations=[Annotation(a.timestamp, a.value) for a in span.annotations],
        tags=dict(span.tags),
    )


def _endpoint(endpoint: Any, what: str) -> Endpoint:
    return Endpoint(
        service_name=endpoint.service_name,
        ipv4=ip_text(endpoint.ipv4, 4, f"{what}.ipv4"),
        ipv6=ip_text(endpoint.ipv6, 16, f"{what}.ipv6"),
        port=port(endpoint.port, f"{what}.port"),
    )
