"""The prometheus receiver scraping real targets: prometheus-client's HTTP server in its own
process, the Debian `prometheus` server's own /metrics, and a real Prometheus given the same
scrape configs as the receiver, to check that relabeling gives the same labels."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from pathlib import Path

import pytest
from aiohttp import web

from collector.core.component import Kind
from collector.core.consumer import RetryableError
from collector.core.pdata import Metrics
from collector.core.signals import Signal
from collector.receivers import prometheus as prom
from collector.receivers.prometheus.config import RelabelConfig
from collector.receivers.prometheus.relabel import Rule, relabel
from collector.receivers.prometheus.targets import Group, build_targets
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.metrics_target import MetricsTarget
from tests.support.process import CollectorProcess, free_port
from tests.support.prometheus_server import (
    PROMETHEUS_MISSING,
    PrometheusServer,
    prometheus_available,
)
from tests.support.sinks import ErrorConsumer, SinkConsumer

STALE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def receiver(sink, jobs: list[dict], **options) -> prom.PrometheusReceiver:
    config = prom.Config.model_validate({"config": {"scrape_configs": jobs}, **options})
    settings = make_settings(Kind.RECEIVER, "prometheus")
    return prom.factory.create(settings, config, {Signal.METRICS: sink})


def job(address: str, **options) -> dict:
    return {
        "job_name": "app",
        "scrape_interval": "200ms",
        "scrape_timeout": "150ms",
        "static_configs": [{"targets": [address], "labels": {"env": "test"}}],
        **options,
    }


def metrics_of(batch: Metrics) -> dict:
    return {
        m.name: m for rm in batch.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }


def points(metric) -> list:
    return list(getattr(metric, metric.WhichOneof("data")).data_points)


def attrs(point) -> dict:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def resource(batch: Metrics) -> dict:
    out = {}
    for kv in batch.resource_metrics[0].resource.attributes:
        out[kv.key] = kv.value.string_value or kv.value.int_value
    return out


def up(batch: Metrics) -> float | None:
    metric = metrics_of(batch).get("up")
    return points(metric)[0].as_double if metric is not None else None


async def scrapes(sink: SinkConsumer, count: int, timeout: float = 5.0) -> list[Metrics]:
    """Wait for `count` scrape batches (those carrying `up`) after the ones already there."""
    seen = sum(1 for b in sink.batches if up(b) is not None)
    async with asyncio.timeout(timeout):
        while True:
            done = [b for b in sink.batches if up(b) is not None]
            if len(done) >= seen + count:
                return done[seen : seen + count]
            await asyncio.sleep(0.02)


@pytest.fixture
async def target():
    async with MetricsTarget() as t:
        await t.send(
            {"op": "inc", "name": "requests", "labels": {"route": "/a"}, "value": 3},
            {"op": "set", "name": "temp_celsius", "value": 21.5},
            {"op": "observe", "name": "lat_seconds", "labels": {"route": "/a"}, "value": 0.05},
            {"op": "observe", "name": "lat_seconds", "labels": {"route": "/a"}, "value": 0.5},
            {"op": "observe", "name": "lat_seconds", "labels": {"route": "/a"}, "value": 3},
            {"op": "observe", "name": "size_bytes", "value": 10},
        )
        yield t


@pytest.mark.parametrize(
    "protocol", ["OpenMetricsText1.0.0", "PrometheusText0.0.4"], ids=["openmetrics", "text"]
)
async def test_every_metric_type_is_translated(target, protocol):
    sink = SinkConsumer()
    started = time.time_ns()
    r = receiver(sink, [job(target.address, scrape_protocols=[protocol])])
    await r.start(StaticHost())
    try:
        first, second = await scrapes(sink, 2)
    finally:
        await r.shutdown()
    m = metrics_of(first)
    assert resource(first) == {
        "service.name": "app",
        "service.instance.id": target.address,
        "server.address": "127.0.0.1",
        "server.port": target.port,
        "url.scheme": "http",
    }
    requests = m["requests_total"]
    assert requests.sum.is_monotonic and requests.sum.aggregation_temporality == 2
    (point,) = points(requests)
    assert point.as_double == 3 and attrs(point) == {"route": "/a", "env": "test"}
    assert m["temp_celsius"].unit == ("celsius" if protocol.startswith("Open") else "")
    assert points(m["temp_celsius"])[0].as_double == 21.5
    (hist,) = points(m["lat_seconds"])
    assert list(hist.explicit_bounds) == [0.1, 1.0]
    assert list(hist.bucket_counts) == [1, 1, 1]
    assert hist.count == 3 and math.isclose(hist.sum, 3.55)
    (summary,) = points(m["size_bytes"])
    assert (summary.count, summary.sum) == (1, 10.0)
    (info,) = points(m["build_info"])
    assert attrs(info)["version"] == "1.2.3" and info.as_double == 1
    assert up(first) == 1
    assert points(m["scrape_samples_scraped"])[0].as_double >= 10
    series = [p for n, x in m.items() if n != "up" and "scrape_" not in n for p in points(x)]
    assert points(m["scrape_series_added"])[0].as_double == len(series)
    # OpenMetrics' _created lines are start times; the text format has them as gauges.
    assert ("requests_created" in m) == protocol.startswith("Prom")
    # Start times: OpenMetrics exposes _created; the text format's first scrape is the start.
    start = point.start_time_unix_nano
    if protocol.startswith("Open"):
        assert started - 10e9 < start < point.time_unix_nano
    else:
        assert start == point.time_unix_nano
    again = points(metrics_of(second)["requests_total"])[0]
    assert again.start_time_unix_nano == start and again.time_unix_nano > point.time_unix_nano
    assert points(metrics_of(second)["scrape_series_added"])[0].as_double == 0


async def test_a_counter_reset_restarts_the_series_and_a_vanished_series_goes_stale(target):
    sink = SinkConsumer()
    r = receiver(sink, [job(target.address, scrape_protocols=["PrometheusText0.0.4"])])
    await r.start(StaticHost())
    try:
        (before,) = await scrapes(sink, 1)
        # Every metric starts over, the counter of /a at 1: lower than the 3 scraped.
        await target.send({"op": "restart", "requests": {"/a": 1}})
        (after,) = await scrapes(sink, 1)
        await target.send({"op": "remove", "name": "requests", "labels": {"route": "/a"}})
        (gone,) = await scrapes(sink, 1)
        (later,) = await scrapes(sink, 1)
    finally:
        await r.shutdown()
    old = points(metrics_of(before)["requests_total"])[0]
    (reset,) = points(metrics_of(after)["requests_total"])
    assert reset.as_double == 1 and reset.flags == 0
    assert reset.start_time_unix_nano == reset.time_unix_nano > old.start_time_unix_nano
    summary = points(metrics_of(after)["size_bytes"])[0]
    assert summary.count == 0 and summary.start_time_unix_nano == summary.time_unix_nano
    # The histogram of /a has no observations since the restart: its series vanished.
    assert [p.flags for p in points(metrics_of(after)["lat_seconds"])] == [STALE]
    assert [p.flags for p in points(metrics_of(gone)["requests_total"])] == [STALE]
    assert "requests_total" not in metrics_of(later)


async def test_a_target_that_goes_down_reports_up_0_and_stale_series():
    sink = SinkConsumer()
    async with MetricsTarget() as t:
        await t.send({"op": "inc", "name": "requests", "labels": {"route": "/a"}, "value": 1})
        r = receiver(sink, [job(t.address)])
        await r.start(StaticHost())
        try:
            (alive,) = await scrapes(sink, 1)
            await t.stop()
            (down,) = await scrapes(sink, 1)
            (still_down,) = await scrapes(sink, 1)
        finally:
            await r.shutdown()
    assert up(alive) == 1 and up(down) == 0 and up(still_down) == 0
    stale = metrics_of(down)["requests_total"]
    assert [p.flags for p in points(stale)] == [STALE]
    assert "requests_total" not in metrics_of(still_down)  # marked stale once


async def test_the_pipeline_refusing_a_scrape_does_not_stop_scraping(target):
    sink = ErrorConsumer(RetryableError("queue full"))
    r = receiver(sink, [job(target.address, scrape_interval="100ms", scrape_timeout="90ms")])
    await r.start(StaticHost())
    try:
        async with asyncio.timeout(5):
            while len(sink.batches) < 3:
                await asyncio.sleep(0.05)
    finally:
        await r.shutdown()
    assert all(up(b) == 1 for b in sink.batches[:3])


async def test_limits_fail_the_scrape(target):
    sink = SinkConsumer()
    r = receiver(
        sink,
        [
            {**job(target.address), "job_name": "few", "sample_limit": 2},
            {**job(target.address), "job_name": "small", "body_size_limit": "100B"},
            {**job(target.address), "job_name": "ok", "sample_limit": 100},
        ],
    )
    await r.start(StaticHost())
    try:
        batches = await scrapes(sink, 6)
    finally:
        await r.shutdown()
    by_job: dict[str, set] = {}
    for b in batches:
        by_job.setdefault(resource(b)["service.name"], set()).add(up(b))
    assert by_job == {"few": {0.0}, "small": {0.0}, "ok": {1.0}}


async def test_bearer_token_file_and_basic_auth(tmp_path: Path):
    body = "# TYPE hits counter\nhits_total 7\n"

    async def metrics(request: web.Request) -> web.Response:
        expected = {"/token": "Bearer s3cret", "/basic": "Basic dXNlcjpwYXNz"}[request.path]
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        return web.Response(text=body, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/token", metrics)
    app.router.add_get("/basic", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    address = f"127.0.0.1:{port}"
    sink = SinkConsumer()
    r = receiver(
        sink,
        [
            {**job(address), "job_name": "token", "metrics_path": "/token",
             "authorization": {"credentials_file": str(token)}},
            {**job(address), "job_name": "basic", "metrics_path": "/basic",
             "basic_auth": {"username": "user", "password": "pass"}},
            {**job(address), "job_name": "wrong", "metrics_path": "/basic",
             "bearer_token": "nope"},
        ],
    )  # fmt: skip
    await r.start(StaticHost())
    try:
        batches = await scrapes(sink, 6)
    finally:
        await r.shutdown()
        await runner.cleanup()
    result = {resource(b)["service.name"]: up(b) for b in batches}
    assert result == {"token": 1, "basic": 1, "wrong": 0}
    hits = next(b for b in batches if resource(b)["service.name"] == "token")
    assert points(metrics_of(hits)["hits_total"])[0].as_double == 7


async def test_file_sd_targets_follow_the_file(target, tmp_path: Path):
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"targets": [target.address], "labels": {"team": "a"}}]))
    sink = SinkConsumer()
    r = receiver(
        sink,
        [
            {
                "job_name": "files",
                "scrape_interval": "200ms",
                "scrape_timeout": "150ms",
                "file_sd_configs": [{"files": [str(tmp_path / "*.json")]}],
                "relabel_configs": [
                    {"source_labels": ["__meta_filepath"], "target_label": "from_file"}
                ],
            }
        ],
    )
    await r.start(StaticHost())
    try:
        (first,) = await scrapes(sink, 1)
        targets.write_text(json.dumps([{"targets": [target.address], "labels": {"team": "b"}}]))
        async with asyncio.timeout(15):  # the files are looked at every 5 s
            while True:
                (latest,) = await scrapes(sink, 1)
                if attrs(points(metrics_of(latest)["up"])[0]).get("team") == "b":
                    break
    finally:
        await r.shutdown()
    assert attrs(points(metrics_of(first)["requests_total"])[0]) == {
        "route": "/a",
        "team": "a",
        "from_file": str(targets),
    }
    stale = [
        p
        for b in sink.batches
        if "requests_total" in metrics_of(b)
        for p in points(metrics_of(b)["requests_total"])
        if p.flags == STALE
    ]
    assert [attrs(p)["team"] for p in stale][:1] == ["a"]  # the old target's series ended


@pytest.mark.slow
async def test_the_prometheus_server_own_metrics_are_read_with_its_start_time():
    if not prometheus_available():
        pytest.skip(PROMETHEUS_MISSING)
    async with PrometheusServer() as server:
        sink = SinkConsumer()
        address = server.url.removeprefix("http://")
        r = receiver(sink, [job(address, scrape_interval="1s", scrape_timeout="1s")],
                     use_start_time_metric=True)  # fmt: skip
        await r.start(StaticHost())
        try:
            (batch,) = await scrapes(sink, 1, timeout=10)
        finally:
            await r.shutdown()
    m = metrics_of(batch)
    (started,) = points(m["process_start_time_seconds"])
    assert up(batch) == 1 and len(m) > 50
    duration = points(m["prometheus_http_request_duration_seconds"])
    assert duration and all(p.count == sum(p.bucket_counts) for p in duration)
    start_ns = started.as_double * 1e9
    for metric in m.values():
        if metric.WhichOneof("data") in ("sum", "histogram", "summary"):
            assert all(p.start_time_unix_nano == int(start_ns) for p in points(metric))


# --- relabeling, checked against a real Prometheus ------------------------------------------

TARGET_RELABEL = [
    {"source_labels": ["__address__"], "regex": "127\\.0\\.0\\.1:(\\d+)", "target_label": "port"},
    {"source_labels": ["team"], "regex": "(.*)", "target_label": "team_upper",
     "action": "uppercase"},
    {"regex": "__meta_(.*)", "action": "labelmap"},
    {"source_labels": ["__address__"], "modulus": 4, "target_label": "shard",
     "action": "hashmod"},
    {"source_labels": ["drop_me"], "regex": "yes", "action": "drop"},
    {"source_labels": ["port"], "regex": "(.+)", "replacement": "i-$1", "target_label": "instance"},
    {"regex": "team", "action": "labeldrop"},
]  # fmt: skip
METRIC_RELABEL = [
    {"source_labels": ["__name__"], "regex": "(lat|size)_.*", "action": "drop"},
    # The scraped `route` clashes with the target's: it is exported_route.
    {"source_labels": ["exported_route"], "regex": "/(.*)", "replacement": "${1}x",
     "target_label": "path"},
    {"source_labels": ["__name__", "exported_route"], "separator": "@",
     "regex": "requests_total@/b", "action": "drop"},
]  # fmt: skip


def relabel_jobs(address: str, other: str) -> list[dict]:
    return [
        {
            "job_name": "relabel",
            "scrape_interval": "1s",
            "scrape_timeout": "500ms",
            "static_configs": [
                {"targets": [address], "labels": {"team": "core", "route": "static"}},
                {"targets": [other], "labels": {"drop_me": "yes"}},
            ],
            "relabel_configs": TARGET_RELABEL,
            "metric_relabel_configs": METRIC_RELABEL,
        }
    ]


@pytest.mark.slow
async def test_relabeling_gives_the_labels_prometheus_gives(target):
    if not prometheus_available():
        pytest.skip(PROMETHEUS_MISSING)
    await target.send({"op": "inc", "name": "requests", "labels": {"route": "/b"}, "value": 1})
    jobs = relabel_jobs(target.address, f"127.0.0.1:{free_port()}")
    sink = SinkConsumer()
    r = receiver(sink, jobs)
    await r.start(StaticHost())
    try:
        async with PrometheusServer(scrape_configs=jobs) as server:
            (ours,) = await scrapes(sink, 1, timeout=10)
            async with asyncio.timeout(15):
                while not await server.query("up"):
                    await asyncio.sleep(0.2)
            active = (await server.api("targets"))["activeTargets"]
            series = await server.api("series", **{"match[]": '{job="relabel"}'})
    finally:
        await r.shutdown()
    # The target: one kept (the other dropped), with the labels Prometheus gives it.
    assert [t["labels"] for t in active] == [_target_labels(ours)]
    # The samples: the same metric names and label sets as Prometheus stored.
    theirs = {
        (s["__name__"], tuple(sorted((k, v) for k, v in s.items() if k != "__name__")))
        for s in series
        if not s["__name__"].startswith("scrape_")
        and s["__name__"] != "up"
        and not s["__name__"].endswith("_created")  # the receiver reads these as start times
    }
    mine = set()
    labels = _target_labels(ours)
    for name, metric in metrics_of(ours).items():
        if name.startswith("scrape_") or name == "up":
            continue
        for p in points(metric):
            suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}
            for suffix in suffixes.get(metric.WhichOneof("data"), ("",)):
                mine.add((name + suffix, tuple(sorted({**attrs(p), **labels}.items()))))
    assert (
        {n for n, _ in theirs}
        == {n for n, _ in mine}
        == {
            "requests_total",
            "temp_celsius",
            "build_info",
        }
    )
    paths = {dict(ls).get("path") for n, ls in mine if n == "requests_total"}
    assert paths == {"ax"}  # /b's series was dropped, /a's got path from exported_route
    assert {(n, ls) for n, ls in theirs if not n.endswith("_bucket")} == mine - {
        (n, ls) for n, ls in mine if n.endswith("_bucket")
    }


def _target_labels(batch: Metrics) -> dict[str, str]:
    """job, instance and the target labels on `up`, as Prometheus shows a target's labels."""
    r = resource(batch)
    return {
        "job": r["service.name"],
        "instance": r["service.instance.id"],
        **attrs(points(metrics_of(batch)["up"])[0]),
    }


# --- relabeling rules on their own ------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "labels", "expected"),
    [
        ({"source_labels": ["a"], "target_label": "b"}, {"a": "x"}, {"a": "x", "b": "x"}),
        ({"source_labels": ["a"], "regex": "y", "target_label": "b"}, {"a": "x"}, {"a": "x"}),
        # An empty result deletes the target label.
        ({"source_labels": ["c"], "target_label": "a"}, {"a": "x"}, {}),
        # `$1x` names the group "1x", which does not exist: empty, as in Prometheus.
        ({"source_labels": ["a"], "regex": "(.)", "replacement": "$1x", "target_label": "b"},
         {"a": "x"}, {"a": "x"}),
        ({"source_labels": ["a"], "regex": "(.)", "replacement": "${1}x", "target_label": "b"},
         {"a": "x"}, {"a": "x", "b": "xx"}),
        ({"source_labels": ["a", "b"], "regex": "(.*);(.*)", "replacement": "$2-$1",
          "target_label": "c"}, {"a": "1", "b": "2"}, {"a": "1", "b": "2", "c": "2-1"}),
        ({"source_labels": ["a"], "regex": "x", "action": "keep"}, {"a": "xy"}, None),
        ({"source_labels": ["a"], "regex": "x.*", "action": "keep"}, {"a": "xy"}, {"a": "xy"}),
        ({"source_labels": ["a"], "target_label": "b", "action": "keepequal"},
         {"a": "1", "b": "1"}, {"a": "1", "b": "1"}),
        ({"source_labels": ["a"], "target_label": "b", "action": "dropequal"},
         {"a": "1", "b": "1"}, None),
        ({"regex": "__meta_(.+)", "replacement": "m_$1", "action": "labelmap"},
         {"__meta_x": "1"}, {"__meta_x": "1", "m_x": "1"}),
        ({"regex": "a.*", "action": "labelkeep"}, {"ab": "1", "b": "2"}, {"ab": "1"}),
        ({"source_labels": ["a"], "target_label": "b", "action": "lowercase"},
         {"a": "XY"}, {"a": "XY", "b": "xy"}),
        # The dot matches newlines, as in Prometheus's (?s) anchoring.
        ({"source_labels": ["a"], "regex": "x.y", "action": "drop"}, {"a": "x\ny"}, None),
    ],
)  # fmt: skip
def test_relabel_rules(rule, labels, expected):
    assert relabel(dict(labels), [Rule(RelabelConfig.model_validate(rule))]) == expected


def test_hashmod_is_prometheus_hash():
    # md5("127.0.0.1:9090") bytes 8..16 as a big-endian integer, mod 8, per Prometheus.
    rule = Rule(RelabelConfig(source_labels=["a"], target_label="s", modulus=8, action="hashmod"))
    import hashlib

    digest = hashlib.md5(b"127.0.0.1:9090").digest()
    expected = str(int.from_bytes(digest[8:], "big") % 8)
    assert relabel({"a": "127.0.0.1:9090"}, [rule]) == {"a": "127.0.0.1:9090", "s": expected}


def test_target_labels_and_url():
    config = prom.Config.model_validate(
        {
            "config": {
                "scrape_configs": [
                    {"job_name": "j", "params": {"module": ["http_2xx"]}, "scheme": "https"}
                ]
            }
        }
    ).config.scrape_configs[0]
    groups = [Group(("h:1",), (("__meta_x", "m"), ("team", "t")))]
    rules = [Rule(RelabelConfig(source_labels=["__meta_x"], target_label="__param_target"))]
    (target,), errors = build_targets(config, 60, 10, groups, rules)
    assert errors == []
    assert target.url == "https://h:1/metrics?module=http_2xx&target=m"
    assert dict(target.labels) == {"job": "j", "instance": "h:1", "team": "t"}
    assert (target.interval, target.timeout) == (60, 10)


SELF_SCRAPE = """
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: otel-collector
          scrape_interval: 200ms
          scrape_timeout: 150ms
          static_configs: [{{targets: ["127.0.0.1:{metrics}"]}}]
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    metrics: {{receivers: [prometheus], exporters: [file]}}
"""


@pytest.mark.slow
async def test_a_collector_scrapes_its_own_metrics(tmp_path: Path):
    """The Helm chart's default: the collector's prometheus receiver reads its own /metrics."""
    out = tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(SELF_SCRAPE.format(metrics=free_port(), out=out))
    with CollectorProcess(config) as collector:
        names: set[str] = set()
        async with asyncio.timeout(15):
            while "otelcol_receiver_accepted_metric_points_total" not in names:
                await asyncio.sleep(0.2)
                with contextlib.suppress(FileNotFoundError, ValueError):  # a line half written
                    for batch in read_requests(out)[Signal.METRICS]:
                        names |= set(metrics_of(batch))
        assert collector.stop() == 0
    assert {"up", "otelcol_process_uptime_total", "scrape_duration_seconds"} <= names
