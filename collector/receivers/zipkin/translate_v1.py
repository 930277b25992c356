"""Zipkin v1 spans (model.py) to OTLP traces, as the OTel Collector's v1 translator does.

- The core annotations decide the kind, from the first one: `cs`/`cr` client, `sr`/`ss`
  server, `ms` producer, `mr` consumer; the first of them whose endpoint names a service is
  the span's local endpoint. Other annotations become events. The earliest and the latest
  annotation are the start and the end, unless the span has its own `timestamp` (and
  `duration`). A span with neither starts and ends when it arrives, with the attribute
  `otel.zipkin.absentField.startTime` true.
- Spans are grouped into one resource per local endpoint: `service.name` and, as upstream
  names them, `ipv4`, `ipv6` and `port`. Without an endpoint the service is the last one a
  binary annotation names, else the `lc` (local component) value, else `unknown-service`.
- Binary annotations become attributes (`lc` as `component`); `ca`, `sa` and `ma` carry the
  address of the other side, which becomes `peer.service`, `network.peer.address` and
  `network.peer.port` (the one matching the kind: `sa` for a client, `ca` for a server, `ma`
  for messaging).
- The status comes from `census.status_code` (0 is OK, else error), then `otel.status_code`,
  then an `error` annotation, then `http.status_code` (error from 400 on); those tags but the
  HTTP ones are not kept as attributes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from collector.core.pdata import Traces, set_attr
from collector.receivers.zipkin.model import BinaryAnnotation, Endpoint, TagValue, V1Span
from collector.receivers.zipkin.translate import integer, nanos, set_event, set_peer, typed

UNKNOWN_SERVICE = "unknown-service"
START_TIME_ABSENT = "otel.zipkin.absentField.startTime"
_CORE = {
    "cs": OtlpSpan.SPAN_KIND_CLIENT,
    "cr": OtlpSpan.SPAN_KIND_CLIENT,
    "ss": OtlpSpan.SPAN_KIND_SERVER,
    "sr": OtlpSpan.SPAN_KIND_SERVER,
    "ms": OtlpSpan.SPAN_KIND_PRODUCER,
    "mr": OtlpSpan.SPAN_KIND_CONSUMER,
}
_ADDRESS_KEYS = ("sa", "ca", "ma")
_ADDRESS_OF_KIND = {
    OtlpSpan.SPAN_KIND_CLIENT: "sa",
    OtlpSpan.SPAN_KIND_SERVER: "ca",
    OtlpSpan.SPAN_KIND_PRODUCER: "ma",
    OtlpSpan.SPAN_KIND_CONSUMER: "ma",
}
_OTEL_CODES = {
    "UNSET": Status.STATUS_CODE_UNSET,
    "OK": Status.STATUS_CODE_OK,
    "ERROR": Status.STATUS_CODE_ERROR,
}
_INT32 = range(-(1 << 31), 1 << 31)


def traces(spans: Iterable[V1Span], parse_tags: bool) -> Traces:
    """Zipkin v1 spans as OTLP traces; ValueError naming the span that cannot be."""
    batch = Traces()
    resources: dict[tuple[str, str, str, int], ScopeSpans] = {}
    now_ns = time.time_ns()
    for i, span in enumerate(spans):
        try:
            endpoint, otlp = _span(span, parse_tags, now_ns)
        except ValueError as e:
            raise ValueError(f"span {i}: {e}") from None
        key = (endpoint.service_name, endpoint.ipv4, endpoint.ipv6, endpoint.port)
        ss = resources.get(key)
        if ss is None:
            rs = batch.resource_spans.add()
            attributes = rs.resource.attributes
            set_attr(attributes, "service.name", endpoint.service_name)
            if endpoint.ipv4:
                set_attr(attributes, "ipv4", endpoint.ipv4)
            if endpoint.ipv6:
                set_attr(attributes, "ipv6", endpoint.ipv6)
            if endpoint.port:
                set_attr(attributes, "port", str(endpoint.port))
            ss = resources[key] = rs.scope_spans.add()
        ss.spans.append(otlp)
    return batch


def _span(span: V1Span, parse_tags: bool, now_ns: int) -> tuple[Endpoint, OtlpSpan]:
    out = OtlpSpan(
        trace_id=span.trace_id,
        span_id=span.span_id,
        parent_span_id=span.parent_id,
        name=span.name,
    )
    local = _annotations(span, out)
    fallback = _binary_annotations(span.binary_annotations, out, parse_tags)
    if local is None:
        local = Endpoint(service_name=fallback or UNKNOWN_SERVICE)
    if span.timestamp_us:
        out.start_time_unix_nano = nanos(span.timestamp_us, "timestamp")
        out.end_time_unix_nano = nanos(span.timestamp_us + span.duration_us, "duration")
    if not out.start_time_unix_nano:
        # Zipkin allows a span without a time; OTLP does not.
        out.start_time_unix_nano = out.end_time_unix_nano = now_ns
        set_attr(out.attributes, START_TIME_ABSENT, True)
    return local, out


def _annotations(span: V1Span, out: OtlpSpan) -> Endpoint | None:
    """Sets the kind, times and events; returns the local endpoint, if one is named."""
    local = None
    first = last = None
    for annotation in span.annotations:
        if not annotation.value:
            continue
        kind = _CORE.get(annotation.value)
        if kind is not None:
            host = annotation.host
            if local is None and host is not None and host.service_name:
                local = host
            if not out.kind:
                out.kind = kind
        at = annotation.timestamp_us
        first = at if first is None else min(first, at)
        last = at if last is None else max(last, at)
        if kind is None:
            event = out.events.add()
            event.time_unix_nano = nanos(at, "annotation timestamp")
            set_event(event, annotation.value)
    if first is not None and last is not None:
        out.start_time_unix_nano = nanos(first, "annotation timestamp")
        out.end_time_unix_nano = nanos(last, "annotation timestamp")
    return local


def _binary_annotations(
    annotations: list[BinaryAnnotation], out: OtlpSpan, parse_tags: bool
) -> str:
    """Sets the attributes and the status; returns the service name to fall back on."""
    status = _StatusTags()
    service = local_component = ""
    addresses: dict[str, Endpoint] = {}
    for annotation in annotations:
        key, value, host = annotation.key, annotation.value, annotation.host
        if key in _ADDRESS_KEYS and host is not None:
            addresses.setdefault(key, host)
            continue
        if host is not None and host.service_name:
            service = host.service_name
        if isinstance(value, str) and parse_tags and not annotation.final:
            value = typed(value)
        if key == "lc":
            key, local_component = "component", str(annotation.value)
        if not status.take(key, value):
            set_attr(out.attributes, key, value)
    status.apply(out.status)
    remote = addresses.get(_ADDRESS_OF_KIND.get(out.kind, ""))
    if remote is None and addresses:
        remote = next(iter(addresses.values()))
    if remote is not None:
        set_peer(out.attributes, remote)
    return service or local_component


class _StatusTags:
    """The status tags of one span, in upstream's order of precedence."""

    def __init__(self) -> None:
        self.census: int | None = None
        self.census_message = ""
        self.otel: int | None = None
        self.otel_message = ""
        self.http: int | None = None
        self.http_message = ""
        self.error: str | None = None

    def take(self, key: str, value: TagValue) -> bool:
        """Record `key` if it bears on the status; True when it is not kept as an attribute."""
        if key == "census.status_code":
            code = _int32(value)
            if code is not None:
                self.census = Status.STATUS_CODE_OK if code == 0 else Status.STATUS_CODE_ERROR
        elif key in ("census.status_description", "opencensus.status_description"):
            self.census_message = _text(value)
        elif key == "otel.status_code":
            self.otel = _otel_code(value)
        elif key == "otel.status_description":
            self.otel_message = _text(value)
        elif key == "error":
            self.error = _text(value)
        elif key == "http.status_code":
            code = _int32(value)
            if code is not None:
                ok = 100 <= code < 400
                self.http = Status.STATUS_CODE_UNSET if ok else Status.STATUS_CODE_ERROR
            return False
        elif key == "http.status_message":
            self.http_message = _text(value)
            return False
        else:
            return False
        return True

    def apply(self, status: Status) -> None:
        if self.census is not None:
            code, message = self.census, self.census_message
        elif self.otel is not None:
            code, message = self.otel, self.otel_message
        elif self.error is not None:
            code, message = Status.STATUS_CODE_ERROR, self.census_message or self.otel_message
        elif self.http is not None:
            code, message = self.http, self.http_message
        else:
            return
        status.code = cast("Status.StatusCode.ValueType", code)
        if code == Status.STATUS_CODE_ERROR:
            # OpenTelemetry exporters and Zipkin tracers put the error's text in `error`.
            status.message = message or _error_text(self.error)


def _int32(value: TagValue) -> int | None:
    number = integer(value) if isinstance(value, str) else value
    if isinstance(number, int) and not isinstance(number, bool) and number in _INT32:
        return number
    return None


def _otel_code(value: TagValue) -> int | None:
    """OpenTelemetry writes the code's name (ERROR); older bridges its number (2)."""
    if isinstance(value, str) and value.upper() in _OTEL_CODES:
        return _OTEL_CODES[value.upper()]
    code = _int32(value)
    return code if code in _OTEL_CODES.values() else None


def _text(value: TagValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error_text(error: str | None) -> str:
    """The `error` annotation's text, unless it only says that there was one."""
    return "" if error in (None, "", "true", "1") else str(error)
