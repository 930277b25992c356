"""The `debug` exporter: logs what passes through, as the OTel Collector's debug exporter does.

Every batch gives one summary line with its counts; `normal` adds one line per span, data point
or log record, and `detailed` a full dump. The output is for people reading logs: its format is
not stable and may change in any release; do not parse it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import Field

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.pdata import any_value_to_python, count_items, duration_ns, metric_points
from collector.core.signals import Signal


class Config(ComponentConfig):
    verbosity: Literal["basic", "normal", "detailed"] = "basic"
    """`basic`: one line per batch with its counts. `normal`: also one line per span, data point
    or log record with its key fields. `detailed`: also a full dump of every field. Default
    basic."""

    sampling_initial: int = Field(2, ge=0)
    """Batches logged in full each second before sampling starts. Default 2."""

    sampling_thereafter: int = Field(1, ge=0)
    """After the initial batches of a second, log every Nth. Default 1 (log every batch); 0 logs
    none after the initial ones."""


class _Sampler:
    """The Collector's log sampling: in each one-second window the first `initial` events pass,
    then every `thereafter`-th."""

    def __init__(
        self, initial: int, thereafter: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.initial = initial
        self.thereafter = thereafter
        self._clock = clock
        self._window_end = float("-inf")
        self._count = 0

    def sample(self) -> bool:
        now = self._clock()
        if now >= self._window_end:
            self._window_end = now + 1.0
            self._count = 0
        self._count += 1
        if self._count <= self.initial:
            return True
        return bool(self.thereafter) and (self._count - self.initial) % self.thereafter == 0


# --- value formatting -----------------------------------------------------------------------

_VALUE_TYPES = {
    "string_value": "Str",
    "bool_value": "Bool",
    "int_value": "Int",
    "double_value": "Double",
    "bytes_value": "Bytes",
    "array_value": "Slice",
    "kvlist_value": "Map",
}


def _json(obj) -> str:
    return json.dumps(obj, default=lambda b: b.hex())


def _typed(value) -> str:
    """An AnyValue with its type, as the Collector prints it: Str(GET), Int(3), Map({...})."""
    kind = value.WhichOneof("value")
    if kind is None:
        return "Empty()"
    plain = any_value_to_python(value)
    if kind in ("bool_value", "array_value", "kvlist_value"):
        text = _json(plain)
    elif kind == "bytes_value":
        text = plain.hex()
    else:
        text = str(plain)
    return f"{_VALUE_TYPES[kind]}({text})"


def _plain(value) -> str:
    plain = any_value_to_python(value)
    return plain if isinstance(plain, str) else _json(plain)


def _pairs(attrs, sep: str = " ") -> str:
    return sep.join(f"{kv.key}={_plain(kv.value)}" for kv in attrs)


def _time(unix_nano: int) -> str:
    seconds, nanos = divmod(unix_nano, 1_000_000_000)
    day_time = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{day_time}.{nanos:09d} +0000 UTC"


def _enum(enum, value: int, prefix: str) -> str:
    """SPAN_KIND_SERVER -> Server; unknown numbers print as numbers."""
    try:
        return enum.Name(value).removeprefix(prefix).capitalize()
    except ValueError:
        return str(value)


def _attributes(out: list[str], title: str, attrs, indent: str = "") -> None:
    if attrs:
        out.append(f"{indent}{title}:")
        out.extend(f"{indent}     -> {kv.key}: {_typed(kv.value)}" for kv in attrs)


def _resource(out: list[str], title: str, index: int, resource, schema_url: str) -> None:
    out.append(f"{title} #{index}")
    out.append(f"Resource SchemaURL: {schema_url}")
    _attributes(out, "Resource attributes", resource.attributes)


def _scope(out: list[str], title: str, index: int, scope, schema_url: str) -> None:
    out.append(f"{title} #{index}")
    out.append(f"{title} SchemaURL: {schema_url}")
    out.append(f"InstrumentationScope {scope.name} {scope.version}".rstrip())
    _attributes(out, "InstrumentationScope attributes", scope.attributes)


def _scope_name(scope) -> str:
    return f"{scope.name}@{scope.version}" if scope.version else scope.name


# --- traces ---------------------------------------------------------------------------------


def _traces_summary(batch) -> dict:
    return {"resource spans": len(batch.resource_spans), "spans": count_items(batch)}


def _traces_normal(batch) -> list[str]:
    out = []
    for i, rs in enumerate(batch.resource_spans):
        out.append(f"ResourceSpans #{i} {_pairs(rs.resource.attributes)}".rstrip())
        for j, ss in enumerate(rs.scope_spans):
            out.append(f"ScopeSpans #{j} {_scope_name(ss.scope)}".rstrip())
            for span in ss.spans:
                fields = [
                    span.name,
                    f"trace_id={span.trace_id.hex()}",
                    f"span_id={span.span_id.hex()}",
                    f"duration={duration_ns(span) / 1e6:g}ms",
                ]
                if span.status.code != Status.STATUS_CODE_UNSET:
                    status = _enum(Status.StatusCode, span.status.code, "STATUS_CODE_")
                    fields.append(f"status={status}")
                fields.append(_pairs(span.attributes))
                out.append(" ".join(fields).rstrip())
    return out


def _traces_detailed(batch) -> list[str]:
    out: list[str] = []
    for i, rs in enumerate(batch.resource_spans):
        _resource(out, "ResourceSpans", i, rs.resource, rs.schema_url)
        for j, ss in enumerate(rs.scope_spans):
            _scope(out, "ScopeSpans", j, ss.scope, ss.schema_url)
            for k, span in enumerate(ss.spans):
                _span(out, k, span)
    return out


def _span(out: list[str], index: int, span: Span) -> None:
    out += [
        f"Span #{index}",
        f"    Trace ID       : {span.trace_id.hex()}",
        f"    Parent ID      : {span.parent_span_id.hex()}",
        f"    ID             : {span.span_id.hex()}",
        f"    Name           : {span.name}",
        f"    Kind           : {_enum(Span.SpanKind, span.kind, 'SPAN_KIND_')}",
        f"    Start time     : {_time(span.start_time_unix_nano)}",
        f"    End time       : {_time(span.end_time_unix_nano)}",
        f"    Status code    : {_enum(Status.StatusCode, span.status.code, 'STATUS_CODE_')}",
        f"    Status message : {span.status.message}",
    ]
    if span.trace_state:
        out.append(f"    TraceState     : {span.trace_state}")
    _attributes(out, "Attributes", span.attributes)
    if span.events:
        out.append("Events:")
    for n, event in enumerate(span.events):
        out += [
            f"SpanEvent #{n}",
            f"     -> Name: {event.name}",
            f"     -> Timestamp: {_time(event.time_unix_nano)}",
            f"     -> DroppedAttributesCount: {event.dropped_attributes_count}",
        ]
        _attributes(out, "-> Attributes", event.attributes, indent="     ")
    if span.links:
        out.append("Links:")
    for n, link in enumerate(span.links):
        out += [
            f"SpanLink #{n}",
            f"     -> Trace ID: {link.trace_id.hex()}",
            f"     -> ID: {link.span_id.hex()}",
            f"     -> TraceState: {link.trace_state}",
            f"     -> DroppedAttributesCount: {link.dropped_attributes_count}",
        ]
        _attributes(out, "-> Attributes", link.attributes, indent="     ")


# --- metrics --------------------------------------------------------------------------------


def _metrics_summary(batch) -> dict:
    return {
        "resource metrics": len(batch.resource_metrics),
        "metrics": sum(len(sm.metrics) for rm in batch.resource_metrics for sm in rm.scope_metrics),
        "data points": count_items(batch),
    }


def _point_value(kind: str | None, point) -> str:
    if kind in ("gauge", "sum"):
        return _json(getattr(point, point.WhichOneof("value") or "as_int"))
    return f"count={point.count} sum={point.sum:g}"


def _metrics_normal(batch) -> list[str]:
    out = []
    for i, rm in enumerate(batch.resource_metrics):
        out.append(f"ResourceMetrics #{i} {_pairs(rm.resource.attributes)}".rstrip())
        for j, sm in enumerate(rm.scope_metrics):
            out.append(f"ScopeMetrics #{j} {_scope_name(sm.scope)}".rstrip())
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                for point in metric_points(metric):
                    labels = _pairs(point.attributes, sep=",")
                    out.append(f"{metric.name}{{{labels}}} {_point_value(kind, point)}")
    return out


_DATA_TYPES = {
    "gauge": "Gauge",
    "sum": "Sum",
    "histogram": "Histogram",
    "exponential_histogram": "ExponentialHistogram",
    "summary": "Summary",
}
_POINT_TITLES = {
    "gauge": "NumberDataPoints",
    "sum": "NumberDataPoints",
    "histogram": "HistogramDataPoints",
    "exponential_histogram": "ExponentialHistogramDataPoints",
    "summary": "SummaryDataPoints",
}


def _metrics_detailed(batch) -> list[str]:
    out: list[str] = []
    for i, rm in enumerate(batch.resource_metrics):
        _resource(out, "ResourceMetrics", i, rm.resource, rm.schema_url)
        for j, sm in enumerate(rm.scope_metrics):
            _scope(out, "ScopeMetrics", j, sm.scope, sm.schema_url)
            for k, metric in enumerate(sm.metrics):
                _metric(out, k, metric)
    return out


def _metric(out: list[str], index: int, metric) -> None:
    kind = metric.WhichOneof("data")
    out += [
        f"Metric #{index}",
        "Descriptor:",
        f"     -> Name: {metric.name}",
        f"     -> Description: {metric.description}",
        f"     -> Unit: {metric.unit}",
        f"     -> DataType: {_DATA_TYPES.get(kind, 'Empty')}",
    ]
    if kind is None:
        return
    data = getattr(metric, kind)
    if kind == "sum":
        out.append(f"     -> IsMonotonic: {_json(data.is_monotonic)}")
    if kind in ("sum", "histogram", "exponential_histogram"):
        temporality = _enum(
            AggregationTemporality, data.aggregation_temporality, "AGGREGATION_TEMPORALITY_"
        )
        out.append(f"     -> AggregationTemporality: {temporality}")
    for n, point in enumerate(data.data_points):
        out.append(f"{_POINT_TITLES[kind]} #{n}")
        _attributes(out, "Data point attributes", point.attributes)
        out.append(f"StartTimestamp: {_time(point.start_time_unix_nano)}")
        out.append(f"Timestamp: {_time(point.time_unix_nano)}")
        _point_details(out, kind, point)


def _point_details(out: list[str], kind: str, point) -> None:
    if kind in ("gauge", "sum"):
        out.append(f"Value: {_point_value(kind, point)}")
        return
    out.append(f"Count: {point.count}")
    out.append(f"Sum: {point.sum:g}")
    if kind != "summary":
        if point.HasField("min"):
            out.append(f"Min: {point.min:g}")
        if point.HasField("max"):
            out.append(f"Max: {point.max:g}")
    if kind == "histogram":
        out += [f"ExplicitBounds #{n}: {b:g}" for n, b in enumerate(point.explicit_bounds)]
        out += [f"Buckets #{n}, Count: {c}" for n, c in enumerate(point.bucket_counts)]
    elif kind == "exponential_histogram":
        out.append(f"Scale: {point.scale}")
        out.append(f"ZeroCount: {point.zero_count}")
        for side in ("positive", "negative"):
            buckets = getattr(point, side)
            out.append(
                f"{side.capitalize()} offset: {buckets.offset}, "
                f"bucket counts: {list(buckets.bucket_counts)}"
            )
    else:
        out += [
            f"QuantileValue #{n}: Quantile {q.quantile:g}, Value {q.value:g}"
            for n, q in enumerate(point.quantile_values)
        ]


# --- logs -----------------------------------------------------------------------------------


def _logs_summary(batch) -> dict:
    return {"resource logs": len(batch.resource_logs), "log records": count_items(batch)}


def _logs_normal(batch) -> list[str]:
    out = []
    for i, rl in enumerate(batch.resource_logs):
        out.append(f"ResourceLogs #{i} {_pairs(rl.resource.attributes)}".rstrip())
        for j, sl in enumerate(rl.scope_logs):
            out.append(f"ScopeLogs #{j} {_scope_name(sl.scope)}".rstrip())
            for record in sl.log_records:
                fields = [
                    record.severity_text
                    or _enum(SeverityNumber, record.severity_number, "SEVERITY_NUMBER_").upper(),
                    _plain(record.body),
                ]
                if record.trace_id:
                    fields.append(f"trace_id={record.trace_id.hex()}")
                if record.span_id:
                    fields.append(f"span_id={record.span_id.hex()}")
                fields.append(_pairs(record.attributes))
                out.append(" ".join(fields).rstrip())
    return out


def _logs_detailed(batch) -> list[str]:
    out: list[str] = []
    for i, rl in enumerate(batch.resource_logs):
        _resource(out, "ResourceLogs", i, rl.resource, rl.schema_url)
        for j, sl in enumerate(rl.scope_logs):
            _scope(out, "ScopeLogs", j, sl.scope, sl.schema_url)
            for k, record in enumerate(sl.log_records):
                severity = _enum(SeverityNumber, record.severity_number, "SEVERITY_NUMBER_")
                out += [
                    f"LogRecord #{k}",
                    f"ObservedTimestamp: {_time(record.observed_time_unix_nano)}",
                    f"Timestamp: {_time(record.time_unix_nano)}",
                    f"SeverityText: {record.severity_text}",
                    f"SeverityNumber: {severity}({record.severity_number})",
                ]
                if record.event_name:
                    out.append(f"EventName: {record.event_name}")
                out.append(f"Body: {_typed(record.body)}")
                _attributes(out, "Attributes", record.attributes)
                out += [
                    f"Trace ID: {record.trace_id.hex()}",
                    f"Span ID: {record.span_id.hex()}",
                    f"Flags: {record.flags}",
                ]
    return out


# Per signal: the summary message, its count fields, and the normal and detailed dumps.
_VIEWS = {
    Signal.TRACES: ("Traces", _traces_summary, _traces_normal, _traces_detailed),
    Signal.METRICS: ("Metrics", _metrics_summary, _metrics_normal, _metrics_detailed),
    Signal.LOGS: ("Logs", _logs_summary, _logs_normal, _logs_detailed),
}


class DebugExporter:
    """Logs each sampled batch through the component logger at INFO."""

    mutates_data = False

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        self.log = settings.logger
        self._title, self._summary, normal, detailed = _VIEWS[signal]
        self._dump = {"basic": None, "normal": normal, "detailed": detailed}[config.verbosity]
        self._sampler = _Sampler(config.sampling_initial, config.sampling_thereafter)
        exporter = str(settings.id)
        self._sent = settings.telemetry.exporter_sent[signal].labels(exporter=exporter)

    async def start(self, host) -> None:
        pass

    async def consume(self, batch) -> None:
        # Checking the level first spares building dumps nobody will see.
        if self.log.isEnabledFor(logging.INFO) and self._sampler.sample():
            self.log.info(self._title, extra={"kv": self._summary(batch)})
            if self._dump:
                self.log.info("\n".join(self._dump(batch)))
        self._sent.inc(count_items(batch))

    async def shutdown(self) -> None:
        pass


factory = Factory(
    kind=Kind.EXPORTER,
    type="debug",
    config=Config,
    create=DebugExporter,
    signals={s: Stability.DEVELOPMENT for s in Signal},
    description="Logs batches to stderr at three verbosities; the output format is not stable.",
)
