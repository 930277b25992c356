"""Zipkin's JSON bodies: a v2 array of spans (`POST /api/v2/spans`) and a v1 array of spans
(`POST /api/v1/spans`), read into model.py. Any malformed input is a ValueError naming the
span and the field.

Ids are hex (up to 16 digits, or 32 for a trace id; shorter ones are left-padded), times
integers of microseconds. Tag values are text in v2; a v1 binary annotation's value is text,
a bool (`ca` and `sa` say `true`) or a number.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from collector.receivers.zipkin.model import (
    Annotation,
    BinaryAnnotation,
    Endpoint,
    Span,
    TagValue,
    V1Annotation,
    V1Span,
    hex_id,
    port,
)

T = TypeVar("T")


def decode_v2(body: bytes) -> list[Span]:
    return _spans(body, "v2", _v2_span)


def decode_v1(body: bytes) -> list[V1Span]:
    return _spans(body, "v1", _v1_span)


def _spans(body: bytes, version: str, read: Callable[[Mapping[str, Any]], T]) -> list[T]:
    try:
        items = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(items, list):
        raise ValueError(f"expected a JSON array of Zipkin {version} spans")
    spans = []
    for i, item in enumerate(items):
        try:
            spans.append(read(_object(item, "span")))
        except (ValueError, TypeError) as e:
            raise ValueError(f"span {i}: {e}") from None
    return spans


def _v2_span(raw: Mapping[str, Any]) -> Span:
    tags = _object(raw.get("tags") or {}, "tags")
    return Span(
        trace_id=hex_id(raw.get("traceId"), 16, "traceId"),
        span_id=hex_id(raw.get("id"), 8, "id"),
        parent_id=hex_id(raw["parentId"], 8, "parentId") if raw.get("parentId") else b"",
        name=_text(raw.get("name"), "name"),
        kind=_text(raw.get("kind"), "kind").upper(),
        timestamp_us=_micros(raw.get("timestamp"), "timestamp"),
        duration_us=_micros(raw.get("duration"), "duration"),
        local=_endpoint(raw.get("localEndpoint"), "localEndpoint"),
        remote=_endpoint(raw.get("remoteEndpoint"), "remoteEndpoint"),
        annotations=[
            Annotation(_micros(a.get("timestamp"), "annotation timestamp"), _text_of(a))
            for a in _objects(raw.get("annotations"), "annotations")
        ],
        tags={str(key): _tag_text(value) for key, value in tags.items()},
    )


def _v1_span(raw: Mapping[str, Any]) -> V1Span:
    debug = raw.get("debug")
    if debug is not None and not isinstance(debug, bool):
        raise ValueError(f"debug: expected true or false, got {debug!r}")
    return V1Span(
        trace_id=hex_id(raw.get("traceId"), 16, "traceId"),
        span_id=hex_id(raw.get("id"), 8, "id"),
        parent_id=hex_id(raw["parentId"], 8, "parentId") if raw.get("parentId") else b"",
        name=_text(raw.get("name"), "name"),
        timestamp_us=_micros(raw.get("timestamp"), "timestamp"),
        duration_us=_micros(raw.get("duration"), "duration"),
        annotations=[
            V1Annotation(
                _micros(a.get("timestamp"), "annotation timestamp"),
                _text_of(a),
                _endpoint(a.get("endpoint"), "annotation endpoint"),
            )
            for a in _objects(raw.get("annotations"), "annotations")
        ],
        binary_annotations=[
            BinaryAnnotation(
                _text(b.get("key"), "binaryAnnotation key"),
                _binary_value(b.get("value")),
                _endpoint(b.get("endpoint"), "binaryAnnotation endpoint"),
                final=not isinstance(b.get("value"), str),
            )
            for b in _objects(raw.get("binaryAnnotations"), "binaryAnnotations")
        ],
        debug=bool(debug),
    )


def _endpoint(raw: Any, what: str) -> Endpoint | None:
    if raw is None:
        return None
    raw = _object(raw, what)
    number = raw.get("port") or 0
    if not isinstance(number, int) or isinstance(number, bool):
        raise ValueError(f"{what} port: expected an integer, got {number!r}")
    return Endpoint(
        service_name=_text(raw.get("serviceName"), f"{what} serviceName"),
        ipv4=_text(raw.get("ipv4"), f"{what} ipv4"),
        ipv6=_text(raw.get("ipv6"), f"{what} ipv6"),
        port=port(number, f"{what} port"),
    )


def _object(raw: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected an object, got {type(raw).__name__}")
    return raw


def _objects(raw: Any, what: str) -> list[Mapping[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError(f"{what}: expected an array, got {type(raw).__name__}")
    return [_object(item, what) for item in raw]


def _text(raw: Any, what: str) -> str:
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValueError(f"{what}: expected a string, got {raw!r}")
    return raw


def _text_of(annotation: Mapping[str, Any]) -> str:
    return _text(annotation.get("value"), "annotation value")


def _micros(raw: Any, what: str) -> int:
    """Microseconds; JavaScript tracers may write an integer as a float (1.7e15)."""
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"{what}: expected an integer of microseconds, got {raw!r}")
    if not 0 <= raw < 1 << 63:
        raise ValueError(f"{what}: {raw!r} is out of range")
    return int(raw)


def _tag_text(value: Any) -> str:
    """A v2 tag's value is a string; a tracer that wrote another JSON value gets its text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def _binary_value(value: Any) -> TagValue:
    if value is None:
        return ""
    if isinstance(value, str | bool | int | float):
        return value
    raise ValueError(f"binaryAnnotation value: expected a string, bool or number, got {value!r}")
