"""The data that flows: OTLP protobuf export requests, and the helpers every component uses.

A batch is the OTLP export request of its signal (ExportTraceServiceRequest and friends):
receivers parse it once, processors change it in place, exporters serialize it once.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core import wire
from collector.core.signals import Signal

Traces = ExportTraceServiceRequest
Metrics = ExportMetricsServiceRequest
Logs = ExportLogsServiceRequest

Batch = Traces | Metrics | Logs
ExportResponse = (
    ExportTraceServiceResponse | ExportMetricsServiceResponse | ExportLogsServiceResponse
)

REQUEST_TYPES: dict[Signal, type[Batch]] = {
    Signal.TRACES: Traces,
    Signal.METRICS: Metrics,
    Signal.LOGS: Logs,
}
RESPONSE_TYPES: dict[Signal, type[ExportResponse]] = {
    Signal.TRACES: ExportTraceServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.LOGS: ExportLogsServiceResponse,
}
# The OTLP/gRPC service of each signal; each has one method, Export.
GRPC_SERVICES = {
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
}
# The count field of each export response's partial_success.
REJECTED_FIELDS = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch in its protobuf wire form: `data` is `signal`'s export request holding `items`
    items. It skips decoding and re-encoding where nothing reads or changes the data (the
    receiver's bytes through the batch processor to an OTLP exporter); being immutable, it is
    shared rather than copied. Only consumers whose `accepts_encoded` is true are handed one.
    Concatenated requests are one request: protobuf merges repeated fields on concatenation."""

    signal: Signal
    data: bytes
    items: int

    @classmethod
    def of(cls, batch, items: int | None = None) -> Encoded:
        """`batch` in its wire form; `items` is its count when known."""
        if isinstance(batch, Encoded):
            return batch
        if items is None:
            items = count_items(batch)
        return cls(signal_of(batch), wire.encode(batch), items)

    @classmethod
    def join(cls, parts: list) -> Encoded:
        """One request holding every batch of `parts` (messages or Encoded), in order."""
        encoded = [cls.of(part) for part in parts]
        data = b"".join(e.data for e in encoded)
        return cls(encoded[0].signal, data, sum(e.items for e in encoded))

    def decode(self) -> Batch:
        return REQUEST_TYPES[self.signal].FromString(self.data)


def accepts_encoded(consumer) -> bool:
    """Whether `consumer` may be handed an Encoded batch."""
    return bool(getattr(consumer, "accepts_encoded", False))


def signal_of(batch) -> Signal:
    if isinstance(batch, Encoded):
        return batch.signal
    if isinstance(batch, Traces):
        return Signal.TRACES
    if isinstance(batch, Metrics):
        return Signal.METRICS
    if isinstance(batch, Logs):
        return Signal.LOGS
    raise TypeError(f"not an OTLP batch: {type(batch).__name__}")


def new_batch(signal: Signal):
    return REQUEST_TYPES[signal]()


def copy_batch(batch):
    if isinstance(batch, Encoded):
        return batch
    clone = type(batch)()
    clone.CopyFrom(batch)
    return clone


def resources(batch) -> Any:
    """The repeated resource_* field of a batch (ResourceSpans / ResourceMetrics / ResourceLogs)."""
    if isinstance(batch, Traces):
        return batch.resource_spans
    if isinstance(batch, Metrics):
        return batch.resource_metrics
    return batch.resource_logs


def count_spans(batch: Traces) -> int:
    return sum(len(ss.spans) for rs in batch.resource_spans for ss in rs.scope_spans)


def check_ids(batch, data: bytes | None = None) -> None:
    """ValueError naming the first trace id that is not 16 bytes or span id that is not 8, as
    OTLP defines them: a span's own ids are required, its parent's and the ids of links' spans,
    log records and exemplars may be empty. Written for speed, since every request pays it:
    about 0.5 us a span; a trace batch's own wire form `data`, when given, lets spans without
    links be checked in C instead (span_ids), at half that."""
    signal = signal_of(batch)
    if signal is Signal.TRACES:
        if data is not None:
            # Imported on first use: ~3 ms of protobuf descriptor modules that a Lambda
            # extension's init would otherwise pay.
            from collector.core import span_ids

            if span_ids.well_formed(data):
                return
        for rs in batch.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n = len(span.trace_id)
                    if n != 16:
                        raise _wrong("span", "trace_id", n)
                    n = len(span.span_id)
                    if n != 8:
                        raise _wrong("span", "span_id", n)
                    n = len(span.parent_span_id)
                    if n != 8 and n:
                        raise _wrong("span", "parent_span_id", n)
                    if span.links:
                        for link in span.links:
                            _check(link, "span link")
    elif signal is Signal.LOGS:
        for rl in batch.resource_logs:
            for sl in rl.scope_logs:
                for record in sl.log_records:
                    _check(record, "log record")
    else:
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.WhichOneof("data") != "summary":
                        for point in metric_points(metric):
                            for exemplar in point.exemplars:
                                _check(exemplar, "exemplar")


def _check(item, what: str) -> None:
    n = len(item.trace_id)
    if n != 16 and n:
        raise _wrong(what, "trace_id", n)
    n = len(item.span_id)
    if n != 8 and n:
        raise _wrong(what, "span_id", n)


def _wrong(what: str, field: str, size: int) -> ValueError:
    expected = 16 if field == "trace_id" else 8
    return ValueError(f"invalid {what} {field}: {size} bytes, expected {expected}")


def count_log_records(batch: Logs) -> int:
    return sum(len(sl.log_records) for rl in batch.resource_logs for sl in rl.scope_logs)


def metric_points(metric: Metric) -> Any:
    """The repeated data_points of a metric, whatever its type (empty when unset)."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return ()
    return getattr(metric, kind).data_points


def count_metric_points(batch: Metrics) -> int:
    return sum(
        len(metric_points(m))
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    )


_COUNTERS: dict[Signal, Callable[[Any], int]] = {
    Signal.TRACES: count_spans,
    Signal.METRICS: count_metric_points,
    Signal.LOGS: count_log_records,
}


def count_items(batch) -> int:
    """Spans, metric data points or log records in a batch."""
    if isinstance(batch, Encoded):
        return batch.items
    return _COUNTERS[signal_of(batch)](batch)


# Field names below the resource level of each signal's batch: (scopes, items).
LEVELS = {
    Signal.TRACES: ("scope_spans", "spans"),
    Signal.METRICS: ("scope_metrics", "metrics"),
    Signal.LOGS: ("scope_logs", "log_records"),
}


def split_wire(data: bytes, max_bytes: int) -> list[bytes]:
    """An export request's protobuf encoding cut between its resources into requests of about
    `max_bytes` each (a single larger resource stays whole), without decoding it: each part is a
    valid request, and the parts together are the request. `[data]` when it is that small, or
    not an encoding this can read (decoding it then reports why)."""
    if len(data) <= max_bytes:
        return [data]
    parts, start, pos, end = [], 0, 0, len(data)
    try:
        while pos < end:
            field_start = pos
            tag, pos = _varint(data, pos)
            if tag & 7 != 2:  # only length-delimited fields (resources) at the top level
                return [data]
            length, pos = _varint(data, pos)
            pos += length
            if pos > end:
                return [data]
            if field_start > start and pos - start > max_bytes:
                parts.append(data[start:field_start])
                start = field_start
    except IndexError:
        return [data]
    parts.append(data[start:])
    return parts


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def build_batch(signal: Signal, resource: dict[str, Any], scope_name: str, items) -> Any:
    """A batch of `signal` holding `items` (spans, metrics or log records) under one resource
    (attribute map) and one scope."""
    batch = new_batch(signal)
    res = resources(batch).add()
    for key, value in resource.items():
        set_attr(res.resource.attributes, key, value)
    scopes_field, items_field = LEVELS[signal]
    scope = getattr(res, scopes_field).add()
    scope.scope.name = scope_name
    getattr(scope, items_field).extend(items)
    return batch


def iter_items(batch) -> Iterator[tuple[Any, Any, Any]]:
    """(resource, scope, item) for every span, metric or log record of a batch."""
    scopes_field, items_field = LEVELS[signal_of(batch)]
    for res in resources(batch):
        for scope in getattr(res, scopes_field):
            for item in getattr(scope, items_field):
                yield res.resource, scope.scope, item


def iter_spans(batch: Traces) -> Iterator[tuple[Any, Any, Span]]:
    """(resource_spans, scope_spans, span) for every span."""
    for rs in batch.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield rs, ss, span


# --- attributes ---------------------------------------------------------------------------


def any_value_to_python(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


_INT64 = range(-(2**63), 2**63)


def _text(text: str) -> str:
    """`text` as protobuf takes it: a lone surrogate (valid JSON, invalid UTF-8) becomes U+FFFD."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode()
    return text


def python_to_any_value(obj: Any, out: AnyValue | None = None) -> AnyValue:
    """`obj` (as JSON decodes, or bytes) as an AnyValue: integers beyond 64 bits as doubles,
    lone surrogates replaced."""
    out = out if out is not None else AnyValue()
    if isinstance(obj, bool):
        out.bool_value = obj
    elif isinstance(obj, int):
        if obj in _INT64:
            out.int_value = obj
        elif abs(obj) < 2**1023:
            out.double_value = float(obj)
        else:
            out.string_value = str(obj)
    elif isinstance(obj, float):
        out.double_value = obj
    elif isinstance(obj, str):
        out.string_value = _text(obj)
    elif isinstance(obj, bytes):
        out.bytes_value = obj
    elif isinstance(obj, list | tuple):
        arr = out.array_value
        del arr.values[:]
        for item in obj:
            python_to_any_value(item, arr.values.add())
    elif isinstance(obj, dict):
        kvl = out.kvlist_value
        del kvl.values[:]
        for k, v in obj.items():
            kv = kvl.values.add()
            kv.key = _text(str(k))
            python_to_any_value(v, kv.value)
    elif isinstance(obj, AnyValue):
        out.CopyFrom(obj)
    elif obj is None:
        out.Clear()
    else:
        out.string_value = str(obj)
    return out


def find_attr(attrs, key: str) -> KeyValue | None:
    """The KeyValue for `key` in a repeated attributes field, or None."""
    for kv in attrs:
        if kv.key == key:
            return kv
    return None


def value_text(value: AnyValue) -> str:
    """A value's string form as the Collector's `Value.AsString` writes it: booleans as
    true/false, doubles without exponent, bytes as base64, arrays and maps as JSON."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        d = value.double_value
        if math.isnan(d):
            return "NaN"
        if math.isinf(d):
            return "+Inf" if d > 0 else "-Inf"
        return format(Decimal(repr(d)), "f")
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind is None:
        return ""
    return json.dumps(any_value_to_python(value), separators=(",", ":"), default=str)


def get_attr(attrs, key: str, default: Any = None) -> Any:
    """The Python value of attribute `key`, or `default` when absent."""
    kv = find_attr(attrs, key)
    return default if kv is None else any_value_to_python(kv.value)


def set_attr(attrs, key: str, value: Any) -> None:
    """Insert or overwrite attribute `key` (upsert)."""
    kv = find_attr(attrs, key)
    if kv is None:
        kv = attrs.add()
        kv.key = key
    python_to_any_value(value, kv.value)


def delete_attr(attrs, key: str) -> bool:
    for i, kv in enumerate(attrs):
        if kv.key == key:
            del attrs[i]
            return True
    return False


# --- spans ----------------------------------------------------------------------------------


ENTRY_KINDS = (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER)


def is_entry_span(span: Span) -> bool:
    """A span where a request enters this process: SERVER or CONSUMER kind, or no local parent."""
    return span.kind in ENTRY_KINDS or not span.parent_span_id


def entry_spans(spans) -> list[Span]:
    """The entry spans (see is_entry_span) of `spans`, in order. One comprehension: calling
    is_entry_span span by span costs a third more, and every span of a batch pays it."""
    return [s for s in spans if s.kind in ENTRY_KINDS or not s.parent_span_id]


def duration_ns(span: Span) -> int:
    return max(0, span.end_time_unix_nano - span.start_time_unix_nano)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time_ns(text: object) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 time (UTC when it names no zone), in whole
    microseconds without a float's rounding; None when `text` is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000
