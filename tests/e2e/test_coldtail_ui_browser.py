"""The coldtail_ui page in a real browser: headless Chromium (Debian's `chromium`) loads it from
a collector process while Lambda-like traffic arrives; the rendered DOM must show the routes,
their cold-start rates and tail latencies as sent (p99 within the sketch's error), and a
screenshot of it is kept in test-artifacts/."""

from __future__ import annotations

import asyncio
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from tests.extensions.test_coldtail_ui import ROUTES, config
from tests.support.chromium import CHROMIUM, Chromium
from tests.support.lambda_traffic import send
from tests.support.process import CollectorProcess

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


class Cells(HTMLParser):
    """The cells of the route rows: {(service, route): {field: text}}, and the body's state."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, str], dict[str, str]] = {}
        self.state = ""
        self._row: dict[str, str] | None = None
        self._field: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.state = a.get("data-state", "")
        if "data-route" in a and "data-service" in a:
            self._row = self.rows.setdefault((a["data-service"], a["data-route"]), {})
        if "data-field" in a and self._row is not None:
            self._field = a["data-field"]
            self._row[self._field] = ""

    def handle_data(self, data):
        if self._field is not None and self._row is not None:
            self._row[self._field] += data.strip()

    def handle_endtag(self, tag):
        if tag in ("td", "th", "span", "div"):
            self._field = None
        if tag == "tr":
            self._row = None


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%ms "))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make test-servers` installs Debian's")
async def test_the_page_shows_cold_starts_and_the_tail_per_route(tmp_path):
    path, otlp, ui = config(tmp_path)
    with CollectorProcess(path):
        sent = await asyncio.to_thread(send, otlp, ROUTES, environments=5, requests=60)
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(10):
                while True:
                    async with session.get(f"{ui}/api/summary") as response:
                        summary = await response.json()
                    total = sum(r["requests"] for s in summary["services"] for r in s["routes"])
                    if total == sum(len(d) for d in sent.durations.values()):
                        break
                    await asyncio.sleep(0.2)
        async with Chromium() as browser:
            page = await browser.open(f"{ui}/", width=1280, height=1000)
            await page.wait_for("document.body.dataset.state === 'live'")
            # As a user would: open a route's histogram and a cold start's waterfall.
            await page.evaluate(
                "document.querySelector('tr[data-route=\"/orders\"] button.expand').click()"
            )
            await page.wait_for("!!document.querySelector('[data-chart=histogram]')")
            await page.evaluate(
                "[...document.querySelectorAll('[data-trace-id]')]"
                ".find(e => e.textContent.includes('cold')).querySelector('button').click()"
            )
            await page.wait_for(
                "document.querySelector('[data-chart=waterfall]')?.textContent.includes('init')"
            )
            waterfall = await page.evaluate(
                "document.querySelector('[data-chart=waterfall]').textContent"
            )
            dom = await page.evaluate("document.documentElement.outerHTML")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "coldtail_ui.png"
            shot.write_bytes(await page.screenshot())
            phone = await browser.open(f"{ui}/", width=390, height=844)
            await phone.wait_for("document.body.dataset.state === 'live'")
            (ARTIFACTS / "coldtail_ui_phone.png").write_bytes(await phone.screenshot())
    cells = Cells()
    cells.feed(dom)
    assert cells.state == "live", dom[:2000]
    api = {r["route"]: r for s in summary["services"] for r in s["routes"]}
    assert {route for _, route in cells.rows} == set(ROUTES)
    for route, durations in sent.durations.items():
        row = cells.rows["orders", route]
        assert number(row["requests"]) == len(durations)
        cold_rate = sent.cold.get(route, 0) / len(durations)
        assert number(row["cold_rate"]) == pytest.approx(100 * cold_rate, abs=0.05)
        if sent.cold.get(route):  # the init span's 720 ms, joined by the coldstart processor
            assert number(row["init_p50"]) == pytest.approx(720, rel=0.02)
        # The warm p99 shown (3 significant digits) is the sent durations' p99 (the value of
        # rank 0.99 * (n - 1), as the sketch ranks) within the sketch's 1% and the rounding.
        warm = sorted(sent.warm[route])
        exact = warm[int(0.99 * (len(warm) - 1))]
        assert number(row["warm_p99"]) == pytest.approx(exact, rel=0.015)
        assert number(row["warm_p50"]) == pytest.approx(warm[int(0.5 * (len(warm) - 1))], rel=0.015)
        assert api[route]["warm"]["p99"] == pytest.approx(exact, rel=0.01)
    assert "init" in waterfall  # the cold start's init segment
    assert shot.stat().st_size > 10_000
