"""The httpcheck receiver against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from collector.core.component import Kind
from collector.core.signals import Signal
from collector.receivers import httpcheck
from tests.support.components import StaticHost, make_settings
from tests.support.process import free_port
from tests.support.sinks import SinkConsumer


@pytest.fixture
async def server():
    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), text="x" * 10)

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    async def needs_token(request: web.Request) -> web.Response:
        ok = request.headers.get("Authorization") == "Bearer t"
        return web.Response(status=200 if ok else 401)

    app = web.Application()
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/token", needs_token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def receiver(sink, **config) -> httpcheck.HttpCheckReceiver:
    cfg = httpcheck.Config.model_validate({"initial_delay": "0s", **config})
    return httpcheck.factory.create(
        make_settings(Kind.RECEIVER, "httpcheck"), cfg, {Signal.METRICS: sink}
    )


def by_metric(batch) -> dict:
    out: dict = {}
    for m in batch.resource_metrics[0].scope_metrics[0].metrics:
        data = m.sum if m.HasField("sum") else m.gauge
        for p in data.data_points:
            attrs = {kv.key: kv.value.string_value or kv.value.int_value for kv in p.attributes}
            out.setdefault(m.name, []).append((attrs, p.as_int))
    return out


async def test_status_classes_durations_and_errors(server):
    closed = f"http://127.0.0.1:{free_port()}/"
    r = receiver(
        SinkConsumer(),
        targets=[
            {"endpoint": f"{server}/status/204"},
            {"endpoints": [f"{server}/status/503", f"{server}/status/404"], "method": "post"},
            {"endpoint": f"{server}/token", "headers": {"Authorization": "Bearer t"}},
            {"endpoint": closed},
            {"endpoint": f"{server}/slow", "timeout": "200ms"},
        ],
        metrics={"httpcheck.response.size": {"enabled": True}},
    )
    await r.start(StaticHost())
    try:
        metrics = by_metric(await r.check())
    finally:
        await r.shutdown()
    ones = {
        (a["http.url"], a["http.method"], a["http.status_code"], a["http.status_class"])
        for a, v in metrics["httpcheck.status"]
        if v == 1
    }
    assert ones == {
        (f"{server}/status/204", "GET", 204, "2xx"),
        (f"{server}/status/503", "POST", 503, "5xx"),
        (f"{server}/status/404", "POST", 404, "4xx"),
        (f"{server}/token", "GET", 200, "2xx"),
    }
    assert len(metrics["httpcheck.status"]) == 4 * 5  # one point per class and endpoint
    errors = {a["http.url"]: (a["error.message"], v) for a, v in metrics["httpcheck.error"]}
    assert set(errors) == {closed, f"{server}/slow"}
    assert all(v == 1 and message for message, v in errors.values())
    durations = dict((a["http.url"], v) for a, v in metrics["httpcheck.duration"])
    assert len(durations) == 6 and 150 <= durations[f"{server}/slow"] < 2000
    sizes = dict((a["http.url"], v) for a, v in metrics["httpcheck.response.size"])
    assert sizes[f"{server}/status/503"] == 10


async def test_checks_repeat_every_interval(server):
    sink = SinkConsumer()
    r = receiver(sink, collection_interval="100ms", targets=[{"endpoint": f"{server}/status/200"}])
    await r.start(StaticHost())
    try:
        await sink.wait_for(3 * 6)  # duration + 5 status points per check
    finally:
        await r.shutdown()
    assert "httpcheck.response.size" not in by_metric(sink.batches[0])  # off by default
