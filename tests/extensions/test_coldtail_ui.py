"""The coldtail_ui extension in a real collector process: its JSON API and event stream over
the spans of a Lambda fleet sent with the OpenTelemetry SDK, and its auth."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import pytest

from tests.support.lambda_traffic import send
from tests.support.process import CollectorProcess, free_port

PIPELINE = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{otlp}"}}}}}}
processors:
  coldstart: {{}}
  tail_latency: {{min_samples: 5}}
exporters:
  coldtail_ui: {{}}
extensions:
  coldtail_ui: {{endpoint: "127.0.0.1:{ui}"{auth}}}
{more_extensions}
service:
  extensions: [{extensions}]
  telemetry: {{metrics: {{level: normal, address: "127.0.0.1:{metrics}"}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [coldstart, tail_latency], exporters: [coldtail_ui]}}
"""
ROUTES = {"/orders": 40.0, "/users": 15.0, "/health": 2.0}


def config(tmp_path, auth: bool = False) -> tuple:
    otlp, ui = free_port(), free_port()
    path = tmp_path / "config.yaml"
    path.write_text(
        PIPELINE.format(
            otlp=otlp,
            ui=ui,
            metrics=free_port(),
            auth=", auth: {authenticator: basicauth}" if auth else "",
            more_extensions="  basicauth: {htpasswd: {inline: 'ops:s3cret'}}" if auth else "",
            extensions="basicauth, coldtail_ui" if auth else "coldtail_ui",
        )
    )
    return path, f"http://127.0.0.1:{otlp}/v1/traces", f"http://127.0.0.1:{ui}"


async def get_json(session, url: str):
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.mark.slow
async def test_the_api_shows_what_was_sent(tmp_path):
    path, otlp, ui = config(tmp_path)
    with CollectorProcess(path):
        sent = await asyncio.to_thread(send, otlp, ROUTES)
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(10):
                while True:
                    summary = await get_json(session, f"{ui}/api/summary")
                    routes = {r["route"]: r for s in summary["services"] for r in s["routes"]}
                    if sum(r["requests"] for r in routes.values()) == sum(
                        len(d) for d in sent.durations.values()
                    ):
                        break
                    await asyncio.sleep(0.2)
            traces = (await get_json(session, f"{ui}/api/traces?limit=50"))["traces"]
            pipelines = await get_json(session, f"{ui}/api/pipelines")
            async with session.get(f"{ui}/api/events") as events:
                assert events.headers["Content-Type"] == "text/event-stream"
                first = (await events.content.readuntil(b"\n\n")).decode()
            async with session.get(f"{ui}/") as page:
                html = await page.text()
    assert [s["service"] for s in summary["services"]] == ["orders"]
    for route, durations in sent.durations.items():
        r = routes[route]
        assert r["requests"] == len(durations)
        assert r["cold"] == sent.cold.get(route, 0)
        assert r["errors"] == sent.errors.get(route, 0)
        warm = sorted(sent.warm[route])
        # The sketch ranks as q * (n - 1) and is within 1% of the value at that rank.
        assert r["warm"]["p50"] == pytest.approx(warm[int(0.5 * (len(warm) - 1))], rel=0.01)
        assert r["warm"]["p99"] == pytest.approx(warm[int(0.99 * (len(warm) - 1))], rel=0.01)
    assert sum(r["cold"] for r in routes.values()) == 4  # one per environment
    for route in sent.cold:  # the init span's duration, joined by the coldstart processor
        assert routes[route]["init_ms"]["p50"] == pytest.approx(720, rel=0.02)
    cold_traces = [t for t in traces if "cold" in t["reasons"]]
    assert len(cold_traces) == 4
    for trace in cold_traces:  # the request, its init and its query, the init first after it
        assert [s["name"] for s in trace["spans"]][1] == "init" and len(trace["spans"]) == 3
    assert pipelines["pipelines"] == [
        {
            "id": "traces",
            "receivers": ["otlp"],
            "processors": ["coldstart", "tail_latency"],
            "exporters": ["coldtail_ui"],
        }
    ]
    components = {(c["kind"], c["id"]): c for c in pipelines["components"]}
    # Each request and its query, and an init span per cold start.
    total = sum(2 * len(d) for d in sent.durations.values()) + sum(sent.cold.values())
    assert components["receiver", "otlp"]["accepted"] == total
    assert components["exporter", "coldtail_ui"]["sent"] == total
    assert first.startswith("event: summary\ndata: ")
    assert json.loads(first.split("data: ", 1)[1])["services"]
    assert "<html" in html.lower()


@pytest.mark.slow
async def test_with_auth_the_page_asks_for_the_password(tmp_path):
    path, _, ui = config(tmp_path, auth=True)
    with CollectorProcess(path):
        async with aiohttp.ClientSession() as session:
            for url in (f"{ui}/", f"{ui}/api/summary"):
                async with session.get(url) as response:
                    assert response.status == 401
                    assert response.headers["WWW-Authenticate"].startswith("Basic")
            good = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
            async with session.get(f"{ui}/api/summary", headers=good) as response:
                assert response.status == 200
