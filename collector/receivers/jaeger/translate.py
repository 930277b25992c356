"""Jaeger batches (model.py) as OTLP traces, as the OTel Collector's Jaeger translator
(`pkg/translator/jaeger`) makes them.

- Resource: `process.serviceName` becomes `service.name`, the process tags the other attributes;
  `hostname` becomes `host.name` and `jaeger.version` `opencensus.exporterversion`
  ("Jaeger-<version>") unless those are set. Spans are grouped by process: a protobuf span's
  own process takes precedence over its batch's. The placeholder service name
  `OTLPResourceNoServiceName` (what the translator writes for a resource without one) gives a
  resource without attributes.
- Scope: the `otel.scope.name` / `otel.scope.version` tags (else the older
  `otel.library.name` / `otel.library.version`) name the span's scope and are removed.
- Ids: big-endian bytes of the signed 64-bit halves (`traceIdHigh` first). Times: Thrift's
  microseconds and protobuf's timestamps as nanoseconds; end = start + duration.
- Parent: Thrift's `parentSpanId`, else the first CHILD_OF reference in the same trace, else
  the first FOLLOWS_FROM one in the same trace. Every other reference becomes a link with the
  attribute `opentracing.ref_type` (`child_of` / `follows_from`).
- Tags become typed attributes (a later duplicate key overwrites an earlier one), except:
  `span.kind` (client, server, producer, consumer, internal; otherwise unspecified) sets the
  kind; `error` = true sets an ERROR status, with `otel.status_description` (else
  `http.status_message`) as its message; otherwise `otel.status_code` (OK / ERROR) with
  `otel.status_description`; otherwise `http.status_code` (integer or numeric string) as the
  HTTP semantic conventions map it (4xx is an error on clients only, 5xx and codes outside
  100-398 always); `w3c.tracestate` sets the trace state.
- Logs become events: the `event` field is the event's name, the other fields its attributes.
- A span whose every field is empty is skipped.

One difference from the OTel Collector, on purpose: it reads the scope and trace state tags
from protobuf (gRPC) spans only and leaves them as attributes of Thrift spans; here every
protocol gets the same translation, since OpenTelemetry's Jaeger exporters write those tags
into Thrift too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan

from collector.core.pdata import Traces, python_to_any_value
from collector.receivers.jaeger.model import CHILD_OF, FOLLOWS_FROM, Batch, Process, Span, Tag

NO_SERVICE_NAME = "OTLPResourceNoServiceName"
_U64 = (1 << 64) - 1

_KINDS = {
    "client": OtlpSpan.SPAN_KIND_CLIENT,
    "server": OtlpSpan.SPAN_KIND_SERVER,
    "producer": OtlpSpan.SPAN_KIND_PRODUCER,
    "consumer": OtlpSpan.SPAN_KIND_CONSUMER,
    "internal": OtlpSpan.SPAN_KIND_INTERNAL,
}
_STATUS = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_SCOPE_TAGS = (
    ("otel.scope.name", "otel.scope.version"),
    ("otel.library.name", "otel.library.version"),
)
_REF_TYPES = {CHILD_OF: "child_of"}  # any other type is follows_from
# Go's strconv.ParseInt(s, 10, 64): an optional sign and decimal digits, nothing else.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_INT64 = range(-(1 << 63), 1 << 63)


def _str(value: Any) -> str:
    """A tag's value read as a string, as pcommon's Value.Str(): empty unless it is one."""
    return value if isinstance(value, str) else ""


def traces(batches: Iterable[Batch]) -> Traces:
    """One OTLP request of `batches`: a resource per distinct process, in the order first seen,
    each with a scope per distinct (name, version). A process without spans gives no resource
    (the OTel Collector sends an empty one on)."""
    out = Traces()
    resources: dict[Any, tuple[ResourceSpans, dict[tuple[str, str], ScopeSpans]]] = {}
    for batch in batches:
        for span in batch.spans:
            process = span.process if span.process is not None else batch.process
            key = _process_key(process)
            entry = resources.get(key)
            if entry is None:
                rs = out.resource_spans.add()
                _resource(process, rs)
                entry = resources[key] = (rs, {})
            rs, scopes = entry
            scope = _take_scope(span.tags)
            ss = scopes.get(scope)
            if ss is None:
                ss = scopes[scope] = rs.scope_spans.add()
                ss.scope.name, ss.scope.version = scope
            _span(span, ss.spans.add())
    return out


def _process_key(process: Process | None) -> Any:
    if process is None:
        return None
    tags = None if process.tags is None else tuple((k, type(v), v) for k, v in process.tags)
    return (process.service_name, tags)


def _resource(process: Process | None, rs: ResourceSpans) -> None:
    if process is None or process.service_name == NO_SERVICE_NAME:
        return
    if not process.service_name and process.tags is None:
        return
    attrs: dict[str, Any] = {}
    if process.service_name:
        attrs["service.name"] = process.service_name
    for key, value in process.tags or ():
        attrs[key] = value
    if "hostname" in attrs and "host.name" not in attrs:
        attrs["host.name"] = attrs.pop("hostname")
    if "jaeger.version" in attrs and "opencensus.exporterversion" not in attrs:
        attrs["opencensus.exporterversion"] = "Jaeger-" + _str(attrs.pop("jaeger.version"))
    _write_attrs(attrs, rs.resource.attributes)


def _take_scope(tags: list[Tag]) -> tuple[str, str]:
    """(name, version) of the span's scope, removing the tags that named it: the first tag of
    each key counts, as the OTel Collector reads them."""
    for name_key, version_key in _SCOPE_TAGS:
        name = _pop_first(tags, name_key)
        if name is not None:
            version = _pop_first(tags, version_key)
            return _str(name), _str(version) if version is not None else ""
    return "", ""


def _pop_first(tags: list[Tag], key: str) -> Any:
    for i, (k, value) in enumerate(tags):
        if k == key:
            del tags[i]
            return value
    return None


def _parent_id(span: Span) -> bytes:
    """Thrift's parentSpanId, else the first CHILD_OF, else the first FOLLOWS_FROM reference
    within the span's trace (Jaeger's own rule); zero bytes when none."""
    if any(span.parent_span_id):
        return span.parent_span_id
    follows_from = None
    for ref in span.refs:
        if ref.trace_id != span.trace_id:
            continue
        if ref.ref_type == CHILD_OF:
            return ref.span_id
        if follows_from is None and ref.ref_type == FOLLOWS_FROM:
            follows_from = ref.span_id
    return follows_from if follows_from is not None else bytes(8)


def _span(span: Span, out: OtlpSpan) -> None:
    out.trace_id = span.trace_id
    out.span_id = span.span_id
    out.name = span.name
    out.start_time_unix_nano = span.start_ns & _U64
    out.end_time_unix_nano = (span.start_ns + span.duration_ns) & _U64
    parent = _parent_id(span)
    if any(parent):
        out.parent_span_id = parent

    attrs = dict(span.tags)
    if "span.kind" in attrs:
        out.kind = _KINDS.get(_str(attrs.pop("span.kind")), OtlpSpan.SPAN_KIND_UNSPECIFIED)
    _status(attrs, out)
    if "w3c.tracestate" in attrs:
        out.trace_state = _str(attrs.pop("w3c.tracestate"))
    _write_attrs(attrs, out.attributes)

    for log in span.logs:
        event = out.events.add()
        event.time_unix_nano = log.time_ns & _U64
        fields = dict(log.fields)
        if "event" in fields:
            event.name = _str(fields.pop("event"))
        _write_attrs(fields, event.attributes)

    for ref in span.refs:
        if ref.ref_type == CHILD_OF and ref.span_id == parent:
            continue
        link = out.links.add()
        link.trace_id = ref.trace_id
        link.span_id = ref.span_id
        python_to_any_value(
            _REF_TYPES.get(ref.ref_type, "follows_from"),
            _new_attr(link.attributes, "opentracing.ref_type"),
        )


def _status(attrs: dict[str, Any], span: OtlpSpan) -> None:
    code = Status.STATUS_CODE_UNSET
    message, found = "", False
    # The `error` tag is the last word on a Jaeger span's error status.
    if attrs.get("error") is True:
        del attrs["error"]
        code, found = Status.STATUS_CODE_ERROR, True
        if "otel.status_description" in attrs:
            message = _str(attrs.pop("otel.status_description"))
        elif "http.status_message" in attrs:
            message = _str(attrs["http.status_message"])
    if "otel.status_code" in attrs:
        value = attrs.pop("otel.status_code")
        if not found:
            found = True
            code = _STATUS.get(_str(value).upper(), Status.STATUS_CODE_UNSET)
            if "otel.status_description" in attrs:
                message = _str(attrs.pop("otel.status_description"))
    elif not found and "http.status_code" in attrs:
        http_code = _http_code(attrs["http.status_code"])
        if http_code is not None:
            code = _http_status(http_code, span.kind)
            found = code != Status.STATUS_CODE_UNSET
            if "http.status_message" in attrs:
                message = _str(attrs["http.status_message"])
    if found:
        span.status.code = code
        span.status.message = message


def _http_code(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value) and int(value) in _INT64:
        return int(value)
    return None


def _http_status(code: int, kind: int) -> Status.StatusCode.ValueType:
    if 400 <= code < 500:
        if kind == OtlpSpan.SPAN_KIND_CLIENT:
            return Status.STATUS_CODE_ERROR
        if kind == OtlpSpan.SPAN_KIND_SERVER:
            return Status.STATUS_CODE_UNSET
    # As the OTel Collector has it: 399 counts as an error.
    return Status.STATUS_CODE_UNSET if 100 <= code < 399 else Status.STATUS_CODE_ERROR


def _write_attrs(attrs: dict[str, Any], out) -> None:
    for key, value in attrs.items():
        python_to_any_value(value, _new_attr(out, key))


def _new_attr(out, key: str):
    kv = out.add()
    kv.key = key
    return kv.value
