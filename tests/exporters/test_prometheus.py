import aiohttp
import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client.parser import text_string_to_metric_families

from collector.core.component import Kind
from collector.core.pdata import Metrics, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.exporters import prometheus
from tests.support.builders import make_metrics
from tests.support.components import StaticHost, make_settings
from tests.support.prometheus_server import (
    PROMETHEUS_MISSING,
    PrometheusServer,
    prometheus_available,
)

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NOW_NS = 1_700_000_000_000_000_000
RESOURCE = {
    "service.name": "checkout",
    "service.namespace": "shop",
    "service.instance.id": "i-1",
    "cloud.region": "eu-west-1",
}


def test_defaults():
    cfg = prometheus.Config()
    assert (cfg.endpoint, cfg.metric_expiration, cfg.send_timestamps) == (
        "127.0.0.1:8889",
        300.0,
        False,
    )
    assert cfg.add_metric_suffixes and not cfg.resource_to_telemetry_conversion.enabled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_exporter(clock=None, telemetry=None, **config) -> prometheus.PrometheusExporter:
    settings = make_settings(Kind.EXPORTER, "prometheus", telemetry=telemetry)
    cfg = prometheus.Config.model_validate({"endpoint": "127.0.0.1:0", **config})
    return prometheus.PrometheusExporter(settings, cfg, Signal.METRICS, clock=clock or Clock())


def counted(telemetry: Telemetry, what: str) -> float:
    value = telemetry.registry.get_sample_value(
        f"otelcol_exporter_{what}_metric_points_total", {"exporter": "prometheus"}
    )
    return value or 0.0


def service_batch(requests: int = 3, offset_s: int = 0) -> Metrics:
    """A counter of `requests` per route (two routes), a gauge and a histogram of 4 requests."""
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for k, v in RESOURCE.items():
        set_attr(rm.resource.attributes, k, v)
    sm = rm.scope_metrics.add()
    sm.scope.name = "shop.http"
    now = NOW_NS + offset_s * 1_000_000_000
    counter = sm.metrics.add(name="requests", unit="{request}", description="Requests served.")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = CUMULATIVE
    for route in ("/a", "/b"):
        dp = counter.sum.data_points.add(start_time_unix_nano=NOW_NS, time_unix_nano=now)
        dp.as_int = requests
        set_attr(dp.attributes, "http.route", route)
    gauge = sm.metrics.add(name="memory.usage", unit="By")
    gauge.gauge.data_points.add(time_unix_nano=now, as_double=2048.0)
    hist = sm.metrics.add(name="http.server.duration", unit="s", description="Latency.")
    hist.histogram.aggregation_temporality = CUMULATIVE
    hist.histogram.data_points.add(
        start_time_unix_nano=NOW_NS,
        time_unix_nano=now,
        count=4,
        sum=1.5,
        explicit_bounds=[0.1, 0.5, 1.0],
        bucket_counts=[1, 2, 0, 1],
    )
    return batch


def families(exporter) -> dict:
    return {f.name: f for f in text_string_to_metric_families(exporter.exposition())}


def samples(exporter) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(exporter.exposition())
        for s in f.samples
    }


async def test_text_format_of_counters_gauges_histograms_and_target_info():
    exporter = make_exporter()
    await exporter.consume(service_batch())
    fams = families(exporter)
    assert {name: f.type for name, f in fams.items()} == {
        "requests": "counter",
        "memory_usage_bytes": "gauge",
        "http_server_duration_seconds": "histogram",
        "target_info": "gauge",
    }
    assert fams["requests"].documentation == "Requests served."
    base = {"job": "shop/checkout", "instance": "i-1", "otel_scope_name": "shop.http"}
    route_a = tuple(sorted({**base, "http_route": "/a"}.items()))
    values = samples(exporter)
    assert values[("requests_total", route_a)] == 3
    assert values[("memory_usage_bytes", tuple(sorted(base.items())))] == 2048
    buckets = {
        dict(labels)["le"]: v
        for (name, labels), v in values.items()
        if name == "http_server_duration_seconds_bucket"
    }
    assert buckets == {"0.1": 1, "0.5": 3, "1": 3, "+Inf": 4}
    assert values[("http_server_duration_seconds_count", tuple(sorted(base.items())))] == 4
    assert values[("http_server_duration_seconds_sum", tuple(sorted(base.items())))] == 1.5
    info = {"job": "shop/checkout", "instance": "i-1", "cloud_region": "eu-west-1"}
    assert values[("target_info", tuple(sorted(info.items())))] == 1


async def test_latest_value_wins_and_out_of_order_points_are_ignored():
    exporter = make_exporter()
    await exporter.consume(service_batch(requests=3, offset_s=10))
    await exporter.consume(service_batch(requests=7, offset_s=20))
    await exporter.consume(service_batch(requests=5, offset_s=15))
    totals = [v for (name, _), v in samples(exporter).items() if name == "requests_total"]
    assert totals == [7, 7]


async def test_namespace_const_labels_timestamps_and_resource_conversion():
    exporter = make_exporter(
        namespace="app",
        const_labels={"env": "prod", "http_route": "ignored"},
        send_timestamps=True,
        resource_to_telemetry_conversion={"enabled": True},
    )
    await exporter.consume(service_batch())
    text = exporter.exposition()
    line = next(x for x in text.splitlines() if x.startswith("app_requests_total{"))
    assert 'env="prod"' in line and 'http_route="/a"' in line
    assert 'cloud_region="eu-west-1"' in line and 'service_name="checkout"' in line
    assert line.endswith(f" 3 {NOW_NS // 1_000_000}")


async def test_delta_sums_and_histograms_accumulate():
    exporter = make_exporter()
    for i in range(3):
        batch = Metrics()
        sm = batch.resource_metrics.add().scope_metrics.add()
        counter = sm.metrics.add(name="invocations")
        counter.sum.is_monotonic = True
        counter.sum.aggregation_temporality = DELTA
        start, end = NOW_NS + i, NOW_NS + i + 1
        counter.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=end, as_int=2)
        hist = sm.metrics.add(name="duration", unit="ms")
        hist.histogram.aggregation_temporality = DELTA
        hist.histogram.data_points.add(
            start_time_unix_nano=start,
            time_unix_nano=end,
            count=1,
            sum=5.0,
            explicit_bounds=[10.0],
            bucket_counts=[1, 0],
        )
        await exporter.consume(batch)
    values = samples(exporter)
    assert values[("invocations_total", ())] == 6
    assert values[("duration_milliseconds_count", ())] == 3
    assert values[("duration_milliseconds_sum", ())] == 15
    assert values[("duration_milliseconds_bucket", (("le", "10"),))] == 3


async def test_exponential_histograms_are_left_out_with_a_note(caplog):
    telemetry = Telemetry()
    exporter = make_exporter(telemetry=telemetry)
    batch = Metrics()
    metric = batch.resource_metrics.add().scope_metrics.add().metrics.add(name="expo")
    metric.exponential_histogram.data_points.add(count=3)
    with caplog.at_level("WARNING", logger="coldtail"):
        await exporter.consume(batch)
    assert exporter.exposition() == ""
    assert "exponential_histogram is not supported" in caplog.text
    assert (counted(telemetry, "sent"), counted(telemetry, "send_failed")) == (0, 1)


async def test_series_expire_after_metric_expiration():
    clock = Clock()
    exporter = make_exporter(clock, metric_expiration="1m")
    await exporter.consume(service_batch())
    clock.now += 30
    gauge_only = service_batch()
    del gauge_only.resource_metrics[0].scope_metrics[0].metrics[0]  # no counter this time
    await exporter.consume(gauge_only)
    clock.now += 45  # the counter is now 75s old, the others 45s
    assert "requests" not in families(exporter)
    assert "memory_usage_bytes" in families(exporter)
    clock.now += 60
    assert exporter.exposition() == ""


async def test_series_count_is_bounded():
    exporter = make_exporter(max_series=2)
    await exporter.consume(make_metrics(5))
    kept = [labels for name, labels in samples(exporter) if name == "requests_total"]
    assert [dict(labels)["test_index"] for labels in kept] == ["3", "4"]


async def test_serves_metrics_on_the_bound_port_and_counts_points():
    telemetry = Telemetry()
    exporter = make_exporter(telemetry=telemetry)
    await exporter.start(StaticHost())
    try:
        assert not exporter.endpoint.endswith(":0")
        await exporter.consume(make_metrics(3))
        url = f"http://{exporter.endpoint}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "requests_total{" in await response.text()
    finally:
        await exporter.shutdown()
        await exporter.shutdown()
    assert counted(telemetry, "sent") == 3


async def test_shutdown_without_start():
    await make_exporter().shutdown()


@pytest.mark.slow
@pytest.mark.skipif(not prometheus_available(), reason=PROMETHEUS_MISSING)
async def test_real_prometheus_scrapes_the_exporter():
    exporter = make_exporter()
    await exporter.start(StaticHost())
    try:
        await exporter.consume(service_batch(requests=3))
        async with PrometheusServer(scrape_target=exporter.endpoint) as prom:
            assert await prom.wait_for_value("sum(requests_total)", 6) == 6
            count = 'http_server_duration_seconds_count{job="shop/checkout",instance="i-1"}'
            assert await prom.wait_for_value(count, 4) == 4
            le = 'http_server_duration_seconds_bucket{le="0.5"}'
            assert await prom.wait_for_value(le, 3) == 3
            (info,) = await prom.query('target_info{cloud_region="eu-west-1"}')
            assert info["metric"]["job"] == "shop/checkout"
            await exporter.consume(service_batch(requests=10, offset_s=5))
            assert await prom.wait_for_value("sum(requests_total)", 20) == 20
    finally:
        await exporter.shutdown()
