"""The collector's own telemetry: Prometheus metrics with the OTel Collector's names, and logs.

Metric names follow the Collector (`otelcol_receiver_accepted_spans`, ...); counters carry the
Prometheus `_total` suffix on the wire, as the Collector's Prometheus endpoint does. Each
Telemetry owns its registry, so several services can run in one process (tests).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psutil
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import disable_created_metrics as _disable_created_metrics
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from collector.core.endpoints import ListenError, bound_port, split_endpoint
from collector.core.signals import ITEM_NAMES, Signal

_disable_created_metrics()

log = logging.getLogger("coldtail")


T = TypeVar("T")


def _per_signal(registry, kind: type, name: str, doc: str, labels: list[str]) -> dict:
    return {
        s: kind(
            name.format(items=ITEM_NAMES[s]),
            doc.format(items=ITEM_NAMES[s].replace("_", " ")),
            labels,
            registry=registry,
        )
        for s in Signal
    }


class _ProcessCounters:
    """The process's uptime and CPU time as counters, as the Collector reports them (they only
    grow): `otelcol_process_uptime_total` and `otelcol_process_cpu_seconds_total`."""

    def __init__(self, process: psutil.Process, started: float) -> None:
        self.process, self.started = process, started

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "otelcol_process_uptime", "Uptime of the process [s].", value=time.time() - self.started
        )
        yield CounterMetricFamily(
            "otelcol_process_cpu_seconds",
            "Total CPU user and system time [s].",
            value=sum(self.process.cpu_times()[:2]),
        )


class Telemetry:
    """Counters and gauges shared by all components of one service."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self._metric_sets: dict[Callable[[CollectorRegistry], Any], Any] = {}
        recv, exp = ["receiver", "transport"], ["exporter"]
        self.receiver_accepted = _per_signal(
            r,
            Counter,
            "otelcol_receiver_accepted_{items}",
            "Number of {items} successfully pushed into the pipeline.",
            recv,
        )
        self.receiver_refused = _per_signal(
            r,
            Counter,
            "otelcol_receiver_refused_{items}",
            "Number of {items} that could not be pushed into the pipeline.",
            recv,
        )
        self.exporter_sent = _per_signal(
            r,
            Counter,
            "otelcol_exporter_sent_{items}",
            "Number of {items} successfully sent to destination.",
            exp,
        )
        self.exporter_send_failed = _per_signal(
            r,
            Counter,
            "otelcol_exporter_send_failed_{items}",
            "Number of {items} in failed attempts to send to destination.",
            exp,
        )
        self.exporter_enqueue_failed = _per_signal(
            r,
            Counter,
            "otelcol_exporter_enqueue_failed_{items}",
            "Number of {items} failed to be added to the sending queue.",
            exp,
        )
        self.exporter_queue_size = Gauge(
            "otelcol_exporter_queue_size",
            "Current size of the retry queue (in batches).",
            ["exporter", "data_type"],
            registry=r,
        )
        self.exporter_queue_capacity = Gauge(
            "otelcol_exporter_queue_capacity",
            "Fixed capacity of the retry queue (in batches).",
            ["exporter", "data_type"],
            registry=r,
        )
        proc = ["processor", "pipeline", "otel_signal"]
        self.processor_incoming = Counter(
            "otelcol_processor_incoming_items",
            "Number of items passed to the processor.",
            proc,
            registry=r,
        )
        self.processor_outgoing = Counter(
            "otelcol_processor_outgoing_items",
            "Number of items emitted from the processor.",
            proc,
            registry=r,
        )
        self._process = psutil.Process(os.getpid())
        self._started = time.time()
        Gauge(
            "otelcol_process_memory_rss",
            "Total physical memory (resident set size) [By].",
            registry=r,
        ).set_function(lambda: self._process.memory_info().rss)
        r.register(_ProcessCounters(self._process, self._started))

    def receiver_counters(self, signal: Signal, receiver: str, transport: str) -> tuple:
        """(accepted, refused) item counters of one receiver's signal and transport."""
        labels = {"receiver": receiver, "transport": transport}
        return (
            self.receiver_accepted[signal].labels(**labels),
            self.receiver_refused[signal].labels(**labels),
        )

    def metric_set(self, create: Callable[[CollectorRegistry], T]) -> T:
        """`create(registry)`, made once per Telemetry: the metrics of a component type, shared
        by its instances (one per pipeline or signal) and told apart by their labels, since a
        registry holds a metric name once."""
        if create not in self._metric_sets:
            self._metric_sets[create] = create(self.registry)
        return self._metric_sets[create]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ConstantLabels:
    """`registry`'s metrics with `labels` added to every sample: the service's resource."""

    def __init__(self, registry: CollectorRegistry, labels: dict[str, str]) -> None:
        self.registry = registry
        self.labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): v for k, v in labels.items()}

    def collect(self) -> Iterator[Metric]:
        for metric in self.registry.collect():
            labelled = Metric(metric.name, metric.documentation, metric.type, metric.unit)
            for sample in metric.samples:
                labelled.add_sample(
                    sample.name,
                    {**sample.labels, **self.labels},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
            yield labelled


class MetricsServer:
    """Serves the Prometheus text exposition of a Telemetry at /metrics."""

    def __init__(
        self, telemetry: Telemetry, address: str, labels: dict[str, str] | None = None
    ) -> None:
        self.telemetry = telemetry
        self.address = address
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._labelled = _ConstantLabels(telemetry.registry, labels or {})

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self._labelled),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        host, port = split_endpoint(self.address)
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await self.shutdown()
            raise ListenError(self.address, e) from None
        self.port = bound_port(site)
        log.info("own metrics served", extra={"kv": {"endpoint": f"{host}:{self.port}/metrics"}})

    async def shutdown(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None


def coldtail_version() -> str:
    """The installed coldtail's version ("unknown" in a source tree that is not installed)."""
    try:
        return importlib.metadata.version("coldtail")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# (below this many nanoseconds, round to this many), for go_duration
_ROUNDING = ((10**6, 1), (10**9, 10**3), (60 * 10**9, 10**6), (3600 * 10**9, 10**8))


def go_duration(seconds: float) -> str:
    """A measured duration as the Collector (Go) prints one: `1h2m3s`, `34m52.3s`, `5.078s`,
    `12.5ms`; rounded to what a reader needs: microseconds under a second, milliseconds under
    a minute, tenths of a second under an hour, seconds beyond (nanoseconds under a
    millisecond)."""
    ns = round(abs(seconds) * 1e9)
    unit = next((unit for limit, unit in _ROUNDING if ns < limit), 10**9)
    ns = (ns + unit // 2) // unit * unit  # half away from zero, as Go's Duration.Round
    sign = "-" if seconds < 0 and ns else ""
    if ns < 10**3:
        return f"{sign}{ns}ns" if ns else "0s"
    if ns < 10**6:
        return f"{sign}{_decimal(ns, 10**3)}µs"
    if ns < 10**9:
        return f"{sign}{_decimal(ns, 10**6)}ms"
    hours, rest = divmod(ns, 3600 * 10**9)
    minutes, rest = divmod(rest, 60 * 10**9)
    text = f"{hours}h{minutes}m" if hours else f"{minutes}m" if minutes else ""
    return f"{sign}{text}{_decimal(rest, 10**9)}s"


def _decimal(n: int, unit: int) -> str:
    """`n / unit` with the fraction's trailing zeros trimmed: 5078 / 1000 is 5.078."""
    whole, part = divmod(n, unit)
    fraction = f"{part:0{len(str(unit)) - 1}d}".rstrip("0")
    return f"{whole}.{fraction}" if fraction else str(whole)


# --- logs -----------------------------------------------------------------------------------


def _level(record: logging.LogRecord) -> str:
    # The Collector's (zap's) names: `warn`, not Python's `warning`.
    return "warn" if record.levelno == logging.WARNING else record.levelname.lower()


class _TextFormatter(logging.Formatter):
    """One line per record: time, level, message, then its `kv` fields as JSON. A record with
    a `block` (lines) prints them indented under the message instead of its fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = f"{ts}.{int(record.msecs):03d}Z\t{_level(record)}\t{record.getMessage()}"
        kv = getattr(record, "kv", None)
        block = getattr(record, "block", None)
        if block:
            line += "".join(f"\n    {text}" for text in block)
        elif kv:
            line += "\t" + json.dumps(kv, default=str, separators=(", ", ": "))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": _level(record),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        entry.update(getattr(record, "kv", None) or {})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class DropLog:
    """Counts what a receiver without a way to answer (UDP) drops, by reason, and logs it at
    most once per `interval` seconds, so that a misbehaving sender cannot flood the log."""

    MAX_REASONS = 10  # distinct reasons kept until the next line; more become "other reasons"

    def __init__(self, log, message: str, unit: str, interval: float = 10.0) -> None:
        self.log, self.message, self.unit, self.interval = log, message, unit, interval
        self._dropped: dict[str, int] = {}
        self._last = float("-inf")

    def drop(self, reason: str, count: int = 1) -> None:
        if reason not in self._dropped and len(self._dropped) >= self.MAX_REASONS:
            reason = "other reasons"
        self._dropped[reason] = self._dropped.get(reason, 0) + count
        self.flush(force=False)

    def flush(self, force: bool = True) -> None:
        """Log what was dropped since the last line (now, unless `force` is false and the
        interval has not passed)."""
        now = time.monotonic()
        if not self._dropped or (not force and now - self._last < self.interval):
            return
        self._last = now
        for reason, count in self._dropped.items():
            self.log.warning(self.message, extra={"kv": {self.unit: count, "reason": reason}})
        self._dropped.clear()


def setup_logging(level: str = "info", encoding: str = "console") -> None:
    """Structured logs to stderr: `console` (tab-separated text) or `json`. Extra fields go in
    `extra={"kv": {...}}`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if encoding == "json" else _TextFormatter())
    root = logging.getLogger("coldtail")
    root.handlers[:] = [handler]
    root.setLevel("WARNING" if level == "warn" else level.upper())
    root.propagate = False


def component_logger(kind: str, id: object, pipeline: str = "") -> logging.LoggerAdapter:
    """A logger that tags every line with the component (and pipeline)."""
    fields = {"kind": kind, "name": str(id)}
    if pipeline:
        fields["pipeline"] = pipeline

    class _Adapter(logging.LoggerAdapter):
        def process(self, msg, kwargs):
            extra = kwargs.setdefault("extra", {})
            extra["kv"] = {**fields, **extra.get("kv", {})}
            return msg, kwargs

    return _Adapter(logging.getLogger(f"coldtail.{kind}.{id}"), {})
