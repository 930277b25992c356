"""The live view behind the coldtail_ui page: what it counts per route, what it keeps."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.live_view import BOUNDS_MS, LiveView
from collector.core.pdata import Traces, set_attr
from collector.core.sketch import DEFAULT_RELATIVE_ACCURACY


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def request(
    batch: Traces,
    service: str,
    route: str,
    ms: float,
    cold: bool = False,
    tail: str = "",
    error: bool = False,
    init_ms: float | None = None,
    children: int = 0,
) -> bytes:
    """An entry span (and `children` client spans under it) in its own resource; its trace id."""
    rs = batch.resource_spans.add()
    set_attr(rs.resource.attributes, "service.name", service)
    ss = rs.scope_spans.add()
    trace_id = random.randbytes(16)
    span = ss.spans.add(trace_id=trace_id, span_id=random.randbytes(8), name=f"GET {route}")
    span.kind = Span.SPAN_KIND_SERVER
    span.start_time_unix_nano = 1_000_000_000
    span.end_time_unix_nano = span.start_time_unix_nano + int(ms * 1e6)
    set_attr(span.attributes, "http.route", route)
    set_attr(span.attributes, "coldtail.cold_start", cold)
    if tail:
        set_attr(span.attributes, "coldtail.latency.tail", tail)
    if init_ms is not None:
        set_attr(span.attributes, "coldtail.init_duration_ms", init_ms)
    if error:
        span.status.code = Status.STATUS_CODE_ERROR
    for i in range(children):
        child = ss.spans.add(trace_id=trace_id, span_id=random.randbytes(8), name=f"call {i}")
        child.parent_span_id = span.span_id
        child.kind = Span.SPAN_KIND_CLIENT
        child.start_time_unix_nano = span.start_time_unix_nano + 1000
        child.end_time_unix_nano = child.start_time_unix_nano + 1000
    return trace_id


def routes(view: LiveView) -> dict:
    return {(s["service"], r["route"]): r for s in view.summary()["services"] for r in s["routes"]}


def test_requests_cold_starts_errors_and_quantiles_per_route():
    view = LiveView(clock=Clock())
    batch = Traces()
    warm = [float(ms) for ms in range(1, 101)]
    for ms in warm:
        request(batch, "orders", "/orders/{id}", ms)
    for ms in (800.0, 900.0, 1000.0):
        request(batch, "orders", "/orders/{id}", ms, cold=True, init_ms=ms - 200)
    request(batch, "orders", "/health", 1.0, error=True)
    request(batch, "users", "/orders/{id}", 5.0)  # same route, other service
    view.record(batch)
    r = routes(view)
    orders = r["orders", "/orders/{id}"]
    assert (orders["requests"], orders["cold"], orders["errors"]) == (103, 3, 0)
    assert orders["cold_rate"] == pytest.approx(3 / 103)
    assert orders["warm"]["count"] == 100
    for q, exact in (("p50", 50.0), ("p95", 95.0), ("p99", 99.0)):
        assert orders["warm"][q] == pytest.approx(exact, rel=2 * DEFAULT_RELATIVE_ACCURACY)
    assert orders["cold_latency"]["p50"] == pytest.approx(900, rel=0.02)
    assert orders["init_ms"]["max"] == 800 and orders["init_ms"]["count"] == 3
    hist = orders["histogram"]
    assert len(hist["warm"]) == len(BOUNDS_MS) + 1 == len(hist["cold"])
    assert sum(hist["warm"]) == 100 and sum(hist["cold"]) == 3
    assert hist["cold"][BOUNDS_MS.index(1000)] == 3  # 800, 900 and 1000 ms: the 500-1000 bucket
    assert r["orders", "/health"]["errors"] == 1 and r["orders", "/health"]["init_ms"] is None
    assert r["users", "/orders/{id}"]["requests"] == 1


def test_the_window_slides():
    clock = Clock()
    view = LiveView(window_s=300, sub_windows=5, clock=clock)
    batch = Traces()
    request(batch, "s", "/a", 10.0, cold=True)
    view.record(batch)
    clock.now += 200
    batch = Traces()
    request(batch, "s", "/a", 20.0)
    view.record(batch)
    assert routes(view)["s", "/a"]["requests"] == 2
    clock.now += 200  # the first request is older than the window now
    r = routes(view)["s", "/a"]
    assert (r["requests"], r["cold"]) == (1, 0) and r["cold_latency"]["p50"] is None
    clock.now += 400
    assert routes(view) == {}


def test_routes_and_traces_are_bounded():
    view = LiveView(max_routes=3, max_traces=2, clock=Clock())
    batch = Traces()
    for i in range(5):
        request(batch, "s", f"/r{i}", 10.0, cold=True)
    view.record(batch)
    assert sorted(r for _, r in routes(view)) == ["/r2", "/r3", "/r4"]
    assert view.routes_dropped == 2
    assert [t["route"] for t in view.traces()] == ["/r4", "/r3"]


def test_cold_tail_and_failed_traces_are_kept_with_their_spans():
    view = LiveView(clock=Clock())
    batch = Traces()
    cold = request(batch, "orders", "/a", 900.0, cold=True, children=2)
    tail = request(batch, "orders", "/b", 300.0, tail="p99", children=1)
    failed = request(batch, "orders", "/c", 5.0, error=True)
    request(batch, "orders", "/d", 5.0, children=3)  # an ordinary request: not kept
    view.record(batch)
    # Spans of a kept trace that arrive later join it.
    later = Traces()
    rs = later.resource_spans.add()
    set_attr(rs.resource.attributes, "service.name", "payments")
    span = rs.scope_spans.add().spans.add(trace_id=cold, span_id=b"\x01" * 8, name="charge")
    span.start_time_unix_nano, span.end_time_unix_nano = 1_000_000_000, 1_500_000_000
    view.record(later)
    traces = {t["trace_id"]: t for t in view.traces()}
    assert set(traces) == {cold.hex(), tail.hex(), failed.hex()}
    kept = traces[cold.hex()]
    assert kept["reasons"] == ["cold"] and kept["route"] == "/a"
    assert kept["spans"][0]["name"] == "GET /a"
    assert {s["service"] for s in kept["spans"]} == {"orders", "payments"}
    assert len(kept["spans"]) == 4 and kept["duration_ms"] == pytest.approx(900)
    assert traces[tail.hex()]["reasons"] == ["p99"]
    assert traces[failed.hex()]["reasons"] == ["error"]
    assert traces[failed.hex()]["spans"][0]["status"] == "error"
