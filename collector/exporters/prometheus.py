"""Exporter `prometheus`: serves the latest value of every series at /metrics for Prometheus to
scrape (text format 0.0.4).

Series are translated as collector.exporters.promnames describes. Delta monotonic sums and delta
histograms are accumulated into cumulative series, as the Collector's exporter does: a delta
point that starts where the stored one ended is added to it; any other delta point restarts the
series. Exponential histograms and delta non-monotonic sums are left out with a logged note and
counted as failed.

The exposition carries `job` and `instance` labels from the resource; scrape it with
`honor_labels: true` so Prometheus keeps them instead of renaming them `exported_*`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import Field, field_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration, ListenEndpoint
from collector.core.http_server import HttpServer
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.core.tls import TLSServerConfig
from collector.exporters import promnames
from collector.exporters.promnames import Labels, MetricType, Point

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ResourceToTelemetryConfig(ComponentConfig):
    enabled: bool = False
    """Copy every resource attribute onto every series as a label (default false: the
    resource gives only `job`, `instance` and the `target_info` series)."""


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:8889"
    """host:port the /metrics endpoint listens on (default 127.0.0.1:8889; port 0 picks a free
    port)."""
    tls: TLSServerConfig | None = None
    """Serve /metrics over TLS (default none: plaintext)."""
    namespace: str = ""
    """Prefix of every metric name, joined with `_` (default empty = no prefix)."""
    const_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every series that does not carry them already (default empty =
    none)."""
    send_timestamps: bool = False
    """Write each sample's timestamp (ms) into the exposition (default false: Prometheus stamps
    samples with the scrape time)."""
    metric_expiration: Duration = Field(300.0, ge=0)
    """A series not updated for this long disappears from /metrics (default 5m; 0 = never)."""
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(
        default_factory=ResourceToTelemetryConfig
    )
    """Resource attributes as labels on every series."""
    add_metric_suffixes: bool = True
    """Append unit suffixes (`_seconds`, `_bytes`, `_ratio`) and `_total` for counters to metric
    names (default true). When false, names are only sanitised."""
    max_series: int = Field(100_000, ge=1)
    """Most series held (default 100000). Beyond it the least recently updated series is
    dropped."""

    _check_const_labels = field_validator("const_labels")(promnames.check_label_names)


@dataclass
class _Family:
    type: MetricType
    help: str
    series: dict[Labels, _Series] = field(default_factory=dict)


@dataclass
class _Series:
    point: Point
    updated: float  # clock seconds


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_line(name: str, labels: Labels, value: float, timestamp_ms: int | None) -> str:
    line = name
    if labels:
        line += "{" + ",".join(f'{k}="{_escape_value(v)}"' for k, v in labels) + "}"
    line += " " + promnames.format_float(value)
    if timestamp_ms is not None:
        line += f" {timestamp_ms}"
    return line


def _accumulate(previous: Point, point: Point) -> Point | None:
    """The point to store in place of `previous`; None keeps `previous`."""
    if point.time_ns < previous.time_ns:
        return None  # out of order: the stored point is newer
    if not point.delta or point.start_ns != previous.time_ns:
        return point
    point.start_ns = previous.start_ns
    if point.type is MetricType.HISTOGRAM:
        if point.bounds != previous.bounds:
            return point
        point.bucket_counts = tuple(
            a + b for a, b in zip(previous.bucket_counts, point.bucket_counts, strict=False)
        )
        point.count += previous.count
        if point.sum is not None and previous.sum is not None:
            point.sum += previous.sum
    else:
        point.value += previous.value
    return point


class PrometheusExporter:
    """Keeps the latest point of every series, bounded by `max_series` and
    `metric_expiration`, and renders them on each scrape. `clock` (seconds, monotonic) times
    the expiration."""

    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.log = settings.logger
        self.endpoint = config.endpoint
        self._clock = clock
        self._options = promnames.Options(
            namespace=config.namespace,
            add_metric_suffixes=config.add_metric_suffixes,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            extra_labels=config.const_labels,
        )
        exporter = str(settings.id)
        self._sent = settings.telemetry.exporter_sent[signal].labels(exporter=exporter)
        self._failed = settings.telemetry.exporter_send_failed[signal].labels(exporter=exporter)
        self._families: dict[str, _Family] = {}
        # Every series in update order, oldest first: expiry and eviction pop from the front.
        self._by_age: OrderedDict[tuple[str, Labels], _Series] = OrderedDict()
        self._skip_log = promnames.SkipLog(self.log)
        self._server: HttpServer | None = None

    async def start(self, host) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls)
        self.endpoint = await self._server.start()
        self.log.info("serving Prometheus metrics", extra={"kv": {"endpoint": self.endpoint}})

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def consume(self, batch) -> None:
        translation = promnames.translate(batch, self._options)
        now = self._clock()
        conflicting = sum(not self._store(point, now) for point in translation.points)
        self._expire(now)
        self._skip_log(translation.skipped)
        left_out = translation.skipped_count + conflicting
        self._failed.inc(left_out)
        self._sent.inc(count_items(batch) - left_out)

    def _store(self, point: Point, now: float) -> bool:
        """Store a point; False when it is left out."""
        if point.stale:
            # The text format cannot carry an end-of-series marker; expiry removes the series.
            return True
        family = self._families.get(point.name)
        if family is None:
            family = self._families[point.name] = _Family(point.type, point.help)
        elif family.type is not point.type:
            self._skip_log({(f"the name is taken by a {family.type}", point.name): 1})
            return False
        series = self._by_age.get(point.key)
        if series is None:
            series = family.series[point.labels] = _Series(point, now)
            self._by_age[point.key] = series
            while len(self._by_age) > self.config.max_series:
                self._drop_oldest()
            return True
        stored = _accumulate(series.point, point)
        if stored is not None:
            series.point, series.updated = stored, now
            self._by_age.move_to_end(point.key)
        return True

    def _drop_oldest(self) -> None:
        (name, labels), _ = self._by_age.popitem(last=False)
        family = self._families[name]
        del family.series[labels]
        if not family.series:
            del self._families[name]

    def _expire(self, now: float) -> None:
        if not self.config.metric_expiration:
            return
        cutoff = now - self.config.metric_expiration
        while self._by_age and next(iter(self._by_age.values())).updated < cutoff:
            self._drop_oldest()

    def exposition(self) -> str:
        """The text exposition of every live series."""
        self._expire(self._clock())
        lines = []
        for name in sorted(self._families):
            family = self._families[name]
            if family.help:
                lines.append(f"# HELP {name} {_escape_help(family.help)}")
            lines.append(f"# TYPE {name} {family.type}")
            for labels in sorted(family.series):
                point = family.series[labels].point
                ts = point.time_ns // 1_000_000 if self.config.send_timestamps else None
                for sample, sample_labels, value in promnames.samples(point):
                    lines.append(_sample_line(sample, sample_labels, value, ts))
        return "\n".join(lines) + "\n" if lines else ""

    async def _serve(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.exposition().encode(), headers={"Content-Type": _CONTENT_TYPE}
        )


factory = Factory(
    kind=Kind.EXPORTER,
    type="prometheus",
    config=Config,
    create=PrometheusExporter,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Serves metrics at /metrics for Prometheus to scrape.",
)
