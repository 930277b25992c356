"""Receiver `statsd`: StatsD and DogStatsD lines over UDP, aggregated for `aggregation_interval`
and sent as OTLP metrics, as the OTel Collector's statsd receiver does.

Lines are `name:value|type[|@rate][|#tag:value,...]`, several to a datagram. Per interval and per
name, type and tag set: counters (`c`) add up, each value divided by its sample rate, into a delta
Sum (monotonic with `is_monotonic_counter`); gauges (`g`) keep the last value, `+n` / `-n`
changing the previous one (which persists across intervals, as StatsD servers keep it); sets
(`s`) count distinct values as a Gauge; timers (`ms`), histograms (`h`) and distributions (`d`)
become what `timer_histogram_mapping` says: a Gauge of the last value (the default), a Summary
with `percentiles`, or an exponential Histogram of at most `max_size` buckets. Tags become data
point attributes. Malformed lines are dropped, counted as refused and logged at most once per
interval; the others in the same datagram still count. What was aggregated is sent at shutdown
too.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from pydantic import Field, model_validator

from collector.core import tasks
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration, ListenEndpoint
from collector.core.consumer import Consumer
from collector.core.endpoints import listen_udp
from collector.core.pdata import Metrics, count_items, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import DropLog

SCOPE_NAME = "coldtail/statsd"
_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_TYPES = {
    "c": "counter",
    "g": "gauge",
    "s": "set",
    "ms": "timing",
    "h": "histogram",
    "d": "distribution",
}
_OBSERVED = ("timing", "histogram", "distribution")


class HistogramConfig(ComponentConfig):
    max_size: int = Field(160, ge=2, le=160)
    """Most buckets of the exponential histogram (default 160)."""


class SummaryConfig(ComponentConfig):
    percentiles: list[float] = Field([0, 10, 50, 90, 95, 100], min_length=1)
    """Percentiles reported, 0 to 100 (default [0, 10, 50, 90, 95, 100])."""


class TimerMapping(ComponentConfig):
    statsd_type: Literal["timer", "timing", "histogram", "distribution"]
    """The StatsD type: `timer` / `timing` (ms), `histogram` (h) or `distribution` (d). Required."""
    observer_type: Literal["gauge", "summary", "histogram"] = "gauge"
    """What it becomes: `gauge` (the last value, default), `summary` or `histogram`."""
    histogram: HistogramConfig = Field(default_factory=HistogramConfig)
    """Options of the `histogram` observer."""
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    """Options of the `summary` observer."""


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:8125"
    """UDP address the lines arrive on (default 127.0.0.1:8125)."""
    transport: Literal["udp"] = "udp"
    """Only udp, StatsD's own transport (default udp)."""
    aggregation_interval: Duration = Field(60.0, gt=0)
    """How long values are aggregated before they are sent (default 60s)."""
    enable_metric_type: bool = False
    """Add the StatsD type as a `metric_type` attribute (default false)."""
    enable_simple_tags: bool = False
    """Accept tags without a value (`#production`), as attributes with an empty value (default
    false: such a line is malformed)."""
    is_monotonic_counter: bool = False
    """Mark counters' Sums monotonic (default false)."""
    timer_histogram_mapping: list[TimerMapping] = Field(default_factory=list)
    """How timers, histograms and distributions are observed (default: each as a gauge)."""

    @model_validator(mode="after")
    def _one_mapping_per_type(self) -> Config:
        types = [_statsd_type(m.statsd_type) for m in self.timer_histogram_mapping]
        if len(types) != len(set(types)):
            raise ValueError("timer_histogram_mapping names a statsd_type twice")
        return self


def _statsd_type(name: str) -> str:
    return "timing" if name in ("timer", "timing") else name


class InvalidLine(ValueError):
    pass


@dataclass
class Line:
    name: str
    type: str
    value: float
    text: str  # the value as sent: sets count distinct texts, gauges see the sign
    rate: float
    tags: tuple[tuple[str, str], ...]


def parse_line(line: str, simple_tags: bool) -> Line:
    """One StatsD line; InvalidLine saying what is wrong."""
    head, *sections = line.split("|")
    name, sep, text = head.rpartition(":")
    if not sep or not name:
        raise InvalidLine(f"expected name:value|type, got {line[:80]!r}")
    if not sections or sections[0] not in _TYPES:
        raise InvalidLine(f"unknown type in {line[:80]!r}")
    kind = _TYPES[sections[0]]
    rate = 1.0
    tags: tuple[tuple[str, str], ...] = ()
    for section in sections[1:]:
        if section.startswith("@"):
            try:
                rate = float(section[1:])
            except ValueError:
                raise InvalidLine(f"invalid sample rate {section!r}") from None
            if not 0 < rate <= 1:
                raise InvalidLine(f"sample rate {section!r} is not in (0, 1]")
        elif section.startswith("#"):
            tags = _tags(section[1:], simple_tags)
    if kind == "set":
        return Line(name, kind, 0.0, text, rate, tags)
    try:
        value = float(text)
    except ValueError:
        raise InvalidLine(f"invalid value {text!r} for {name}") from None
    if not math.isfinite(value):
        raise InvalidLine(f"invalid value {text!r} for {name}")
    return Line(name, kind, value, text, rate, tags)


def _tags(text: str, simple: bool) -> tuple[tuple[str, str], ...]:
    tags = []
    for tag in text.split(","):
        key, sep, value = tag.partition(":")
        if not key or (not sep and not simple):
            raise InvalidLine(f"invalid tag {tag!r}")
        tags.append((key, value))
    return tuple(sorted(tags))


@dataclass
class _Series:
    """What one (name, type, tags) aggregated in the current interval."""

    count: float = 0.0
    total: float = 0.0
    last: float = 0.0
    values: list[tuple[float, float]] = field(default_factory=list)  # (value, weight)
    members: set[str] = field(default_factory=set)


class StatsdReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self.endpoint = ""
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), "udp"
        )
        self._drops = DropLog(self.log, "statsd lines dropped", "lines")
        self._observers = {_statsd_type(m.statsd_type): m for m in config.timer_histogram_mapping}
        self._series: dict[tuple[str, str, tuple], _Series] = {}
        self._gauges: dict[tuple[str, tuple], float] = {}  # last values, kept across intervals
        self._interval_start = time.time_ns()
        self._transport: asyncio.DatagramTransport | None = None
        self._flusher: asyncio.Task | None = None

    async def start(self, host: Host) -> None:
        self._transport, self.endpoint = await listen_udp(self.config.endpoint, self.take)
        self._interval_start = time.time_ns()
        self._flusher = asyncio.create_task(self._flush_forever())
        self.log.info("statsd listening", extra={"kv": {"endpoint": f"udp {self.endpoint}"}})

    async def shutdown(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._flusher is not None:
            await tasks.cancel([self._flusher])
            self._flusher = None
            await self.flush()  # what was aggregated is sent, not lost
        self._drops.flush()

    def take(self, datagram: bytes) -> None:
        try:
            text = datagram.decode()
        except UnicodeDecodeError:
            self._refused.inc()
            self._drops.drop("not UTF-8")
            return
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                self._add(parse_line(line.strip(), self.config.enable_simple_tags))
            except InvalidLine as e:
                self._refused.inc()
                self._drops.drop(str(e))

    def _add(self, line: Line) -> None:
        series = self._series.setdefault((line.name, line.type, line.tags), _Series())
        if line.type == "counter":
            series.total += line.value / line.rate
        elif line.type == "gauge":
            key = (line.name, line.tags)
            relative = line.text[:1] in "+-"
            value = self._gauges.get(key, 0.0) + line.value if relative else line.value
            self._gauges[key] = series.last = value
        elif line.type == "set":
            series.members.add(line.text)
        else:
            series.last = line.value
            series.values.append((line.value, 1 / line.rate))
        series.count += 1

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.aggregation_interval)
            await self.flush()

    async def flush(self) -> None:
        """Send what was aggregated since the last flush."""
        series, self._series = self._series, {}
        start, self._interval_start = self._interval_start, time.time_ns()
        if not series:
            return
        batch = self._metrics(series, start, self._interval_start)
        points = count_items(batch)
        try:
            await self.next.consume(batch)
        except Exception as e:  # UDP cannot ask the sender to retry: the points are lost
            self._refused.inc(points)
            self._drops.drop(f"the pipeline refused the metrics: {e}", points)
            return
        self._accepted.inc(points)

    def _metrics(self, series: dict[tuple[str, str, tuple], _Series], start: int, now: int):
        batch = Metrics()
        scope = batch.resource_metrics.add().scope_metrics.add()
        scope.scope.name = SCOPE_NAME
        metrics: dict[tuple[str, str], Metric] = {}
        for (name, kind, tags), s in series.items():
            observer = self._observer(kind)
            metric = metrics.get((name, observer))
            if metric is None:
                metric = metrics[name, observer] = scope.metrics.add(name=name)
            point = self._point(metric, kind, observer, s, start, now)
            for key, value in tags:
                set_attr(point.attributes, key, value)
            if self.config.enable_metric_type:
                set_attr(point.attributes, "metric_type", kind)
        return batch

    def _observer(self, kind: str) -> str:
        if kind in _OBSERVED:
            mapping = self._observers.get(kind)
            return mapping.observer_type if mapping else "gauge"
        return {"counter": "sum", "gauge": "gauge", "set": "gauge"}[kind]

    def _point(self, metric: Metric, kind: str, observer: str, s: _Series, start: int, now: int):
        if observer == "sum":
            metric.sum.aggregation_temporality = _DELTA
            metric.sum.is_monotonic = self.config.is_monotonic_counter
            point = metric.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=now)
            if s.total.is_integer():
                point.as_int = int(s.total)
            else:
                point.as_double = s.total
            return point
        if observer == "gauge":
            point = metric.gauge.data_points.add(time_unix_nano=now)
            if kind == "set":
                point.as_int = len(s.members)
            else:
                point.as_double = s.last
            return point
        mapping = self._observers[kind]
        if observer == "summary":
            return _summary(metric, s, start, now, mapping.summary.percentiles)
        return _exponential(metric, s, start, now, mapping.histogram.max_size)


def _summary(metric: Metric, s: _Series, start: int, now: int, percentiles: list[float]):
    point = metric.summary.data_points.add(start_time_unix_nano=start, time_unix_nano=now)
    ordered = sorted(s.values)
    weights = sum(w for _, w in ordered)
    point.count = round(weights)
    point.sum = sum(v * w for v, w in ordered)
    for p in percentiles:
        # The smallest value with at least p% of the (sample-rate weighted) values at or below.
        target, seen, chosen = weights * p / 100, 0.0, ordered[-1][0]
        for value, weight in ordered:
            seen += weight
            if seen >= target:
                chosen = value
                break
        point.quantile_values.add(quantile=p / 100, value=chosen)
    return point


def _exponential(metric: Metric, s: _Series, start: int, now: int, max_size: int):
    """An exponential histogram at the finest scale whose buckets fit in `max_size`: bucket i
    of scale k holds values in (2^(i / 2^k), 2^((i + 1) / 2^k)]."""
    data = metric.exponential_histogram
    data.aggregation_temporality = _DELTA
    point = data.data_points.add(start_time_unix_nano=start, time_unix_nano=now)
    magnitudes = [abs(v) for v, _ in s.values if v != 0]
    scale = 20
    if magnitudes:
        low, high = min(magnitudes), max(magnitudes)
        while scale > -10 and _index(high, scale) - _index(low, scale) + 1 > max_size:
            scale -= 1
    point.scale = scale
    positive: dict[int, float] = {}
    negative: dict[int, float] = {}
    for value, weight in s.values:
        if value == 0:
            point.zero_count += round(weight)
            continue
        buckets = positive if value > 0 else negative
        index = _index(abs(value), scale)
        buckets[index] = buckets.get(index, 0.0) + weight
    point.count = round(sum(w for _, w in s.values))
    point.sum = sum(v * w for v, w in s.values)
    point.min = min(v for v, _ in s.values)
    point.max = max(v for v, _ in s.values)
    for buckets, out in ((positive, point.positive), (negative, point.negative)):
        if buckets:
            first = min(buckets)
            out.offset = first
            out.bucket_counts.extend(
                round(buckets.get(i, 0.0)) for i in range(first, max(buckets) + 1)
            )
    return point


def _index(value: float, scale: int) -> int:
    """The bucket of a positive value: values exactly at a power of the base belong below."""
    return math.ceil(math.log2(value) * 2**scale) - 1


factory = Factory(
    kind=Kind.RECEIVER,
    type="statsd",
    config=Config,
    create=StatsdReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="StatsD and DogStatsD lines over UDP, aggregated per interval into metrics.",
)
