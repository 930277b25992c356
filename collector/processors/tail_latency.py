"""tail_latency processor: tags spans in the latency tail of their key and exposes per-key
latency percentiles as metrics.

    tail_latency:
      window: 5m
      sub_windows: 5
      percentiles: [95, 99]
      dimensions: [service.name, span.name, span.kind]

Spans are grouped by key (the values of `dimensions`). Each key keeps a sketch of its span
durations over a sliding window (relative accuracy 1%, see
collector.core.sketch). Once a key holds `min_samples` durations, a span at or
above the key's p95 (p99) gets
`coldtail.latency.tail` = "p95" ("p99": the highest percentile crossed) and
`coldtail.latency.threshold_ms`, the duration of that percentile. Thresholds are within 1% of
the exact percentiles, so a span within 1% of one may fall either side.

A span's own duration joins the sketch before the span is judged: the span is part of the
population it is compared with, as for an exact percentile of the window.

Ties: when a percentile falls in the same sketch bucket as the median (latencies that barely
vary, such as a health check), "at or above the p99" would tag nearly every span, so there a
span must be slower than the whole bucket of the percentile to be in its tail.

Per-span cost stays constant: thresholds are recomputed only when the window moves or has grown
by 1/64 since the last computation, which shifts a stationary percentile by far less than the
sketch's own error. The window is `sub_windows` rotating sub-windows of window / sub_windows
each, so it covers between (sub_windows - 1) / sub_windows of `window` and all of it.

Dimensions: `span.name` is the span's `http.route` attribute when it has one, else its name;
`span.kind` is server, client, ...; `coldtail.cold_start` is true, false or unknown; any other
name is a span attribute, else a resource attribute, else empty.

Own metrics (labels `processor`, `pipeline` and the dimensions, dots turned into underscores):

    coldtail_tail_latency_percentile_ms{percentile="p50"|"p95"|...}   computed at scrape time,
                                                    for keys holding min_samples durations
    coldtail_tail_latency_tail_spans_total{tail="p95"|"p99", cold_start="true"|"false"|"unknown"}
    coldtail_tail_latency_keys, coldtail_tail_latency_evicted_keys_total  (processor, pipeline)

Cold start comes from `coldtail.cold_start`, else the semantic convention `faas.coldstart`.
"""

from __future__ import annotations

import math
import re
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Annotated, Literal

from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import Field, field_validator

from collector.core.attributes import (
    COLD_START,
    FAAS_COLDSTART,
    LATENCY_TAIL,
    LATENCY_THRESHOLD_MS,
)
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import any_value_to_python, entry_spans, set_attr
from collector.core.signals import Signal
from collector.core.sketch import DEFAULT_RELATIVE_ACCURACY, WindowedSketch
from collector.processors.internal.base import Processor
from collector.processors.internal.by_resource import ByResource
from collector.processors.internal.entries import marked_spans

SPAN_NAME = "span.name"
SPAN_KIND = "span.kind"
HTTP_ROUTE = "http.route"

COLD_START_LABELS = ("true", "false", "unknown")
_RESERVED_LABELS = frozenset({"processor", "pipeline", "percentile", "tail", "cold_start"})
_KIND_NAMES = {v: name.removeprefix("SPAN_KIND_").lower() for name, v in Span.SpanKind.items()}
_NON_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
# Thresholds are recomputed once the window has grown by this fraction (1/64) since the last time.
_REFRESH_SHIFT = 6
_NS_PER_MS = 1e6

Percentile = Annotated[float, Field(gt=0, lt=100)]


def label_name(dimension: str) -> str:
    """The Prometheus label name of a dimension: `service.name` -> `service_name`."""
    name = _NON_LABEL_CHARS.sub("_", dimension)
    return "_" + name if name[:1].isdigit() else name


def percentile_label(percentile: float) -> str:
    """95 -> "p95", 99.9 -> "p99.9"."""
    return f"p{percentile:g}"


class Config(ComponentConfig):
    window: Duration = Field(300.0, gt=0)
    """Length of the sliding window percentiles are computed over, like 5m. Default 5m; must be
    greater than 0."""
    sub_windows: int = Field(5, ge=1, le=60)
    """Number of sub-windows the window rotates through; the oldest is dropped as a whole when a
    new one starts, so the window covers between (sub_windows - 1) / sub_windows of `window` and
    all of it. Each holds its own counts per key. Default 5; 1 to 60 (1: data is dropped all at
    once every `window`)."""
    min_samples: int = Field(50, ge=0)
    """Spans a key must hold in the window before its spans are tagged or its percentiles
    exported. Default 50; 0 and 1 both mean from the first span."""
    percentiles: list[Percentile] = Field(default_factory=lambda: [95.0, 99.0])
    """Percentiles (each greater than 0 and less than 100, like 99.9) at or above which a span is
    tagged, with the highest one crossed. Default [95, 99]. Empty: no span is tagged and only the
    p50 metric is kept."""
    dimensions: list[str] = Field(default_factory=lambda: ["service.name", SPAN_NAME, SPAN_KIND])
    """What keys spans apart: `span.name` (the span's http.route attribute when set, else its
    name), `span.kind`, `coldtail.cold_start` (true, false or unknown), or any attribute name,
    looked up on the span, then its resource (empty when absent). Default [service.name,
    span.name, span.kind]. Empty: all spans share one key."""
    spans: Literal["entry", "all"] = "entry"
    """Which spans are measured and tagged: `entry` (SERVER or CONSUMER kind, or without a parent
    in the process) or `all`. Default entry."""
    max_keys: int = Field(10000, ge=1)
    """Most keys tracked; beyond it the least recently seen key is dropped (counted in
    coldtail_tail_latency_evicted_keys_total). Default 10000; at least 1."""

    @field_validator("percentiles")
    @classmethod
    def _sorted_percentiles(cls, value: list[float]) -> list[float]:
        return sorted(set(value))

    @field_validator("dimensions")
    @classmethod
    def _distinct_labels(cls, value: list[str]) -> list[str]:
        seen: dict[str, str] = {}
        for dimension in value:
            if not dimension:
                raise ValueError("a dimension must not be empty")
            label = label_name(dimension)
            if label in _RESERVED_LABELS or label.startswith("__"):
                raise ValueError(
                    f"dimension {dimension!r} becomes the metric label {label!r}, which is "
                    f"reserved (reserved: {', '.join(sorted(_RESERVED_LABELS))}, and names "
                    "starting with __)"
                )
            if label in seen:
                raise ValueError(
                    f"dimensions {seen[label]!r} and {dimension!r} both become the metric "
                    f"label {label!r}"
                )
            seen[label] = dimension
        return value


def _text(value) -> str:
    """An attribute value (AnyValue) as a metric label value."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return "" if kind is None else str(any_value_to_python(value))


def _cold_start(found: dict) -> int:
    """Index into COLD_START_LABELS from the span's cold start attributes in `found`."""
    value = found.get(COLD_START)
    if value is None:
        value = found.get(FAAS_COLDSTART)
    if value is None:
        return 2
    text = _text(value).lower()
    return 0 if text == "true" else 1 if text == "false" else 2


class _Series:
    """What one key holds: its window of durations (ns), the thresholds spans are judged by and
    its tail span counts."""

    __slots__ = (
        "cutoffs",
        "labels",
        "refresh_at",
        "refresh_epoch",
        "sketch",
        "tail_spans",
        "thresholds",
    )

    def __init__(self, sketch: WindowedSketch, labels: dict, tails: int) -> None:
        self.sketch = sketch
        self.labels = labels
        self.thresholds: list[float] = []  # ns, one per configured percentile
        self.cutoffs: list[float] = []  # ns: a span at or above cutoff i is in tail i
        self.refresh_at = 0  # window count at which thresholds are recomputed
        self.refresh_epoch = -1
        # [percentile index * 3 + cold start index]
        self.tail_spans = [0] * (tails * len(COLD_START_LABELS))


class TailLatency(Processor):
    attributes_only = True

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        next: Consumer,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(settings, config, signal, next)
        self.marked_spans_only = config.spans == "entry"
        # Seconds; replaced in tests to drive the window.
        self.clock = clock
        self._sub_window = config.window / config.sub_windows
        self._quantiles = [p / 100 for p in config.percentiles]
        self._tail_labels = [percentile_label(p) for p in config.percentiles]
        self._gauge_percentiles = sorted({50.0, *config.percentiles})
        self._dimensions = list(config.dimensions)
        self._label_names = [label_name(d) for d in config.dimensions]
        pseudo = {SPAN_NAME, SPAN_KIND, COLD_START}
        self._attr_dimensions = frozenset(d for d in self._dimensions if d not in pseudo)
        self._wanted = self._attr_dimensions | {HTTP_ROUTE, COLD_START, FAAS_COLDSTART}
        self._resource = ByResource(self._dimensions_of)
        self._base_labels = {"processor": str(settings.id), "pipeline": settings.pipeline}
        self._min_count = max(1, config.min_samples)
        self._series: OrderedDict[tuple[str, ...], _Series] = OrderedDict()
        self.evicted = 0
        self._metrics = settings.telemetry.metric_set(_MetricsCollector)
        self._metrics.processors.add(self)

    async def shutdown(self) -> None:
        self._metrics.processors.discard(self)
        self._series.clear()

    def _epoch(self) -> int:
        return int(self.clock() // self._sub_window)

    def process(self, batch):
        epoch = self._epoch()
        if self.config.spans == "entry":
            spans_by_resource = [(rs, entry_spans(spans)) for rs, spans in marked_spans(batch)]
        else:
            spans_by_resource = [
                (rs, [s for ss in rs.scope_spans for s in ss.spans]) for rs in batch.resource_spans
            ]
        for rs, spans in spans_by_resource:
            if not spans:
                continue
            resource = self._resource(rs.resource)
            for span in spans:
                self._observe(span, resource, epoch)
        return batch

    def _dimensions_of(self, resource) -> dict[str, str]:
        """The resource attributes among the dimensions, as label values."""
        return {
            kv.key: _text(kv.value) for kv in resource.attributes if kv.key in self._attr_dimensions
        }

    def _observe(self, span: Span, resource: dict[str, str], epoch: int) -> None:
        wanted = self._wanted
        found = {kv.key: kv.value for kv in span.attributes if kv.key in wanted}
        series = self._lookup(self._key(span, resource, found), epoch)
        duration = max(0, span.end_time_unix_nano - span.start_time_unix_nano)
        sketch = series.sketch
        sketch.add(duration, epoch)
        count = sketch.count
        if count < self._min_count or not self._quantiles:
            return
        if count >= series.refresh_at or series.refresh_epoch != sketch.epoch:
            median, *series.thresholds = sketch.quantiles([0.5, *self._quantiles])
            series.cutoffs = [self._cutoff(t, median) for t in series.thresholds]
            series.refresh_at = count + (count >> _REFRESH_SHIFT) + 1
            series.refresh_epoch = sketch.epoch
        thresholds, cutoffs = series.thresholds, series.cutoffs
        for i in range(len(thresholds) - 1, -1, -1):
            if duration >= cutoffs[i]:
                set_attr(span.attributes, LATENCY_TAIL, self._tail_labels[i])
                set_attr(span.attributes, LATENCY_THRESHOLD_MS, thresholds[i] / _NS_PER_MS)
                series.tail_spans[i * len(COLD_START_LABELS) + _cold_start(found)] += 1
                return

    @staticmethod
    def _cutoff(threshold: float, median: float) -> float:
        """`threshold`, or just past the top of its bucket when the median shares that bucket
        (see Ties in the module docstring)."""
        if threshold > median:
            return threshold
        # Bucket tops are representative / (1 - a); a value at the top still belongs inside.
        return math.nextafter(threshold / (1 - DEFAULT_RELATIVE_ACCURACY), math.inf)

    def _key(self, span: Span, resource: dict[str, str], found: dict) -> tuple[str, ...]:
        parts = []
        for dimension in self._dimensions:
            if dimension == SPAN_NAME:
                route = found.get(HTTP_ROUTE)
                parts.append((_text(route) if route is not None else "") or span.name)
            elif dimension == SPAN_KIND:
                parts.append(_KIND_NAMES.get(span.kind, "unspecified"))
            elif dimension == COLD_START:
                parts.append(COLD_START_LABELS[_cold_start(found)])
            else:
                value = found.get(dimension)
                parts.append(_text(value) if value is not None else resource.get(dimension, ""))
        return tuple(parts)

    def _lookup(self, key: tuple[str, ...], epoch: int) -> _Series:
        series = self._series.get(key)
        if series is not None:
            self._series.move_to_end(key)
            return series
        if len(self._series) >= self.config.max_keys:
            self._series.popitem(last=False)
            self.evicted += 1
        labels = {**self._base_labels, **dict(zip(self._label_names, key, strict=True))}
        series = _Series(
            WindowedSketch(self.config.sub_windows, epoch), labels, len(self._quantiles)
        )
        self._series[key] = series
        return series

    def export_metrics(self, families: _Families) -> None:
        """Add this processor's samples to `families`; percentiles are computed now."""
        epoch = self._epoch()
        qs = [p / 100 for p in self._gauge_percentiles]
        names = [percentile_label(p) for p in self._gauge_percentiles]
        families.keys.add_sample(families.keys.name, self._base_labels, len(self._series))
        families.evicted.add_sample(
            families.evicted.name + "_total", self._base_labels, self.evicted
        )
        for series in self._series.values():
            series.sketch.advance(epoch)
            if series.sketch.count >= self._min_count:
                for name, value in zip(names, series.sketch.quantiles(qs), strict=True):
                    families.percentile.add_sample(
                        families.percentile.name,
                        {**series.labels, "percentile": name},
                        value / _NS_PER_MS,
                    )
            if any(series.tail_spans):
                for i, count in enumerate(series.tail_spans):
                    tail, cold = divmod(i, len(COLD_START_LABELS))
                    labels = {
                        **series.labels,
                        "tail": self._tail_labels[tail],
                        "cold_start": COLD_START_LABELS[cold],
                    }
                    families.tail_spans.add_sample(
                        families.tail_spans.name + "_total", labels, count
                    )


class _Families:
    """The metric families of one scrape."""

    def __init__(self) -> None:
        self.percentile = GaugeMetricFamily(
            "coldtail_tail_latency_percentile_ms",
            "Span duration percentile of a key over the tail_latency window [ms].",
        )
        self.tail_spans = CounterMetricFamily(
            "coldtail_tail_latency_tail_spans",
            "Spans tagged as latency tail, by highest percentile crossed and cold start.",
        )
        self.keys = GaugeMetricFamily(
            "coldtail_tail_latency_keys", "Keys tracked by the tail_latency processor."
        )
        self.evicted = CounterMetricFamily(
            "coldtail_tail_latency_evicted_keys",
            "Keys dropped by the tail_latency processor to stay within max_keys.",
        )

    def __iter__(self) -> Iterator[Metric]:
        return iter((self.percentile, self.tail_spans, self.keys, self.evicted))


class _MetricsCollector:
    """The prometheus_client collector of all tail_latency processors sharing a registry. A
    scrape reads and advances the processors' windows, so it must run on the event loop thread
    that calls `process` (as the collector's own metrics server does)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.processors: weakref.WeakSet[TailLatency] = weakref.WeakSet()
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        return iter(_Families())

    def collect(self) -> Iterator[Metric]:
        families = _Families()
        for processor in list(self.processors):
            processor.export_metrics(families)
        return iter(families)


factory = Factory(
    kind=Kind.PROCESSOR,
    type="tail_latency",
    config=Config,
    create=TailLatency,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Tags spans at or above per-key latency percentiles (p95, p99) over a sliding "
    "window and exports the percentiles as metrics.",
)
