"""Zipkin v2 spans (model.py) to OTLP traces, as the OTel Collector translates them; and what
the v1 translation (`translate_v1.py`) shares with it.

- Spans are grouped into one resource per `localEndpoint.serviceName` (`service.name`).
- `timestamp` and `duration` are microseconds. `kind` maps to the span kind (none: internal).
- `tags` become attributes; `otel.status_code` / `otel.status_description` (or an `error` tag)
  set the status; `otel.scope.name` / `otel.scope.version` (or `otel.library.*`) the scope.
  With `parse_string_tags`, tags that read as a bool, integer or float become one.
- `annotations` become events; `remoteEndpoint` becomes `peer.service`, `network.peer.address`
  and `network.peer.port`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from collector.core.pdata import Traces, set_attr
from collector.receivers.zipkin.model import Endpoint, Span

KINDS = {
    "CLIENT": OtlpSpan.SPAN_KIND_CLIENT,
    "SERVER": OtlpSpan.SPAN_KIND_SERVER,
    "PRODUCER": OtlpSpan.SPAN_KIND_PRODUCER,
    "CONSUMER": OtlpSpan.SPAN_KIND_CONSUMER,
}
_STATUS = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_SCOPE_NAME = ("otel.scope.name", "otel.library.name")
_SCOPE_VERSION = ("otel.scope.version", "otel.library.version")
_SPECIAL = {"otel.status_code", "otel.status_description", "error", *_SCOPE_NAME, *_SCOPE_VERSION}

# The value types parse_string_tags recognises, as the OTel Collector's patterns.
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"-?[0-9]+\.[0-9]+")
_INT64 = range(-(1 << 63), 1 << 63)
_UINT64_NANOS = 1 << 64


def typed(value: str) -> Any:
    """`value` as the bool, integer or float it reads as, else as it is."""
    if value in ("true", "false"):
        return value == "true"
    number = integer(value)
    if number is not None:
        return number
    if _FLOAT.fullmatch(value):
        return float(value)
    return value


def integer(value: str) -> int | None:
    """The 64-bit integer `value` reads as, if any."""
    if len(value) <= 20 and _INT.fullmatch(value):  # no 64-bit integer has more digits
        number = int(value)
        if number in _INT64:
            return number
    return None


def nanos(micros: int, what: str) -> int:
    """Microseconds as the nanoseconds OTLP holds (an unsigned 64-bit integer)."""
    result = micros * 1000
    if not 0 <= result < _UINT64_NANOS:
        raise ValueError(f"{what}: {micros} microseconds is out of range")
    return result


def set_peer(attributes, remote: Endpoint) -> None:
    """The other side of a call: `peer.service`, `network.peer.address`, `network.peer.port`."""
    if remote.service_name:
        set_attr(attributes, "peer.service", remote.service_name)
    address = remote.ipv6 or remote.ipv4
    if address:
        set_attr(attributes, "network.peer.address", address)
    if remote.port:
        set_attr(attributes, "network.peer.port", remote.port)


def set_event(event, value: str) -> None:
    """An annotation's value as the event: OpenTelemetry exporters write an event as the JSON
    `{"<name>": {<attributes>}}`, other tracers a plain text."""
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict) and len(parsed) == 1:
            ((name, attributes),) = parsed.items()
            if isinstance(attributes, dict):
                event.name = str(name)
                for key, attribute in attributes.items():
                    set_attr(event.attributes, str(key), attribute)
                return
    event.name = value


def traces(spans: Iterable[Span], parse_tags: bool) -> Traces:
    """Zipkin v2 spans as OTLP traces; ValueError naming the span that cannot be."""
    batch = Traces()
    resources: dict[str, ResourceSpans] = {}
    scopes: dict[tuple[str, str, str], ScopeSpans] = {}
    for i, span in enumerate(spans):
        try:
            otlp = _span(span, parse_tags)
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
        service = span.local.service_name if span.local else ""
        scope = next((span.tags[k] for k in _SCOPE_NAME if k in span.tags), "")
        version = next((span.tags[k] for k in _SCOPE_VERSION if k in span.tags), "")
        rs = resources.get(service)
        if rs is None:
            rs = resources[service] = batch.resource_spans.add()
            if service:
                set_attr(rs.resource.attributes, "service.name", service)
        ss = scopes.get((service, scope, version))
        if ss is None:
            ss = scopes[service, scope, version] = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = scope, version
        ss.spans.append(otlp)
    return batch


def _span(span: Span, parse_tags: bool) -> OtlpSpan:
    out = OtlpSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_id,
        name=span.name,
        kind=KINDS.get(span.kind, OtlpSpan.SPAN_KIND_INTERNAL),
        start_time_unix_nano=nanos(span.timestamp_us, "timestamp"),
        end_time_unix_nano=nanos(span.timestamp_us + span.duration_us, "duration"),
    )
    tags = span.tags
    for key, value in tags.items():
        if key not in _SPECIAL:
            set_attr(out.attributes, key, typed(value) if parse_tags else value)
    status = tags.get("otel.status_code", "").upper()
    if status in _STATUS:
        out.status.code = _STATUS[status]
        if status == "ERROR":
            # OpenTelemetry exporters put an error's description in the `error` tag.
            out.status.message = tags.get("otel.status_description", tags.get("error", ""))
    elif "error" in tags:
        out.status.code = Status.STATUS_CODE_ERROR
        out.status.message = tags["error"]
    for annotation in span.annotations:
        event = out.events.add()
        event.time_unix_nano = nanos(annotation.timestamp_us, "annotation timestamp")
        set_event(event, annotation.value)
    if span.remote is not None:
        set_peer(out.attributes, span.remote)
    return out
