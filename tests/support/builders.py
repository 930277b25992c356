"""Build OTLP batches for tests: spans, metric points and log records with known content."""

from __future__ import annotations

import os
import time

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.pdata import Logs, Metrics, Traces, set_attr


def _ids() -> tuple[bytes, bytes]:
    return os.urandom(16), os.urandom(8)


def make_traces(
    spans: int = 1,
    *,
    resource: dict | None = None,
    name: str = "GET /items/{id}",
    kind: Span.SpanKind.ValueType = Span.SPAN_KIND_SERVER,
    attributes: dict | None = None,
    duration_ms: float = 10.0,
    error: bool = False,
    trace_id: bytes | None = None,
    parent_span_id: bytes = b"",
) -> Traces:
    """One resource, one scope, `spans` spans (fresh ids, same trace when `trace_id` is given)."""
    batch = Traces()
    rs = batch.resource_spans.add()
    for k, v in (resource or {"service.name": "checkout"}).items():
        set_attr(rs.resource.attributes, k, v)
    ss = rs.scope_spans.add()
    ss.scope.name = "coldtail.testing"
    now = time.time_ns()
    for i in range(spans):
        tid, sid = _ids()
        span = ss.spans.add()
        span.trace_id = trace_id or tid
        span.span_id = sid
        span.parent_span_id = parent_span_id
        span.name = name
        span.kind = kind
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + int(duration_ms * 1e6)
        for k, v in (attributes or {}).items():
            set_attr(span.attributes, k, v)
        set_attr(span.attributes, "test.index", i)
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "boom"
    return batch


def make_metrics(
    points: int = 1, *, resource: dict | None = None, name: str = "requests"
) -> Metrics:
    """One cumulative monotonic sum with `points` data points (attribute `test.index`)."""
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for k, v in (resource or {"service.name": "checkout"}).items():
        set_attr(rm.resource.attributes, k, v)
    sm = rm.scope_metrics.add()
    sm.scope.name = "coldtail.testing"
    metric = sm.metrics.add()
    metric.name = name
    metric.unit = "1"
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    now = time.time_ns()
    for i in range(points):
        dp = metric.sum.data_points.add()
        dp.start_time_unix_nano = now - 1_000_000_000
        dp.time_unix_nano = now
        dp.as_int = i + 1
        set_attr(dp.attributes, "test.index", i)
    return batch


def make_logs(records: int = 1, *, resource: dict | None = None, body: str = "hello") -> Logs:
    batch = Logs()
    rl = batch.resource_logs.add()
    for k, v in (resource or {"service.name": "checkout"}).items():
        set_attr(rl.resource.attributes, k, v)
    sl = rl.scope_logs.add()
    sl.scope.name = "coldtail.testing"
    now = time.time_ns()
    for i in range(records):
        rec = sl.log_records.add()
        rec.time_unix_nano = now
        rec.observed_time_unix_nano = now
        rec.severity_number = SeverityNumber.SEVERITY_NUMBER_INFO
        rec.severity_text = "INFO"
        rec.body.string_value = f"{body} {i}"
        set_attr(rec.attributes, "test.index", i)
    return batch
