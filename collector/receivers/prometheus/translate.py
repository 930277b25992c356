"""One scrape's exposition (Prometheus text or OpenMetrics, read by prometheus-client's parsers)
to an OTLP metrics batch, as the OTel Collector's prometheus receiver translates it.

- counter -> monotonic cumulative sum (named as exposed, `_total` included); gauge, unknown
  (untyped), info and stateset -> gauge; histogram -> cumulative histogram (per-bucket counts
  from the cumulative `le` buckets, bounds without +Inf); summary -> summary. Gauge histograms are
  not read.
- Labels become point attributes; `job` and `instance` go to the resource instead
  (service.name, service.instance.id, server.address, server.port, url.scheme), with the labels
  of `target_info`. `otel_scope_name` / `otel_scope_version` labels pick the scope, whose
  attributes come from `otel_scope_info`.
- Start times of cumulative series: the exposed `_created` time, else (with
  use_start_time_metric) the target's process start time, else the time the series was first
  scraped; after a reset (a value lower than the last one) the time of the scrape that saw it.
- A series that disappears, or every series of a target whose scrape failed, gets one point
  flagged "no recorded value" (Prometheus's staleness marker).
- Exemplars (OpenMetrics) keep their value, time and labels; `trace_id` and `span_id` labels
  become the exemplar's ids.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    Metric,
    ResourceMetrics,
)
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from collector.core.pdata import Metrics, set_attr
from collector.receivers.prometheus.relabel import Rule, relabel

SCOPE_NAME = "coldtail/prometheus"
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_STALE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_SCOPE_LABELS = ("otel_scope_name", "otel_scope_version")
_SUFFIXES = {
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "counter": ("_total", "_created"),
}
_GAUGE_TYPES = ("gauge", "unknown", "untyped", "info", "stateset")


class ScrapeError(Exception):
    """The scrape failed: the target counts as down."""


@dataclass
class Limits:
    sample_limit: int = 0
    label_limit: int = 0
    label_name_length_limit: int = 0
    label_value_length_limit: int = 0


@dataclass
class Target:
    """What a scrape's samples are joined with: the target's public labels (job and instance
    included) and how its labels and timestamps are treated."""

    labels: dict[str, str]
    scheme: str = "http"
    honor_labels: bool = False
    honor_timestamps: bool = True
    metric_rules: list[Rule] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    trim_suffixes: bool = False
    start_time_metric: re.Pattern[str] | None = None


@dataclass
class Stats:
    scraped: int = 0
    kept: int = 0
    added: int = 0


@dataclass
class _Series:
    """A cumulative series' start time and last value (for reset detection)."""

    start_ns: int
    last: float


@dataclass(eq=False)
class _Family:
    name: str
    type: str
    unit: str
    help: str
    # (scope key, attributes tuple) -> point under construction
    points: dict[tuple, dict[str, Any]] = field(default_factory=dict)


# A series' identity across scrapes: (metric name, kind, scope key, attributes).
SeriesKey = tuple[str, str, tuple[str, str], tuple[tuple[str, str], ...]]


class TargetState:
    """What one target's translation remembers between scrapes."""

    def __init__(self) -> None:
        self.cumulative: dict[SeriesKey, _Series] = {}
        self.last_series: dict[SeriesKey, tuple[str, str]] = {}  # key -> (unit, description)

    def translate(
        self, text: str, openmetrics: bool, target: Target, now_ns: int
    ) -> tuple[Metrics, Stats]:
        """(the batch, Stats) of one successful scrape's body; ScrapeError when it cannot be
        read or breaks a limit."""
        parse: Callable[[str], Iterable] = parse_openmetrics if openmetrics else parse_text
        try:
            families = list(parse(text))
        except Exception as e:  # the parsers raise ValueError and others on bad input
            raise ScrapeError(f"cannot parse the exposition: {e}") from None
        return _Translation(self, target, now_ns).run(families)

    def stale(self, target: Target, now_ns: int) -> Metrics:
        """A batch of staleness markers for every series of the last scrape (the target went
        down), which are then forgotten."""
        batch = Metrics()
        rm = batch.resource_metrics.add()
        _resource(rm, target, {})
        scopes: dict[tuple[str, str], Any] = {}
        _mark_stale(scopes, rm, self.last_series, now_ns)
        self.last_series.clear()
        self.cumulative.clear()
        return batch


class _Translation:
    def __init__(self, state: TargetState, target: Target, now_ns: int) -> None:
        self.state = state
        self.target = target
        self.now_ns = now_ns
        self.stats = Stats()
        self.resource_labels: dict[str, str] = {}
        self.scope_attrs: dict[tuple[str, str], dict[str, str]] = {}
        self.process_start_ns: int | None = None

    def run(self, families: list) -> tuple[Metrics, Stats]:
        kept: list[_Family] = []
        for family in families:
            out = self._family(family)
            if out is not None:
                kept.append(out)
        limit = self.target.limits.sample_limit
        if limit and self.stats.kept > limit:
            raise ScrapeError(f"sample_limit exceeded: {self.stats.kept} samples > {limit}")
        batch = Metrics()
        rm = batch.resource_metrics.add()
        _resource(rm, self.target, self.resource_labels)
        scopes: dict[tuple[str, str], Any] = {}
        seen: dict[SeriesKey, tuple[str, str]] = {}
        for family in kept:
            self._emit(family, rm, scopes, seen)
        previous = self.state.last_series
        self.stats.added = sum(1 for key in seen if key not in previous)
        gone = {k: v for k, v in previous.items() if k not in seen}
        _mark_stale(scopes, rm, gone, self.now_ns)
        for key in gone:
            self.state.cumulative.pop(key, None)
        self.state.last_series = seen
        return batch, self.stats

    # --- samples ---------------------------------------------------------------------------

    def _family(self, family) -> _Family | None:
        kind = family.type
        if kind == "gaugehistogram":
            self.stats.scraped += len(family.samples)
            return None
        out = _Family(family.name, kind, family.unit or "", family.documentation or "")
        for sample in family.samples:
            self.stats.scraped += 1
            labels = self._labels(sample.name, sample.labels)
            if labels is None:
                continue
            name = labels.pop("__name__")
            self._check_limits(labels)
            self.stats.kept += 1
            if name == "target_info":
                self.resource_labels.update(
                    {k: v for k, v in labels.items() if k not in ("job", "instance")}
                )
                continue
            scope = (labels.pop(_SCOPE_LABELS[0], ""), labels.pop(_SCOPE_LABELS[1], ""))
            if family.name == "otel_scope_info" or name == "otel_scope_info":
                self.scope_attrs[scope] = {
                    k: v for k, v in labels.items() if k not in ("job", "instance")
                }
                continue
            labels.pop("job", None)
            labels.pop("instance", None)
            regex = self.target.start_time_metric
            if regex is not None and regex.match(name):
                self.process_start_ns = int(sample.value * 1e9)
            self._add(out, name, labels, scope, sample)
        return out if out.points else None

    def _labels(self, name: str, scraped: dict[str, str]) -> dict[str, str] | None:
        """The sample's labels joined with the target's, after metric relabeling; None when
        dropped."""
        target = self.target
        if target.honor_labels:
            labels = {**target.labels, **scraped}
        else:
            labels = dict(scraped)
            for key, value in target.labels.items():
                if key in labels:
                    exported = "exported_" + key
                    while exported in labels:
                        exported = "exported_" + exported
                    labels[exported] = labels.pop(key)
                labels[key] = value
        labels["__name__"] = name
        if target.metric_rules:
            return relabel(labels, target.metric_rules) if "__name__" in labels else None
        return labels

    def _check_limits(self, labels: dict[str, str]) -> None:
        limits = self.target.limits
        if limits.label_limit and len(labels) > limits.label_limit:
            raise ScrapeError(f"label_limit exceeded: a sample has {len(labels)} labels")
        if limits.label_name_length_limit or limits.label_value_length_limit:
            for key, value in labels.items():
                if limits.label_name_length_limit and len(key) > limits.label_name_length_limit:
                    raise ScrapeError(f"label_name_length_limit exceeded by {key!r}")
                if limits.label_value_length_limit and len(value) > limits.label_value_length_limit:
                    raise ScrapeError(f"label_value_length_limit exceeded by label {key!r}")

    def _add(self, out: _Family, name: str, labels: dict, scope: tuple, sample) -> None:
        kind = out.type
        time_ns = self.now_ns
        if self.target.honor_timestamps and sample.timestamp is not None:
            time_ns = _ns(sample.timestamp)
        if kind in ("histogram", "summary"):
            bound = labels.pop("le" if kind == "histogram" else "quantile", None)
            key = (scope, tuple(sorted(labels.items())))
            point = out.points.setdefault(key, {"time": time_ns, "buckets": [], "quantiles": []})
            suffix = name[len(out.name) :]
            if suffix == "_bucket" and bound is not None:
                point["buckets"].append((_float(bound), sample.value, sample.exemplar))
            elif suffix == "" and bound is not None:
                point["quantiles"].append((_float(bound), sample.value))
            elif suffix in ("_count", "_sum", "_created"):
                point[suffix] = sample.value
            return
        if kind == "counter" and name.endswith("_created"):
            key = (scope, tuple(sorted(labels.items())))
            out.points.setdefault(key, {"time": time_ns})["_created"] = sample.value
            return
        if kind not in _GAUGE_TYPES and kind != "counter":
            kind = "gauge"
        # A relabeled or suffixed name (foo_total) keys the point with the name it is sent under.
        key = (scope, tuple(sorted(labels.items())))
        point = out.points.setdefault(key, {"time": time_ns})
        point["name"] = name
        point["value"] = sample.value
        point["time"] = time_ns
        if sample.exemplar is not None:
            point["exemplar"] = sample.exemplar

    # --- OTLP ------------------------------------------------------------------------------

    def _emit(self, family: _Family, rm: ResourceMetrics, scopes: dict, seen: dict) -> None:
        kind = family.type
        otlp_kind = (
            "sum" if kind == "counter" else kind if kind in ("histogram", "summary") else "gauge"
        )
        metrics: dict[tuple[tuple[str, str], str], Metric] = {}
        for (scope, attrs), point in family.points.items():
            if otlp_kind in ("histogram", "summary") and "_count" not in point:
                continue  # a histogram or summary without its count is not a point
            if otlp_kind == "histogram" and not any(math.isinf(b) for b, _, _ in point["buckets"]):
                continue  # no +Inf bucket: not a valid histogram
            if "value" not in point and otlp_kind in ("sum", "gauge"):
                continue  # only a _created line
            name = point.get("name", family.name)
            if self.target.trim_suffixes:
                name = _trim(name, kind, family.unit)
            metric = metrics.get((scope, name))
            if metric is None:
                metric = _scope(scopes, rm, scope, self.scope_attrs).metrics.add()
                metric.name, metric.unit, metric.description = name, family.unit, family.help
                if otlp_kind == "sum":
                    metric.sum.aggregation_temporality = _CUMULATIVE
                    metric.sum.is_monotonic = True
                elif otlp_kind == "histogram":
                    metric.histogram.aggregation_temporality = _CUMULATIVE
                metrics[(scope, name)] = metric
            key: SeriesKey = (name, otlp_kind, scope, attrs)
            seen[key] = (family.unit, family.help)
            self._point(metric, otlp_kind, key, attrs, point)

    def _start(self, key: SeriesKey, point: dict, value: float) -> int:
        created = point.get("_created")
        if created is not None:
            return int(created * 1e9)
        if self.process_start_ns is not None:
            return self.process_start_ns
        series = self.state.cumulative.get(key)
        if series is None or value < series.last:
            series = self.state.cumulative[key] = _Series(point["time"], value)
        series.last = value
        return series.start_ns

    def _point(self, metric: Metric, kind: str, key: SeriesKey, attrs, point: dict) -> None:
        time_ns = point["time"]
        p: Any
        if kind == "gauge":
            p = metric.gauge.data_points.add()
            p.as_double = point["value"]
        elif kind == "sum":
            p = metric.sum.data_points.add()
            p.as_double = point["value"]
            p.start_time_unix_nano = self._start(key, point, point["value"])
        elif kind == "summary":
            p = metric.summary.data_points.add()
            p.count = int(point["_count"])
            p.sum = point.get("_sum", 0.0)
            for quantile, value in sorted(point["quantiles"]):
                q = p.quantile_values.add()
                q.quantile, q.value = quantile, value
            p.start_time_unix_nano = self._start(key, point, point["_count"])
        else:
            p = metric.histogram.data_points.add()
            p.count = int(point["_count"])
            if "_sum" in point:
                p.sum = point["_sum"]
            previous = 0.0
            for bound, cumulative, exemplar in sorted(point["buckets"], key=lambda b: b[0]):
                p.bucket_counts.append(int(max(0.0, cumulative - previous)))
                previous = cumulative
                if not math.isinf(bound):
                    p.explicit_bounds.append(bound)
                if exemplar is not None:
                    _exemplar(p.exemplars.add(), exemplar, time_ns)
            p.start_time_unix_nano = self._start(key, point, point["_count"])
        p.time_unix_nano = time_ns
        for k, v in attrs:
            set_attr(p.attributes, k, v)
        if kind in ("gauge", "sum") and "exemplar" in point:
            _exemplar(p.exemplars.add(), point["exemplar"], time_ns)


def add_gauges(
    batch: Metrics, values: dict[str, float], attrs: dict[str, str], now_ns: int
) -> None:
    """Add the scrape's own gauges (up, scrape_duration_seconds, ...) to the batch's default
    scope."""
    rm = batch.resource_metrics[0]
    sm = next((s for s in rm.scope_metrics if s.scope.name == SCOPE_NAME), None)
    if sm is None:
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE_NAME
    for name, value in values.items():
        metric = sm.metrics.add()
        metric.name = name
        p = metric.gauge.data_points.add()
        p.time_unix_nano, p.as_double = now_ns, value
        for k, v in attrs.items():
            set_attr(p.attributes, k, v)


def _resource(rm: ResourceMetrics, target: Target, extra: dict[str, str]) -> None:
    labels = target.labels
    attrs = rm.resource.attributes
    job, instance = labels.get("job", ""), labels.get("instance", "")
    set_attr(attrs, "service.name", job)
    set_attr(attrs, "service.instance.id", instance)
    host, _, port = instance.rpartition(":")
    if not host or not port.isdigit():
        host, port = instance, ""
    set_attr(attrs, "server.address", host.strip("[]"))
    if port:
        set_attr(attrs, "server.port", int(port))
    set_attr(attrs, "url.scheme", target.scheme)
    for key, value in extra.items():
        set_attr(attrs, key, value)


def _scope(scopes: dict, rm: ResourceMetrics, scope: tuple[str, str], attrs: dict) -> Any:
    sm = scopes.get(scope)
    if sm is None:
        sm = scopes[scope] = rm.scope_metrics.add()
        sm.scope.name = scope[0] or SCOPE_NAME
        sm.scope.version = scope[1]
        for k, v in attrs.get(scope, {}).items():
            set_attr(sm.scope.attributes, k, v)
    return sm


def _mark_stale(scopes: dict, rm: ResourceMetrics, series: dict, now_ns: int) -> None:
    metrics: dict[tuple, Metric] = {}
    for (name, kind, scope, attrs), (unit, description) in series.items():
        metric = metrics.get((scope, name, kind))
        if metric is None:
            metric = _scope(scopes, rm, scope, {}).metrics.add()
            metric.name, metric.unit, metric.description = name, unit, description
            metrics[(scope, name, kind)] = metric
            if kind == "sum":
                metric.sum.aggregation_temporality = _CUMULATIVE
                metric.sum.is_monotonic = True
            elif kind == "histogram":
                metric.histogram.aggregation_temporality = _CUMULATIVE
        p = getattr(metric, kind).data_points.add()
        p.time_unix_nano = now_ns
        p.flags = _STALE
        for k, v in attrs:
            set_attr(p.attributes, k, v)


def _exemplar(out, exemplar, default_ns: int) -> None:
    out.as_double = exemplar.value
    out.time_unix_nano = _ns(exemplar.timestamp) if exemplar.timestamp is not None else default_ns
    for key, value in exemplar.labels.items():
        if key == "trace_id" and _hex_id(value, 16):
            out.trace_id = bytes.fromhex(value)
        elif key == "span_id" and _hex_id(value, 8):
            out.span_id = bytes.fromhex(value)
        else:
            set_attr(out.filtered_attributes, key, value)


def _hex_id(text: str, size: int) -> bool:
    return len(text) == 2 * size and all(c in "0123456789abcdefABCDEF" for c in text)


def _ns(timestamp) -> int:
    """A parser's timestamp (float seconds, or OpenMetrics' exact sec/nsec) in nanoseconds."""
    if hasattr(timestamp, "sec"):
        return timestamp.sec * 1_000_000_000 + timestamp.nsec
    return round(float(timestamp) * 1000) * 1_000_000  # text format: milliseconds


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _trim(name: str, kind: str, unit: str) -> str:
    if kind == "counter":
        name = name.removesuffix("_total")
    if unit and name.endswith("_" + unit):
        name = name[: -len(unit) - 1]
    return name
