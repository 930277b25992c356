import asyncio
import math
import time

import cramjam
import pytest
from aiohttp import web
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from collector.core.component import Kind
from collector.core.consumer import PermanentError
from collector.core.endpoints import bound_port
from collector.core.pdata import Metrics, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.exporters import prometheusremotewrite as prw
from collector.exporters import prompb
from tests.support.builders import make_metrics
from tests.support.components import StaticHost, make_settings
from tests.support.prometheus_server import (
    PROMETHEUS_MISSING,
    PrometheusServer,
    prometheus_available,
)

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
FAST_RETRY = {"initial_interval": "10ms", "max_interval": "20ms", "randomization_factor": 0}


class Receiver:
    """A remote-write endpoint that records decoded WriteRequests and answers with the next
    scripted status (204 once the script is used up)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, prompb.WriteRequest]] = []
        self.statuses: list[int] = []
        self.delay = 0.0  # seconds each request takes
        self.in_flight = self.peak = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _write(self, request: web.Request) -> web.Response:
        body = bytes(cramjam.snappy.decompress_raw(await request.read()))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        self.requests.append((dict(request.headers), prompb.WriteRequest.FromString(body)))
        status = self.statuses.pop(0) if self.statuses else 204
        headers = {"Retry-After": "0"} if status == 429 else None
        return web.Response(
            status=status, text="scripted" if status >= 400 else None, headers=headers
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/v1/write", self._write)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = bound_port(site)
        self.url = f"http://127.0.0.1:{port}/api/v1/write"

    async def stop(self) -> None:
        await self._runner.cleanup()

    def series(self) -> dict:
        """{(name, labels without __name__): [(timestamp ms, value)]} over every request."""
        out = {}
        for _, request in self.requests:
            for ts in request.timeseries:
                labels = {label.name: label.value for label in ts.labels}
                key = (labels.pop("__name__"), tuple(sorted(labels.items())))
                out.setdefault(key, []).extend((s.timestamp, s.value) for s in ts.samples)
        return out


@pytest.fixture
async def receiver():
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


async def started(
    url: str, telemetry: Telemetry | None = None, **config
) -> prw.PrometheusRemoteWriteExporter:
    settings = make_settings(Kind.EXPORTER, "prometheusremotewrite", telemetry=telemetry)
    cfg = prw.Config.model_validate(
        {
            "endpoint": url,
            "sending_queue": {"enabled": False},
            "retry_on_failure": FAST_RETRY,
            **config,
        }
    )
    exporter = prw.PrometheusRemoteWriteExporter(settings, cfg, Signal.METRICS)
    await exporter.start(StaticHost())
    return exporter


def service_batch(now_ns: int, requests: int = 3) -> Metrics:
    """A counter of `requests` for two routes and a histogram of 4 requests."""
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for k, v in {"service.name": "api", "service.instance.id": "i-1", "host.name": "h"}.items():
        set_attr(rm.resource.attributes, k, v)
    sm = rm.scope_metrics.add()
    counter = sm.metrics.add(name="requests", unit="1")
    counter.sum.is_monotonic = True
    counter.sum.aggregation_temporality = CUMULATIVE
    for route in ("/a", "/b"):
        dp = counter.sum.data_points.add(time_unix_nano=now_ns, as_int=requests)
        set_attr(dp.attributes, "http.route", route)
    hist = sm.metrics.add(name="duration", unit="ms")
    hist.histogram.aggregation_temporality = CUMULATIVE
    hist.histogram.data_points.add(
        time_unix_nano=now_ns,
        count=4,
        sum=30.0,
        explicit_bounds=[5.0, 50.0],
        bucket_counts=[1, 3, 0],
    )
    return batch


async def test_request_encoding_headers_and_labels(receiver):
    telemetry = Telemetry()
    exporter = await started(
        receiver.url,
        telemetry,
        headers={"X-Scope-OrgID": "tenant", "Content-Type": "text/plain"},
        external_labels={"cluster": "eu", "job": "ignored"},
    )
    now_ns = 1_700_000_000_123_456_789
    await exporter.consume(service_batch(now_ns))
    await exporter.shutdown()

    ((headers, request),) = receiver.requests
    assert headers["Content-Encoding"] == "snappy"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    assert headers["User-Agent"] == "coldtail"
    assert headers["X-Scope-OrgID"] == "tenant"
    for ts in request.timeseries:
        names = [label.name for label in ts.labels]
        assert names == sorted(names)
    base = {"job": "api", "instance": "i-1", "cluster": "eu"}
    series = receiver.series()
    ms = 1_700_000_000_123
    route_a = tuple(sorted({**base, "http_route": "/a"}.items()))
    assert series[("requests_total", route_a)] == [(ms, 3.0)]
    assert series[("duration_milliseconds_count", tuple(sorted(base.items())))] == [(ms, 4.0)]
    buckets = {
        dict(labels)["le"]: samples[0][1]
        for (name, labels), samples in series.items()
        if name == "duration_milliseconds_bucket"
    }
    assert buckets == {"5": 1, "50": 4, "+Inf": 4}
    info = (("cluster", "eu"), ("host_name", "h"), ("instance", "i-1"), ("job", "api"))
    assert series[("target_info", info)] == [(ms, 1.0)]
    sent = telemetry.registry.get_sample_value(
        "otelcol_exporter_sent_metric_points_total", {"exporter": "prometheusremotewrite"}
    )
    assert sent == 3


async def test_samples_of_one_series_share_a_timeseries_in_time_order(receiver):
    exporter = await started(receiver.url)
    batch = make_metrics(1)
    dp = batch.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points
    later = dp.add()
    later.CopyFrom(dp[0])
    dp[0].time_unix_nano += 5_000_000
    dp[0].as_int = 9
    await exporter.consume(batch)
    await exporter.shutdown()
    (values,) = [v for (name, _), v in receiver.series().items() if name == "requests_total"]
    assert [v for _, v in values] == [1.0, 9.0]
    assert values[0][0] < values[1][0]


async def test_large_batches_are_split(receiver):
    exporter = await started(receiver.url, max_batch_size_bytes=1000)
    await exporter.consume(make_metrics(100))
    await exporter.shutdown()
    assert len(receiver.requests) > 1
    assert all(r.ByteSize() <= 1000 for _, r in receiver.requests)
    assert sum(len(r.timeseries) for _, r in receiver.requests) == 100


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_the_requests_of_one_batch_go_out_in_parallel_up_to_the_limit(receiver, parallelism):
    receiver.delay = 0.05
    exporter = await started(
        receiver.url, max_batch_size_bytes=1000, max_batch_request_parallelism=parallelism
    )
    await exporter.consume(make_metrics(100))
    await exporter.shutdown()
    assert len(receiver.requests) > 3
    assert receiver.peak == parallelism
    assert sum(len(r.timeseries) for _, r in receiver.requests) == 100


def test_remote_write_queue_is_the_sending_queue():
    cfg = prw.Config.model_validate(
        {"endpoint": "http://p:9090/api/v1/write", "remote_write_queue": {"num_consumers": 2}}
    )
    assert cfg.sending_queue.enabled and cfg.sending_queue.num_consumers == 2
    assert cfg.sending_queue.queue_size == 10_000
    with pytest.raises(ValueError, match="set either remote_write_queue or sending_queue"):
        prw.Config.model_validate(
            {
                "endpoint": "http://p:9090/api/v1/write",
                "remote_write_queue": {},
                "sending_queue": {"queue_size": 5},
            }
        )


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_retries_server_errors_and_throttling(receiver, status):
    receiver.statuses = [status, status]
    exporter = await started(receiver.url)
    await exporter.consume(make_metrics(2))
    await exporter.shutdown()
    assert len(receiver.requests) == 3


async def test_client_errors_are_permanent(receiver):
    receiver.statuses = [400]
    exporter = await started(receiver.url)
    with pytest.raises(PermanentError, match="HTTP 400: scripted"):
        await exporter.consume(make_metrics(2))
    await exporter.shutdown()
    assert len(receiver.requests) == 1


async def test_delta_points_are_dropped_and_reported(receiver, caplog):
    telemetry = Telemetry()
    exporter = await started(receiver.url, telemetry)
    batch = make_metrics(2)
    delta = batch.resource_metrics[0].scope_metrics[0].metrics.add(name="invocations")
    delta.sum.is_monotonic = True
    delta.sum.aggregation_temporality = DELTA
    delta.sum.data_points.add(time_unix_nano=time.time_ns(), as_int=1)
    with caplog.at_level("WARNING", logger="coldtail"), pytest.raises(PermanentError) as e:
        await exporter.consume(batch)
    await exporter.shutdown()
    assert e.value.rejected == 1
    assert "cumulative values only" in caplog.text
    names = {name for name, _ in receiver.series()}
    assert names == {"requests_total"}
    count = telemetry.registry.get_sample_value
    labels = {"exporter": "prometheusremotewrite"}
    assert count("otelcol_exporter_sent_metric_points_total", labels) == 2
    assert count("otelcol_exporter_send_failed_metric_points_total", labels) == 1


async def test_no_recorded_value_becomes_a_staleness_marker(receiver):
    exporter = await started(receiver.url)
    batch = make_metrics(1)
    batch.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].flags = 1
    await exporter.consume(batch)
    await exporter.shutdown()
    ((_, value),) = next(iter(receiver.series().values()))
    assert math.isnan(value)


async def test_connection_refused_is_retried_until_elapsed():
    exporter = await started(
        "http://127.0.0.1:1/api/v1/write",
        retry_on_failure={**FAST_RETRY, "max_elapsed_time": "50ms"},
    )
    with pytest.raises(Exception, match=r"request to http://127\.0\.0\.1:1/api/v1/write failed"):
        await exporter.consume(make_metrics(1))
    await exporter.shutdown()


@pytest.mark.skipif(not prometheus_available(), reason=PROMETHEUS_MISSING)
async def test_real_prometheus_receives_remote_write():
    async with PrometheusServer(remote_write_receiver=True) as prom:
        exporter = await started(prom.remote_write_url, external_labels={"cluster": "eu"})
        try:
            now_ns = time.time_ns()
            await exporter.consume(service_batch(now_ns - 2_000_000_000, requests=3))
            await exporter.consume(service_batch(now_ns, requests=5))
        finally:
            await exporter.shutdown()
        assert await prom.wait_for_value('sum(requests_total{cluster="eu"})', 10) == 10
        count = 'duration_milliseconds_count{job="api",instance="i-1"}'
        assert await prom.wait_for_value(count, 4) == 4
        assert await prom.wait_for_value('duration_milliseconds_bucket{le="50"}', 4) == 4
        (info,) = await prom.query("target_info")
        assert info["metric"]["host_name"] == "h"
