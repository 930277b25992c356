import asyncio
import logging
from pathlib import Path

import pytest
import yaml
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.connectors.span_metrics import Config, factory
from collector.core import otlpjson
from collector.core.component import Factory, Kind
from collector.core.config import validate
from collector.core.consumer import RetryableError
from collector.core.pdata import Metrics, Traces, any_value_to_python, count_metric_points, get_attr
from collector.core.service import Service
from collector.core.signals import Signal
from tests.support import recording
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

TESTDATA = Path(__file__).parent / "testdata"
CASES = yaml.safe_load((TESTDATA / "span_metrics.yaml").read_text())
CALLS = "traces.span.metrics.calls"
DURATION = "traces.span.metrics.duration"
DEFAULT_BOUNDS_MS = [2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10000, 15000]


def test_defaults_are_the_collectors():
    config = Config.model_validate(None)
    assert config.namespace == "traces.span.metrics"
    assert config.metrics_flush_interval == 15.0
    assert config.histogram.unit == "ms"
    assert [round(b * 1000, 6) for b in config.histogram.explicit.buckets] == DEFAULT_BOUNDS_MS
    assert config.aggregation_cardinality_limit == 10000


def test_factory_shape():
    assert isinstance(factory, Factory)
    assert (factory.kind, factory.type, factory.aliases) == (
        Kind.CONNECTOR,
        "span_metrics",
        ("spanmetrics",),
    )
    assert factory.connects(Signal.TRACES, Signal.METRICS)
    assert not factory.connects(Signal.METRICS, Signal.METRICS)


# --- helpers ----------------------------------------------------------------------------------


def make_connector(config: dict | None = None, sink=None):
    sink = sink if sink is not None else SinkConsumer()
    connector = factory.create(
        make_settings(Kind.CONNECTOR, "span_metrics"),
        Config.model_validate(config or {}),
        Signal.TRACES,
        {Signal.METRICS: sink},
    )
    return connector, sink


def attrs(kvs) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in kvs}


def points(batch: Metrics, name: str) -> list[tuple[dict, dict, object]]:
    """(resource attributes, point attributes, point) for every point of metric `name`."""
    out = []
    for rm in batch.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    data = getattr(metric, metric.WhichOneof("data")).data_points
                    out += [(attrs(rm.resource.attributes), attrs(p.attributes), p) for p in data]
    return out


def only_point(batch: Metrics, name: str):
    (found,) = points(batch, name)
    return found[2]


def series(batch: Metrics, name: str, key: str = "span.name") -> dict:
    """Points of metric `name` by the value of point attribute `key`."""
    return {a.get(key): p for _, a, p in points(batch, name)}


def with_status(batch: Traces, code: int) -> Traces:
    for rs in batch.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                span.status.code = code
    return batch


async def flushed(connector, sink) -> Metrics:
    """The batch one flush sends."""
    sink.reset()
    await connector.flush()
    (batch,) = sink.batches
    return batch


# --- aggregation ------------------------------------------------------------------------------


async def test_counts_buckets_and_sum_exact_for_known_durations():
    connector, sink = make_connector()
    durations_ms = [1, 2, 3, 10, 15, 1400, 20_000]
    for d in durations_ms:
        await connector.consume(make_traces(1, duration_ms=d))
    await connector.consume(make_traces(3, duration_ms=5))
    batch = await flushed(connector, sink)

    calls = only_point(batch, CALLS)
    assert calls.as_int == 10
    hist = only_point(batch, DURATION)
    assert hist.count == 10
    assert hist.sum == pytest.approx(sum(durations_ms) + 15)
    assert list(hist.explicit_bounds) == DEFAULT_BOUNDS_MS
    expected = [0] * (len(DEFAULT_BOUNDS_MS) + 1)
    # Bounds are inclusive upper limits: 2ms counts in the first bucket, 1400ms in the 1400 one.
    for index in (0, 0, 1, 2, 2, 2, 4, 5, 11, 16):
        expected[index] += 1
    assert list(hist.bucket_counts) == expected


async def test_metric_shapes_are_the_collectors():
    connector, sink = make_connector()
    await connector.consume(make_traces(2))
    batch = await flushed(connector, sink)
    (rm,) = batch.resource_metrics
    (sm,) = rm.scope_metrics
    assert sm.scope.name == "spanmetricsconnector"
    calls, duration = sm.metrics
    assert calls.name == CALLS
    assert calls.sum.is_monotonic
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert calls.sum.aggregation_temporality == cumulative
    assert duration.name == DURATION
    assert duration.unit == "ms"
    assert duration.histogram.aggregation_temporality == cumulative


async def test_default_dimensions_and_kind_and_status_values():
    connector, sink = make_connector()
    await connector.consume(make_traces(2, name="GET /a", kind=Span.SPAN_KIND_SERVER))
    await connector.consume(make_traces(1, name="GET /a", kind=Span.SPAN_KIND_SERVER, error=True))
    await connector.consume(
        with_status(make_traces(1, name="dynamodb", kind=Span.SPAN_KIND_CLIENT), 1)
    )
    batch = await flushed(connector, sink)
    found = {
        (a["span.name"], a["span.kind"], a["status.code"]): (a, p.as_int)
        for _, a, p in points(batch, CALLS)
    }
    assert set(found) == {
        ("GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"),
        ("GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"),
        ("dynamodb", "SPAN_KIND_CLIENT", "STATUS_CODE_OK"),
    }
    point_attrs, count = found["GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET"]
    assert count == 2
    assert point_attrs == {
        "service.name": "checkout",
        "span.name": "GET /a",
        "span.kind": "SPAN_KIND_SERVER",
        "status.code": "STATUS_CODE_UNSET",
    }
    assert found["GET /a", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR"][1] == 1


async def test_dimensions_from_span_then_resource_then_default_else_omitted():
    connector, sink = make_connector(
        {
            "dimensions": [
                {"name": "http.route"},
                {"name": "faas.name"},
                {"name": "coldtail.cold_start", "default": "false"},
                {"name": "http.status_code"},
                {"name": "cloud.region"},
            ]
        }
    )
    resource = {"service.name": "orders", "faas.name": "orders-fn", "faas.instance": "abc"}
    await connector.consume(
        make_traces(
            2,
            name="a",
            resource=resource,
            attributes={"http.route": "/orders/{id}", "http.status_code": 200},
        )
    )
    # The span attribute wins over the resource's; a typed value keeps its type.
    await connector.consume(
        make_traces(
            1,
            name="b",
            resource=resource,
            attributes={"faas.name": "override", "coldtail.cold_start": True},
        )
    )
    batch = await flushed(connector, sink)
    found = series(batch, CALLS)
    assert attrs(found["a"].attributes) == {
        "service.name": "orders",
        "span.name": "a",
        "span.kind": "SPAN_KIND_SERVER",
        "status.code": "STATUS_CODE_UNSET",
        "http.route": "/orders/{id}",
        "faas.name": "orders-fn",
        "coldtail.cold_start": "false",
        "http.status_code": 200,
    }
    assert found["a"].as_int == 2
    b = attrs(found["b"].attributes)
    assert (b["faas.name"], b["coldtail.cold_start"]) == ("override", True)
    assert "http.route" not in b
    assert "cloud.region" not in b
    assert series(batch, DURATION)["a"].attributes == found["a"].attributes


async def test_dimension_value_types_make_distinct_series():
    connector, sink = make_connector({"dimensions": [{"name": "flag"}]})
    await connector.consume(make_traces(1, attributes={"flag": 1}))
    await connector.consume(make_traces(1, attributes={"flag": True}))
    await connector.consume(make_traces(1, attributes={"flag": "1"}))
    batch = await flushed(connector, sink)
    assert sorted(repr(a["flag"]) for _, a, _ in points(batch, CALLS)) == ["'1'", "1", "True"]


async def test_exclude_dimensions_merges_series():
    connector, sink = make_connector({"exclude_dimensions": ["status.code", "span.kind"]})
    await connector.consume(make_traces(1, name="x", kind=Span.SPAN_KIND_CLIENT))
    await connector.consume(make_traces(1, name="x", error=True))
    batch = await flushed(connector, sink)
    (_, point_attrs, point) = points(batch, CALLS)[0]
    assert point_attrs == {"service.name": "checkout", "span.name": "x"}
    assert point.as_int == 2


async def test_cumulative_across_flushes():
    connector, sink = make_connector()
    await connector.consume(make_traces(2, duration_ms=3))
    first = only_point(await flushed(connector, sink), DURATION)
    await asyncio.sleep(0.01)
    await connector.consume(make_traces(3, duration_ms=30))
    second_batch = await flushed(connector, sink)
    second = only_point(second_batch, DURATION)
    assert second.start_time_unix_nano == first.start_time_unix_nano
    assert second.time_unix_nano > first.time_unix_nano
    assert first.start_time_unix_nano <= first.time_unix_nano
    assert (first.count, second.count) == (2, 5)
    assert second.sum == pytest.approx(96)
    assert only_point(second_batch, CALLS).as_int == 5
    # Nothing new: the same cumulative values are sent again.
    third = only_point(await flushed(connector, sink), CALLS)
    assert third.as_int == 5
    assert third.start_time_unix_nano == first.start_time_unix_nano


async def test_cardinality_limit_sends_new_series_to_one_overflow_series():
    connector, sink = make_connector({"aggregation_cardinality_limit": 2})
    for name in ("a", "b", "c", "d", "c"):
        await connector.consume(make_traces(1, name=name))
    await connector.consume(make_traces(2, name="a"))
    batch = await flushed(connector, sink)
    for metric, count_field in ((CALLS, "as_int"), (DURATION, "count")):
        found = points(batch, metric)
        assert len(found) == 3
        counts = {a.get("span.name"): getattr(p, count_field) for _, a, p in found}
        assert counts == {"a": 3, "b": 1, None: 3}
        overflow = next(a for _, a, _ in found if "span.name" not in a)
        assert overflow == {"otel.metric.overflow": True}


async def test_cardinality_limit_is_per_resource():
    connector, sink = make_connector({"aggregation_cardinality_limit": 1})
    for service in ("a", "b"):
        await connector.consume(make_traces(1, name="x", resource={"service.name": service}))
    batch = await flushed(connector, sink)
    assert all("otel.metric.overflow" not in a for _, a, _ in points(batch, CALLS))


@pytest.mark.parametrize(
    ("namespace", "calls", "duration"),
    [
        ("", "calls", "duration"),
        ("lambda.red", "lambda.red.calls", "lambda.red.duration"),
    ],
)
async def test_namespace(namespace, calls, duration):
    connector, sink = make_connector({"namespace": namespace})
    await connector.consume(make_traces(1))
    batch = await flushed(connector, sink)
    names = [m.name for m in batch.resource_metrics[0].scope_metrics[0].metrics]
    assert names == [calls, duration]


async def test_unit_seconds_and_custom_buckets():
    connector, sink = make_connector(
        {"histogram": {"unit": "s", "explicit": {"buckets": ["100ms", "1s", "1m"]}}}
    )
    for d in (50, 100, 500, 1500, 120_000):
        await connector.consume(make_traces(1, duration_ms=d))
    hist = only_point(await flushed(connector, sink), DURATION)
    assert list(hist.explicit_bounds) == [0.1, 1.0, 60.0]
    assert list(hist.bucket_counts) == [2, 1, 1, 1]
    assert hist.sum == pytest.approx(122.15)
    assert points(await flushed(connector, sink), DURATION)[0][2].count == 5


async def test_sub_millisecond_bucket_bounds_are_exact():
    connector, sink = make_connector({"histogram": {"explicit": {"buckets": ["100us", "1400ms"]}}})
    await connector.consume(make_traces(1))
    assert list(only_point(await flushed(connector, sink), DURATION).explicit_bounds) == [
        0.1,
        1400.0,
    ]


async def test_histogram_disabled_sends_calls_only():
    connector, sink = make_connector({"histogram": {"disable": True}})
    await connector.consume(make_traces(4))
    batch = await flushed(connector, sink)
    assert [m.name for m in batch.resource_metrics[0].scope_metrics[0].metrics] == [CALLS]
    assert only_point(batch, CALLS).as_int == 4


async def test_negative_duration_counts_as_zero():
    connector, sink = make_connector()
    batch = make_traces(1)
    span = batch.resource_spans[0].scope_spans[0].spans[0]
    span.end_time_unix_nano = span.start_time_unix_nano - 1000
    await connector.consume(batch)
    hist = only_point(await flushed(connector, sink), DURATION)
    assert (hist.sum, hist.bucket_counts[0]) == (0.0, 1)


# --- resources --------------------------------------------------------------------------------


async def test_one_resource_metrics_per_resource_key_holding_only_key_attributes():
    connector, sink = make_connector({"resource_metrics_key_attributes": ["deployment.env"]})
    for instance in ("i-1", "i-2"):
        resource = {"service.name": "api", "deployment.env": "prod", "faas.instance": instance}
        await connector.consume(make_traces(1, resource=resource))
    await connector.consume(make_traces(1, resource={"service.name": "api"}))
    await connector.consume(make_traces(1, resource={"service.name": "worker"}))
    await connector.consume(make_traces(5, resource={"host.name": "no-service"}))
    batch = await flushed(connector, sink)
    resources = [
        (attrs(rm.resource.attributes), only_point(Metrics(resource_metrics=[rm]), CALLS).as_int)
        for rm in batch.resource_metrics
    ]
    assert resources == [
        ({"service.name": "api", "deployment.env": "prod"}, 2),
        ({"service.name": "api"}, 1),
        ({"service.name": "worker"}, 1),
    ]


async def test_resource_cache_drops_the_least_recently_seen_resource(caplog):
    connector, sink = make_connector({"resource_metrics_cache_size": 2})
    for service in ("a", "b", "a", "c"):
        await connector.consume(make_traces(1, resource={"service.name": service}))
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        batch = await flushed(connector, sink)
    services = {get_attr(rm.resource.attributes, "service.name") for rm in batch.resource_metrics}
    assert services == {"a", "c"}
    assert "resource_metrics_cache_size reached" in caplog.text


async def test_metrics_expiration_drops_idle_series():
    connector, sink = make_connector({"metrics_expiration": "1s"})
    await connector.consume(make_traces(1, name="old"))
    seen = only_point(await flushed(connector, sink), CALLS).time_unix_nano
    await connector.consume(make_traces(1, name="new", resource={"service.name": "other"}))
    # Past the expiration for both series.
    assert connector.collect(seen + 5_000_000_000).resource_metrics == []
    await connector.consume(make_traces(1, name="old"))
    point = only_point(await flushed(connector, sink), CALLS)
    assert point.as_int == 1
    assert point.start_time_unix_nano > seen


# --- data ownership and wire format -----------------------------------------------------------


async def test_keeps_no_reference_to_the_batch():
    connector, sink = make_connector({"dimensions": [{"name": "faas.name"}]})
    batch = make_traces(1, name="a", resource={"service.name": "s", "faas.name": "f"})
    await connector.consume(batch)
    rs = batch.resource_spans[0]
    rs.resource.attributes[0].value.string_value = "changed"
    rs.resource.attributes[1].value.string_value = "changed"
    rs.scope_spans[0].spans[0].name = "changed"
    out = await flushed(connector, sink)
    assert attrs(out.resource_metrics[0].resource.attributes) == {"service.name": "s"}
    assert attrs(only_point(out, CALLS).attributes)["faas.name"] == "f"
    assert set(series(out, CALLS)) == {"a"}


async def test_metric_points_round_trip_as_valid_otlp():
    connector, sink = make_connector({"dimensions": [{"name": "n"}]})
    await connector.consume(make_traces(3, attributes={"n": 7}, duration_ms=42))
    await connector.consume(make_traces(1, name="other", error=True))
    batch = await flushed(connector, sink)
    wire = Metrics.FromString(batch.SerializeToString())
    assert wire == batch
    assert otlpjson.parse(otlpjson.dumps(batch), Metrics) == batch
    assert count_metric_points(wire) == 4
    for _, _, point in points(wire, DURATION):
        assert len(point.bucket_counts) == len(point.explicit_bounds) + 1
        assert sum(point.bucket_counts) == point.count
        assert 0 < point.start_time_unix_nano <= point.time_unix_nano


# --- lifecycle --------------------------------------------------------------------------------


async def test_flushes_every_interval():
    connector, sink = make_connector({"metrics_flush_interval": "30ms"})
    await connector.start(StaticHost())
    await connector.consume(make_traces(2))
    await sink.wait_for(2, timeout=2)
    await sink.wait_for(4, timeout=2)  # cumulative: the same two series again
    await connector.shutdown()


async def test_flushes_on_shutdown_and_shutdown_is_idempotent():
    connector, sink = make_connector({"metrics_flush_interval": "1h"})
    await connector.start(StaticHost())
    await connector.consume(make_traces(3))
    assert sink.batches == []
    await connector.shutdown()
    assert len(sink.batches) == 1
    assert only_point(sink.batches[0], CALLS).as_int == 3
    await connector.shutdown()
    assert len(sink.batches) == 1


async def test_shutdown_without_start_flushes():
    connector, sink = make_connector()
    await connector.consume(make_traces(1))
    await connector.shutdown()
    assert len(sink.batches) == 1


async def test_nothing_sent_without_spans():
    connector, sink = make_connector({"metrics_flush_interval": "10ms"})
    await connector.start(StaticHost())
    await asyncio.sleep(0.05)
    await connector.shutdown()
    assert sink.batches == []


async def test_next_consumer_error_is_logged_and_counts_are_kept(caplog):
    failing = ErrorConsumer(RetryableError("backend down"))
    connector, _ = make_connector(sink=failing)
    await connector.consume(make_traces(2))
    with caplog.at_level(logging.ERROR, logger="coldtail"):
        await connector.flush()
    assert "span metrics not sent" in caplog.text
    await connector.consume(make_traces(1))
    await connector.flush()
    assert [only_point(b, CALLS).as_int for b in failing.batches] == [2, 3]


async def test_exemplars_enabled_warns_at_start(caplog):
    connector, _ = make_connector({"exemplars": {"enabled": True}})
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        await connector.start(StaticHost())
    await connector.shutdown()
    assert "exemplars are not supported" in caplog.text


# --- through the service ----------------------------------------------------------------------

PIPELINES = """
receivers: {testrecv: }
connectors:
  spanmetrics:
    metrics_flush_interval: 1h
    dimensions: [{name: coldtail.cold_start, default: "false"}]
exporters: {testexp/traces: , testexp/metrics: }
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [testrecv], exporters: [spanmetrics, testexp/traces]}
    metrics: {receivers: [spanmetrics], exporters: [testexp/metrics]}
"""


async def test_through_the_service():
    recording.reset()
    registry = recording.recording_registry()
    registry.register(factory)
    service = Service(validate(yaml.safe_load(PIPELINES), registry))
    await service.start()
    receiver = recording.INSTANCES[(Kind.RECEIVER, "testrecv")]
    await receiver.emit(Signal.TRACES, make_traces(2, name="handler"))
    await receiver.emit(
        Signal.TRACES, make_traces(1, name="handler", attributes={"coldtail.cold_start": True})
    )
    await service.shutdown()

    traces_out = recording.INSTANCES[(Kind.EXPORTER, "testexp/traces", "traces")].batches
    assert len(traces_out) == 2
    (metrics,) = recording.INSTANCES[(Kind.EXPORTER, "testexp/metrics", "metrics")].batches
    counts = {a["coldtail.cold_start"]: p.as_int for _, a, p in points(metrics, CALLS)}
    assert counts == {"false": 2, True: 1}


async def test_delta_temporality_sends_each_interval_once_from_the_last_flush():
    connector, _ = make_connector({"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA"})
    await connector.consume(make_traces(2, duration_ms=3))
    first = connector.collect(10_000_000_000)
    calls = only_point(first, CALLS)
    assert calls.as_int == 2
    metric = first.resource_metrics[0].scope_metrics[0].metrics
    temporalities = {
        m.name: m.sum.aggregation_temporality or m.histogram.aggregation_temporality for m in metric
    }
    assert set(temporalities.values()) == {AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA}
    await connector.consume(make_traces(1, duration_ms=3))
    second = connector.collect(20_000_000_000)
    calls = only_point(second, CALLS)
    assert (calls.as_int, calls.start_time_unix_nano) == (1, 10_000_000_000)
    assert only_point(second, DURATION).count == 1
    # No spans since: nothing to send.
    assert connector.collect(30_000_000_000).resource_metrics == []


def test_latency_histogram_buckets_is_the_older_form_of_explicit_buckets():
    config = Config.model_validate({"latency_histogram_buckets": ["5ms", "1s"]})
    assert config.histogram.explicit.buckets == [0.005, 1.0]
    with pytest.raises(ValueError, match="set either latency_histogram_buckets or histogram"):
        Config.model_validate(
            {
                "latency_histogram_buckets": ["5ms"],
                "histogram": {"explicit": {"buckets": ["1s"]}},
            }
        )
