"""Zipkin's protobuf model (openzipkin/zipkin-api's zipkin.proto, package `zipkin.proto3`),
built at import from its field numbers, so that no generated code or protoc step is needed;
and a `ListOfSpans` body read into model.py's v2 spans.

The messages live in a private descriptor pool: tracers that register their own generated
`zipkin.proto3` in the default pool (py_zipkin does) cannot clash with them.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from collector.receivers.zipkin.model import Annotation, Endpoint, Span, byte_id, ip_text, port

_PACKAGE = "zipkin.proto3"
_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED

# message -> [(field name, number, type, label, message or enum type name)], as zipkin.proto.
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "Span": [
        ("trace_id", 1, _F.TYPE_BYTES, _OPTIONAL, ""),
        ("parent_id", 2, _F.TYPE_BYTES, _OPTIONAL, ""),
        ("id", 3, _F.TYPE_BYTES, _OPTIONAL, ""),
        ("kind", 4, _F.TYPE_ENUM, _OPTIONAL, ".zipkin.proto3.Span.Kind"),
        ("name", 5, _F.TYPE_STRING, _OPTIONAL, ""),
        ("timestamp", 6, _F.TYPE_FIXED64, _OPTIONAL, ""),
        ("duration", 7, _F.TYPE_UINT64, _OPTIONAL, ""),
        ("local_endpoint", 8, _F.TYPE_MESSAGE, _OPTIONAL, ".zipkin.proto3.Endpoint"),
        ("remote_endpoint", 9, _F.TYPE_MESSAGE, _OPTIONAL, ".zipkin.proto3.Endpoint"),
        ("annotations", 10, _F.TYPE_MESSAGE, _REPEATED, ".zipkin.proto3.Annotation"),
        ("tags", 11, _F.TYPE_MESSAGE, _REPEATED, ".zipkin.proto3.Span.TagsEntry"),
        ("debug", 12, _F.TYPE_BOOL, _OPTIONAL, ""),
        ("shared", 13, _F.TYPE_BOOL, _OPTIONAL, ""),
    ],
    "Endpoint": [
        ("service_name", 1, _F.TYPE_STRING, _OPTIONAL, ""),
        ("ipv4", 2, _F.TYPE_BYTES, _OPTIONAL, ""),
        ("ipv6", 3, _F.TYPE_BYTES, _OPTIONAL, ""),
        ("port", 4, _F.TYPE_INT32, _OPTIONAL, ""),
    ],
    "Annotation": [
        ("timestamp", 1, _F.TYPE_FIXED64, _OPTIONAL, ""),
        ("value", 2, _F.TYPE_STRING, _OPTIONAL, ""),
    ],
    "ListOfSpans": [
        ("spans", 1, _F.TYPE_MESSAGE, _REPEATED, ".zipkin.proto3.Span"),
    ],
}
# Span.Kind, by number.
_KINDS = ["SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]


def _add_fields(message: descriptor_pb2.DescriptorProto, fields) -> None:
    for name, number, kind, label, type_name in fields:
        field = message.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="coldtail/zipkin/zipkin.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        _add_fields(message, fields)
        if name == "Span":
            kind = message.enum_type.add(name="Kind")
            for number, value in enumerate(_KINDS):
                kind.value.add(name=value, number=number)
            # `map<string, string> tags` is a repeated nested entry message.
            entry = message.nested_type.add(name="TagsEntry")
            entry.options.map_entry = True
            _add_fields(
                entry,
                [
                    ("key", 1, _F.TYPE_STRING, _OPTIONAL, ""),
                    ("value", 2, _F.TYPE_STRING, _OPTIONAL, ""),
                ],
            )
    return file


def _classes() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


MESSAGES = _classes()
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
