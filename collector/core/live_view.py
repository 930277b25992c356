"""What the coldtail_ui page shows: per service and route, the requests of a sliding window
(counts, cold starts, errors, init durations, warm and cold latency quantiles and a histogram)
and the latest cold, tail and failed traces with their spans. `coldtail_ui` exporters record
into it; the `coldtail_ui` extension serves it. One per service (`settings.shared`), bounded:
at most `max_routes` routes (the least recently seen forgotten first) and `max_traces` traces.

A request is an entry span (pdata.is_entry_span); its route is its `http.route`, else its name.
It is cold when it carries `coldtail.cold_start` (or `faas.coldstart`) true, in the tail when
the tail_latency processor tagged it (`coldtail.latency.tail`), failed when its status is ERROR.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.attributes import COLD_START, FAAS_COLDSTART, INIT_DURATION_MS, LATENCY_TAIL
from collector.core.pdata import Traces, entry_spans
from collector.core.sketch import Sketch, WindowedSketch

# Histogram bounds, ms: log-spaced, from a cache hit to a timed-out Lambda.
BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
_QUANTILES = (0.5, 0.95, 0.99)
_KINDS = {v: name.removeprefix("SPAN_KIND_").lower() for name, v in Span.SpanKind.items()}
_ERROR = Status.STATUS_CODE_ERROR
HTTP_ROUTE = "http.route"
_NS_PER_MS = 1e6


class _Epoch:
    """One sub-window's counts of a route."""

    __slots__ = ("cold", "cold_hist", "epoch", "errors", "init_max", "requests", "warm_hist")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.requests = self.errors = self.cold = 0
        self.init_max = 0.0
        self.warm_hist = [0] * (len(BOUNDS_MS) + 1)
        self.cold_hist = [0] * (len(BOUNDS_MS) + 1)


class _Route:
    def __init__(self, sub_windows: int, epoch: int) -> None:
        self.epochs: list[_Epoch] = []
        self.sub_windows = sub_windows
        self.warm = WindowedSketch(sub_windows, epoch)
        self.cold = WindowedSketch(sub_windows, epoch)
        self.init = WindowedSketch(sub_windows, epoch)

    def current(self, epoch: int) -> _Epoch:
        if not self.epochs or self.epochs[-1].epoch < epoch:
            self.epochs.append(_Epoch(epoch))
            self.advance(epoch)
        return self.epochs[-1]

    def advance(self, epoch: int) -> None:
        oldest = epoch - self.sub_windows + 1
        while self.epochs and self.epochs[0].epoch < oldest:
            self.epochs.pop(0)
        for sketch in (self.warm, self.cold, self.init):
            sketch.advance(epoch)


@dataclass
class _Kept:
    """A trace kept for the page, with the spans seen of it so far."""

    trace_id: bytes
    service: str
    route: str
    reasons: list[str]
    spans: list[dict] = field(default_factory=list)
    seen: set[bytes] = field(default_factory=set)


class LiveView:
    def __init__(
        self,
        window_s: float = 300.0,
        sub_windows: int = 5,
        max_routes: int = 500,
        max_traces: int = 50,
        max_spans: int = 200,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_s = window_s
        self.sub_windows = sub_windows
        self.max_routes = max_routes
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.clock = clock
        self.routes_dropped = 0
        self.recording = False  # whether some coldtail_ui exporter feeds this view
        self._routes: OrderedDict[tuple[str, str], _Route] = OrderedDict()
        self._traces: OrderedDict[bytes, _Kept] = OrderedDict()

    def _epoch(self) -> int:
        return int(self.clock() // (self.window_s / self.sub_windows))

    # --- recording --------------------------------------------------------------------------

    def record(self, batch: Traces) -> None:
        """Count the batch's requests and keep the spans of its cold, tail and failed traces."""
        epoch = self._epoch()
        keep: dict[bytes, tuple[str, str, list[str]]] = {}
        for rs in batch.resource_spans:
            service = _service(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in entry_spans(ss.spans):
                    route, reasons = self._request(service, span, epoch)
                    if reasons:
                        keep.setdefault(span.trace_id, (service, route, reasons))
        if keep or self._traces:
            self._keep_spans(batch, keep)

    def _request(self, service: str, span: Span, epoch: int) -> tuple[str, list[str]]:
        """Count one request; its route, and why its trace is worth keeping (empty: it is
        not)."""
        cold = tail = init_ms = None
        name = span.name
        # One pass over the attributes: they are most of a request's cost here.
        for kv in span.attributes:
            k = kv.key
            if k == HTTP_ROUTE:
                name = kv.value.string_value or name
            elif k == COLD_START or (k == FAAS_COLDSTART and cold is None):
                cold = kv.value.bool_value or kv.value.string_value.lower() == "true"
            elif k == LATENCY_TAIL:
                tail = kv.value.string_value
            elif k == INIT_DURATION_MS:
                init_ms = kv.value.double_value or float(kv.value.int_value)
        key = (service, name)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = _Route(self.sub_windows, epoch)
            if len(self._routes) > self.max_routes:
                self._routes.popitem(last=False)
                self.routes_dropped += 1
        else:
            self._routes.move_to_end(key)
        ms = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / _NS_PER_MS
        failed = span.status.code == _ERROR
        counts = route.current(epoch)
        counts.requests += 1
        bucket = _bucket(ms)
        if cold:
            counts.cold += 1
            counts.cold_hist[bucket] += 1
            route.cold.add(ms, epoch)
        else:
            counts.warm_hist[bucket] += 1
            route.warm.add(ms, epoch)
        if failed:
            counts.errors += 1
        if init_ms is not None:
            route.init.add(init_ms, epoch)
            counts.init_max = max(counts.init_max, init_ms)
        reasons = ["cold"] if cold else []
        if tail in ("p95", "p99"):
            reasons.append(tail)
        if failed:
            reasons.append("error")
        return name, reasons

    def _keep_spans(self, batch: Traces, keep: dict[bytes, tuple[str, str, list[str]]]) -> None:
        for trace_id, (service, route, reasons) in keep.items():
            kept = self._traces.get(trace_id)
            if kept is None:
                self._traces[trace_id] = _Kept(trace_id, service, route, reasons)
                while len(self._traces) > self.max_traces:
                    self._traces.popitem(last=False)
            else:
                kept.reasons = sorted(set(kept.reasons) | set(reasons))
                self._traces.move_to_end(trace_id)
        traces = self._traces
        for rs in batch.resource_spans:
            name = ""  # the resource's service.name, read only for spans kept
            for ss in rs.scope_spans:
                for span in [s for s in ss.spans if s.trace_id in traces]:
                    kept = traces[span.trace_id]
                    if span.span_id not in kept.seen and len(kept.spans) < self.max_spans:
                        name = name or _service(rs.resource.attributes)
                        kept.seen.add(span.span_id)
                        kept.spans.append(_span(name, span))

    # --- reading ----------------------------------------------------------------------------

    def summary(self) -> dict:
        epoch = self._epoch()
        services: dict[str, list[dict]] = {}
        for (service, name), route in self._routes.items():
            route.advance(epoch)
            live = route.epochs
            requests = sum(e.requests for e in live)
            if not requests:
                continue
            cold = sum(e.cold for e in live)
            services.setdefault(service, []).append(
                {
                    "route": name,
                    "requests": requests,
                    "errors": sum(e.errors for e in live),
                    "cold": cold,
                    "cold_rate": cold / requests,
                    "warm": _quantiles(route.warm),
                    "cold_latency": _quantiles(route.cold),
                    "all": _quantiles(route.warm, route.cold),
                    "init_ms": (
                        {
                            "count": route.init.count,
                            "p50": route.init.quantiles([0.5])[0],
                            "max": max(e.init_max for e in live),
                        }
                        if route.init.count
                        else None
                    ),
                    "histogram": {
                        "bounds_ms": list(BOUNDS_MS),
                        "warm": _column_sums([e.warm_hist for e in live]),
                        "cold": _column_sums([e.cold_hist for e in live]),
                    },
                }
            )
        return {
            "generated_at_ms": int(self.clock() * 1000),
            "window_s": self.window_s,
            "routes_dropped": self.routes_dropped,
            "recording": self.recording,
            "services": [
                {"service": s, "routes": sorted(rs, key=lambda r: -r["requests"])}
                for s, rs in sorted(services.items())
            ],
        }

    def traces(self, limit: int = 20) -> list[dict]:
        out: list[dict] = []
        for kept in reversed(self._traces.values()):
            if len(out) >= limit:
                break
            if not kept.spans:
                continue
            start = min(s["start_ns"] for s in kept.spans)
            end = max(s["end_ns"] for s in kept.spans)
            spans = sorted(kept.spans, key=lambda s: (s["start_ns"], not s["init"]))
            out.append(
                {
                    "trace_id": kept.trace_id.hex(),
                    "service": kept.service,
                    "route": kept.route,
                    "reasons": kept.reasons,
                    "start_unix_ms": start / _NS_PER_MS,
                    "duration_ms": (end - start) / _NS_PER_MS,
                    "spans": [_relative(s, start) for s in spans],
                }
            )
        return out


def _service(attrs) -> str:
    for kv in attrs:
        if kv.key == "service.name":
            return kv.value.string_value
    return "unknown"


def _column_sums(rows: list[list[int]]) -> list[int]:
    return [sum(column) for column in zip(*rows, strict=True)]


def _bucket(ms: float) -> int:
    for i, bound in enumerate(BOUNDS_MS):
        if ms <= bound:
            return i
    return len(BOUNDS_MS)


def _quantiles(*sketches: WindowedSketch) -> dict:
    """p50, p95 and p99 of the values of `sketches` together."""
    merged = Sketch()
    for sketch in sketches:
        merged.merge(sketch.total)
    if not merged.count:
        return {"count": 0, "p50": None, "p95": None, "p99": None}
    p50, p95, p99 = merged.quantiles(_QUANTILES)
    return {"count": merged.count, "p50": p50, "p95": p95, "p99": p99}


def _span(service: str, span: Span) -> dict:
    attrs = {kv.key: kv.value for kv in span.attributes if kv.key in (COLD_START, FAAS_COLDSTART)}
    cold = any(v.bool_value for v in attrs.values())
    return {
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex(),
        "name": span.name,
        "service": service,
        "kind": _KINDS.get(span.kind, "unspecified"),
        "start_ns": span.start_time_unix_nano,
        "end_ns": max(span.end_time_unix_nano, span.start_time_unix_nano),
        "status": "error" if span.status.code == _ERROR else "ok",
        "cold": cold,
        "init": span.name == "init",
    }


def _relative(span: dict, start: int) -> dict:
    out = {k: v for k, v in span.items() if k not in ("start_ns", "end_ns")}
    out["start_ms"] = (span["start_ns"] - start) / _NS_PER_MS
    out["duration_ms"] = (span["end_ns"] - span["start_ns"]) / _NS_PER_MS
    return out
