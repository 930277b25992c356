import math

import pytest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, DataPointFlags

from collector.core.pdata import Metrics, set_attr
from collector.exporters import promnames
from collector.exporters.promnames import MetricType, Options

COUNTER, GAUGE, HISTOGRAM = MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


@pytest.mark.parametrize(
    ("name", "unit", "type_", "expected"),
    [
        ("http.server.duration", "s", HISTOGRAM, "http_server_duration_seconds"),
        ("http.server.duration", "ms", HISTOGRAM, "http_server_duration_milliseconds"),
        ("system.filesystem.usage", "By", GAUGE, "system_filesystem_usage_bytes"),
        ("system.memory.utilization", "1", GAUGE, "system_memory_utilization_ratio"),
        ("requests", "1", COUNTER, "requests_total"),
        ("requests", "{request}", COUNTER, "requests_total"),
        ("requests_total", "", COUNTER, "requests_total"),
        ("system.network.dropped", "{packets}", GAUGE, "system_network_dropped"),
        ("system.network.dropped", "packets", GAUGE, "system_network_dropped_packets"),
        ("network.io", "By/s", GAUGE, "network_io_bytes_per_second"),
        ("cpu.time", "s", COUNTER, "cpu_time_seconds_total"),
        ("request_seconds", "s", GAUGE, "request_seconds"),
        ("queue.wait", "1/s", GAUGE, "queue_wait_per_second"),
        ("disk.used", "%", GAUGE, "disk_used_percent"),
        ("temperature", "Cel", GAUGE, "temperature_celsius"),
        ("memory", "MiBy", GAUGE, "memory_mebibytes"),
        ("(lambda).function.executions(#)", "", COUNTER, "lambda_function_executions_total"),
        ("total.requests.total", "", COUNTER, "requests_total"),
        ("2xx.responses", "", COUNTER, "_2xx_responses_total"),
        ("ns:metric.x", "", GAUGE, "ns:metric_x"),
    ],
)
def test_metric_names(name, unit, type_, expected):
    assert promnames.metric_name(name, unit, type_) == expected


def test_metric_names_without_suffixes_and_with_namespace():
    assert promnames.metric_name("a.b-c", "s", COUNTER, add_suffixes=False) == "a_b_c"
    assert promnames.metric_name("9.lives", "", GAUGE, add_suffixes=False) == "_9_lives"
    assert promnames.metric_name("requests", "1", COUNTER, namespace="app") == "app_requests_total"
    assert promnames.metric_name("up", "", GAUGE, namespace="my-app") == "my_app_up"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.method", "http_method"),
        ("http-status/code", "http_status_code"),
        ("2xx", "key_2xx"),
        ("_private", "key_private"),
        ("__reserved", "__reserved"),
        ("ünïcode", "key_n_code"),
        ("", "key_"),
    ],
)
def test_label_names(key, expected):
    assert promnames.label_name(key) == expected


def attrs(**values) -> list[KeyValue]:
    out = Metrics().resource_metrics.add().resource.attributes
    for k, v in values.items():
        set_attr(out, k.replace("__", "."), v)
    return list(out)


def test_label_values_and_collisions():
    kvs = attrs(flag=True, ratio=0.5, n=3, tags=["a", "b"], empty="")
    assert promnames.attribute_labels(kvs) == {
        "flag": "true",
        "ratio": "0.5",
        "n": "3",
        "tags": '["a","b"]',
    }
    colliding = attrs(a__b="dot", a_b="underscore")
    assert promnames.attribute_labels(colliding) == {"a_b": "dot;underscore"}


def test_job_instance_and_target_info():
    resource = attrs(
        service__name="checkout",
        service__namespace="shop",
        service__instance__id="i-1",
        cloud__region="eu-west-1",
    )
    assert promnames.job_instance(resource) == {"job": "shop/checkout", "instance": "i-1"}
    assert promnames.target_info_labels(resource) == {
        "job": "shop/checkout",
        "instance": "i-1",
        "cloud_region": "eu-west-1",
    }
    assert promnames.job_instance(attrs(service__name="api")) == {"job": "api"}
    assert promnames.target_info_labels(attrs(service__name="api")) is None


def test_format_float():
    assert [promnames.format_float(v) for v in (1.0, 0.25, math.inf, -math.inf, 1e20)] == [
        "1",
        "0.25",
        "+Inf",
        "-Inf",
        "1e+20",
    ]
    assert promnames.format_float(math.nan) == "NaN"


def batch_with_resource() -> Metrics:
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for k, v in {"service.name": "api", "host.name": "h1"}.items():
        set_attr(rm.resource.attributes, k, v)
    sm = rm.scope_metrics.add()
    sm.scope.name = "lib"
    sm.scope.version = "1.2"
    return batch


def test_translate_labels_scope_resource_and_extra_labels():
    batch = batch_with_resource()
    metric = batch.resource_metrics[0].scope_metrics[0].metrics.add(name="queue.depth", unit="1")
    dp = metric.gauge.data_points.add(time_unix_nano=5_000_000_000, as_int=4)
    set_attr(dp.attributes, "job", "overridden")
    set_attr(dp.attributes, "env", "prod")
    set_attr(dp.attributes, "host.name", "from-point")

    out = promnames.translate(batch, Options(extra_labels={"env": "dev", "region": "eu"}))
    gauge, info = out.points
    assert (gauge.name, gauge.type, gauge.value) == ("queue_depth_ratio", GAUGE, 4.0)
    assert dict(gauge.labels) == {
        "job": "api",
        "env": "prod",
        "region": "eu",
        "host_name": "from-point",
        "otel_scope_name": "lib",
        "otel_scope_version": "1.2",
    }
    assert (info.name, info.value, info.time_ns) == ("target_info", 1.0, 5_000_000_000)
    assert dict(info.labels) == {"job": "api", "host_name": "h1", "env": "dev", "region": "eu"}

    converted = promnames.translate(batch, Options(resource_to_telemetry=True)).points[0]
    assert dict(converted.labels)["service_name"] == "api"
    assert dict(converted.labels)["host_name"] == "from-point"  # the point's own value wins
    assert len(promnames.translate(batch, Options(target_info=False)).points) == 1


def test_translate_types_and_samples():
    batch = batch_with_resource()
    metrics = batch.resource_metrics[0].scope_metrics[0].metrics
    counter = metrics.add(name="requests", unit="{request}")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = DELTA
    counter.sum.data_points.add(time_unix_nano=2, start_time_unix_nano=1, as_double=3.5)
    updown = metrics.add(name="inflight")
    updown.sum.aggregation_temporality = CUMULATIVE
    updown.sum.data_points.add(
        as_int=-2, flags=DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
    )
    hist = metrics.add(name="latency", unit="s")
    hist.histogram.aggregation_temporality = CUMULATIVE
    hist.histogram.data_points.add(
        count=6, sum=2.5, explicit_bounds=[0.1, 1.0], bucket_counts=[1, 2, 3]
    )
    summary = metrics.add(name="size", unit="By")
    sdp = summary.summary.data_points.add(count=4, sum=40.0)
    sdp.quantile_values.add(quantile=0.5, value=9.0)
    expo = metrics.add(name="expo")
    expo.exponential_histogram.data_points.add(count=1)
    delta_updown = metrics.add(name="delta.updown")
    delta_updown.sum.aggregation_temporality = DELTA
    delta_updown.sum.data_points.add(as_int=1)

    out = promnames.translate(batch, Options())
    by_name = {p.name: p for p in out.points}
    assert by_name["requests_total"].type is COUNTER and by_name["requests_total"].delta
    assert by_name["inflight"].type is GAUGE and by_name["inflight"].stale
    assert out.skipped == {
        ("exponential_histogram is not supported", "expo"): 1,
        ("a delta non-monotonic sum has no Prometheus form", "delta.updown"): 1,
    }

    def rendered(name):
        return [(n, dict(labels), v) for n, labels, v in promnames.samples(by_name[name])]

    scope = {"job": "api", "otel_scope_name": "lib", "otel_scope_version": "1.2"}
    assert rendered("latency_seconds") == [
        ("latency_seconds_bucket", {**scope, "le": "0.1"}, 1),
        ("latency_seconds_bucket", {**scope, "le": "1"}, 3),
        ("latency_seconds_bucket", {**scope, "le": "+Inf"}, 6),
        ("latency_seconds_sum", scope, 2.5),
        ("latency_seconds_count", scope, 6.0),
    ]
    assert rendered("size_bytes") == [
        ("size_bytes", {**scope, "quantile": "0.5"}, 9.0),
        ("size_bytes_sum", scope, 40.0),
        ("size_bytes_count", scope, 4.0),
    ]
    ((_, _, stale),) = promnames.samples(by_name["inflight"])
    assert math.isnan(stale) and promnames.STALE_NAN.hex() == stale.hex()
