import logging

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.component import Kind
from collector.core.pdata import Logs, Metrics, Traces, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.exporters import debug
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings

T0 = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC
TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_ID = bytes.fromhex("b7ad6b7169203331")
PARENT_ID = bytes.fromhex("00f067aa0ba902b7")


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def logged():
    logger = logging.getLogger("coldtail.exporter.debug")
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)


async def export(signal: Signal, *batches, telemetry: Telemetry | None = None, **config) -> None:
    settings = make_settings(Kind.EXPORTER, "debug", telemetry=telemetry)
    exporter = debug.DebugExporter(settings, debug.Config.model_validate(config), signal)
    await exporter.start(StaticHost())
    for batch in batches:
        await exporter.consume(batch)
    await exporter.shutdown()


def fixed_traces() -> Traces:
    batch = Traces()
    rs = batch.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
    set_attr(rs.resource.attributes, "service.name", "checkout")
    ss = rs.scope_spans.add()
    ss.scope.name, ss.scope.version = "shop", "1.0"
    span = ss.spans.add(
        trace_id=TRACE_ID,
        span_id=SPAN_ID,
        parent_span_id=PARENT_ID,
        name="GET /items",
        kind=Span.SPAN_KIND_SERVER,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 12_500_000,
    )
    span.status.code, span.status.message = Status.STATUS_CODE_ERROR, "boom"
    set_attr(span.attributes, "http.status_code", 500)
    set_attr(span.attributes, "tags", ["a", "b"])
    event = span.events.add(name="exception", time_unix_nano=T0 + 1_000)
    set_attr(event.attributes, "exception.type", "ValueError")
    span.links.add(trace_id=TRACE_ID, span_id=PARENT_ID, trace_state="x=y")
    return batch


async def test_basic_logs_one_summary_line_per_batch(logged):
    await export(Signal.TRACES, make_traces(3), make_traces(2))
    await export(Signal.METRICS, make_metrics(4))
    await export(Signal.LOGS, make_logs(5))

    assert logged.messages == ["Traces", "Traces", "Metrics", "Logs"]
    counts = [{k: v for k, v in r.kv.items() if k not in ("kind", "name")} for r in logged.records]
    assert counts == [
        {"resource spans": 1, "spans": 3},
        {"resource spans": 1, "spans": 2},
        {"resource metrics": 1, "metrics": 1, "data points": 4},
        {"resource logs": 1, "log records": 5},
    ]
    assert logged.records[0].kv["name"] == "debug"
    assert all(r.levelno == logging.INFO for r in logged.records)


async def test_normal_traces_one_line_per_span(logged):
    await export(Signal.TRACES, fixed_traces(), verbosity="normal")
    assert logged.messages[0] == "Traces"
    assert logged.messages[1].splitlines() == [
        "ResourceSpans #0 service.name=checkout",
        "ScopeSpans #0 shop@1.0",
        "GET /items trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331 "
        'duration=12.5ms status=Error http.status_code=500 tags=["a", "b"]',
    ]


async def test_normal_metrics_one_line_per_point(logged):
    batch = make_metrics(2)
    metric = batch.resource_metrics[0].scope_metrics[0].metrics.add(name="latency")
    point = metric.histogram.data_points.add(count=3, sum=7.5)
    set_attr(point.attributes, "route", "/")
    set_attr(point.attributes, "code", 200)
    await export(Signal.METRICS, batch, verbosity="normal")
    assert logged.messages[1].splitlines() == [
        "ResourceMetrics #0 service.name=checkout",
        "ScopeMetrics #0 coldtail.testing",
        "requests{test.index=0} 1",
        "requests{test.index=1} 2",
        "latency{route=/,code=200} count=3 sum=7.5",
    ]


async def test_normal_logs_one_line_per_record(logged):
    batch = make_logs(2)
    record = batch.resource_logs[0].scope_logs[0].log_records[1]
    record.trace_id, record.span_id = TRACE_ID, SPAN_ID
    record.severity_text = ""
    await export(Signal.LOGS, batch, verbosity="normal")
    assert logged.messages[1].splitlines() == [
        "ResourceLogs #0 service.name=checkout",
        "ScopeLogs #0 coldtail.testing",
        "INFO hello 0 test.index=0",
        "INFO hello 1 trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331 "
        "test.index=1",
    ]


async def test_detailed_traces_dump_every_field(logged):
    await export(Signal.TRACES, fixed_traces(), verbosity="detailed")
    assert logged.messages[1].splitlines() == [
        "ResourceSpans #0",
        "Resource SchemaURL: https://opentelemetry.io/schemas/1.26.0",
        "Resource attributes:",
        "     -> service.name: Str(checkout)",
        "ScopeSpans #0",
        "ScopeSpans SchemaURL: ",
        "InstrumentationScope shop 1.0",
        "Span #0",
        "    Trace ID       : 0af7651916cd43dd8448eb211c80319c",
        "    Parent ID      : 00f067aa0ba902b7",
        "    ID             : b7ad6b7169203331",
        "    Name           : GET /items",
        "    Kind           : Server",
        "    Start time     : 2023-11-14 22:13:20.000000000 +0000 UTC",
        "    End time       : 2023-11-14 22:13:20.012500000 +0000 UTC",
        "    Status code    : Error",
        "    Status message : boom",
        "Attributes:",
        "     -> http.status_code: Int(500)",
        '     -> tags: Slice(["a", "b"])',
        "Events:",
        "SpanEvent #0",
        "     -> Name: exception",
        "     -> Timestamp: 2023-11-14 22:13:20.000001000 +0000 UTC",
        "     -> DroppedAttributesCount: 0",
        "     -> Attributes:",
        "          -> exception.type: Str(ValueError)",
        "Links:",
        "SpanLink #0",
        "     -> Trace ID: 0af7651916cd43dd8448eb211c80319c",
        "     -> ID: 00f067aa0ba902b7",
        "     -> TraceState: x=y",
        "     -> DroppedAttributesCount: 0",
    ]


async def test_detailed_metrics_dump_every_point_type(logged):
    batch = Metrics()
    sm = batch.resource_metrics.add().scope_metrics.add()
    gauge = sm.metrics.add(name="temperature", unit="Cel", description="Room temperature")
    gauge.gauge.data_points.add(as_double=21.5, time_unix_nano=T0)
    hist = sm.metrics.add(name="latency", unit="ms")
    hist.histogram.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    hp = hist.histogram.data_points.add(
        count=3, sum=7.5, min=1, max=5, explicit_bounds=[2.0], bucket_counts=[1, 2]
    )
    set_attr(hp.attributes, "route", "/")
    summary = sm.metrics.add(name="size")
    summary.summary.data_points.add(count=2, sum=10).quantile_values.add(quantile=0.5, value=4)
    expo = sm.metrics.add(name="expo")
    ep = expo.exponential_histogram.data_points.add(count=4, sum=8, scale=1, zero_count=1)
    ep.positive.offset, ep.positive.bucket_counts[:] = 2, [1, 2]

    await export(Signal.METRICS, batch, verbosity="detailed")
    lines = logged.messages[1].splitlines()
    epoch = "1970-01-01 00:00:00.000000000 +0000 UTC"
    for expected in [
        [
            "Metric #0",
            "Descriptor:",
            "     -> Name: temperature",
            "     -> Description: Room temperature",
            "     -> Unit: Cel",
            "     -> DataType: Gauge",
            "NumberDataPoints #0",
            f"StartTimestamp: {epoch}",
            "Timestamp: 2023-11-14 22:13:20.000000000 +0000 UTC",
            "Value: 21.5",
        ],
        [
            "     -> DataType: Histogram",
            "     -> AggregationTemporality: Delta",
            "HistogramDataPoints #0",
            "Data point attributes:",
            "     -> route: Str(/)",
        ],
        [
            "Count: 3",
            "Sum: 7.5",
            "Min: 1",
            "Max: 5",
            "ExplicitBounds #0: 2",
            "Buckets #0, Count: 1",
            "Buckets #1, Count: 2",
        ],
        ["SummaryDataPoints #0"],
        ["Count: 2", "Sum: 10", "QuantileValue #0: Quantile 0.5, Value 4"],
        ["ExponentialHistogramDataPoints #0"],
        [
            "Count: 4",
            "Sum: 8",
            "Scale: 1",
            "ZeroCount: 1",
            "Positive offset: 2, bucket counts: [1, 2]",
            "Negative offset: 0, bucket counts: []",
        ],
    ]:
        start = lines.index(expected[0])
        assert lines[start : start + len(expected)] == expected


async def test_detailed_logs_dump_every_field(logged):
    batch = Logs()
    record = (
        batch.resource_logs.add()
        .scope_logs.add()
        .log_records.add(
            time_unix_nano=T0,
            observed_time_unix_nano=T0 + 1,
            severity_number=17,
            severity_text="ERROR",
            trace_id=TRACE_ID,
            span_id=SPAN_ID,
            flags=1,
        )
    )
    record.body.kvlist_value.values.add(key="msg").value.string_value = "failed"
    set_attr(record.attributes, "retry", True)

    await export(Signal.LOGS, batch, verbosity="detailed")
    lines = logged.messages[1].splitlines()
    start = lines.index("LogRecord #0")
    assert lines[start:] == [
        "LogRecord #0",
        "ObservedTimestamp: 2023-11-14 22:13:20.000000001 +0000 UTC",
        "Timestamp: 2023-11-14 22:13:20.000000000 +0000 UTC",
        "SeverityText: ERROR",
        "SeverityNumber: Error(17)",
        'Body: Map({"msg": "failed"})',
        "Attributes:",
        "     -> retry: Bool(true)",
        "Trace ID: 0af7651916cd43dd8448eb211c80319c",
        "Span ID: b7ad6b7169203331",
        "Flags: 1",
    ]


async def test_sampling_logs_initial_batches_then_every_nth(logged):
    telemetry = Telemetry()
    batches = [make_traces(1) for _ in range(10)]
    await export(
        Signal.TRACES, *batches, telemetry=telemetry, sampling_initial=2, sampling_thereafter=3
    )
    # Batches 1 and 2, then 5 and 8; every batch still counts as sent.
    assert logged.messages == ["Traces"] * 4
    sent = telemetry.registry.get_sample_value(
        "otelcol_exporter_sent_spans_total", {"exporter": "debug"}
    )
    assert sent == 10


def test_sampler_starts_over_every_second():
    now = [100.0]
    sampler = debug._Sampler(initial=1, thereafter=0, clock=lambda: now[0])
    assert [sampler.sample() for _ in range(3)] == [True, False, False]
    now[0] += 0.999
    assert sampler.sample() is False
    now[0] += 0.001
    assert [sampler.sample() for _ in range(2)] == [True, False]


async def test_nothing_is_built_when_info_is_disabled(logged):
    logging.getLogger("coldtail.exporter.debug").setLevel(logging.WARNING)
    await export(Signal.LOGS, make_logs(1), verbosity="detailed")
    assert logged.records == []


def test_factory():
    assert debug.factory.type == "debug"
    assert debug.factory.create is debug.DebugExporter
    assert all(debug.factory.supports(s) for s in Signal)


def test_defaults():
    config = debug.Config()
    assert (config.verbosity, config.sampling_initial, config.sampling_thereafter) == (
        "basic",
        2,
        1,
    )
