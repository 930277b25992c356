"""OTLP metrics -> Prometheus series, shared by the `prometheus` and `prometheusremotewrite`
exporters.

Follows the OTel "Prometheus and OpenMetrics compatibility" spec as the Collector implements it:

- metric names: characters outside [a-zA-Z0-9:] split the name into words joined by `_`; the UCUM
  unit becomes a suffix (`By` -> `_bytes`, `ms` -> `_milliseconds`, `By/s` -> `_bytes_per_second`,
  `{requests}` -> none); gauges with unit `1` get `_ratio`, monotonic sums `_total`; a leading
  digit gets a `_` prefix. With suffixes off, invalid characters only become `_`.
- label names: invalid characters -> `_`; a leading digit gets `key_`, a single leading `_` gets
  `key`; attributes that collide after sanitising are joined with `;` in key order.
- the resource gives `job` (service.namespace/service.name) and `instance`
  (service.instance.id) on every series, and one `target_info` series carrying its other
  attributes. The instrumentation scope gives `otel_scope_name` / `otel_scope_version`.
"""

from __future__ import annotations

import base64
import enum
import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    DataPointFlags,
    Metric,
)

from collector.core.pdata import Metrics, any_value_to_python, get_attr

# Bit pattern Prometheus reads as "this series ended" (a staleness marker), not as a value.
STALE_NAN = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]

TARGET_INFO = "target_info"
SCOPE_NAME_LABEL = "otel_scope_name"
SCOPE_VERSION_LABEL = "otel_scope_version"
_SERVICE_NAME = "service.name"
_SERVICE_NAMESPACE = "service.namespace"
_SERVICE_INSTANCE_ID = "service.instance.id"
_IDENTIFYING = frozenset({_SERVICE_NAME, _SERVICE_NAMESPACE, _SERVICE_INSTANCE_ID})

_UNIT_WORDS = {
    # time
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    # SI
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    # misc
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
    "1": "",
}
_PER_UNIT_WORDS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

_NAME_WORD_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class MetricType(enum.StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"


# --- names ----------------------------------------------------------------------------------


def _unit_words(unit: str) -> tuple[str, str]:
    """(main unit word, per-unit word) for a UCUM unit; annotations in {} carry no unit."""
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    if main.startswith("{"):
        main = ""
    if per.startswith("{"):
        per = ""
    main_word = _NON_ALNUM.sub("", _UNIT_WORDS.get(main, main))
    per_word = _NON_ALNUM.sub("", _PER_UNIT_WORDS.get(per, per))
    return main_word, per_word


def metric_name(
    name: str,
    unit: str,
    type_: MetricType,
    *,
    namespace: str = "",
    add_suffixes: bool = True,
) -> str:
    """The Prometheus name of an OTLP metric (for histograms and summaries, the family name
    that `_bucket`, `_sum` and `_count` extend)."""
    if add_suffixes:
        words = [w for w in _NAME_WORD_SPLIT.split(name) if w]
        main, per = _unit_words(unit)
        if main and main not in words:
            words.append(main)
        if per and "per" not in words and per not in words:
            words += ["per", per]
        if type_ is MetricType.COUNTER:
            words = [w for w in words if w != "total"] + ["total"]
        if type_ is MetricType.GAUGE and unit == "1" and "ratio" not in words:
            words.append("ratio")
        result = "_".join(words)
    else:
        result = _INVALID_NAME_CHARS.sub("_", name)
    if namespace:
        result = f"{_INVALID_NAME_CHARS.sub('_', namespace)}_{result}"
    if not result or result[0].isdigit():
        result = "_" + result
    return result


def label_name(key: str) -> str:
    """A Prometheus label name for an attribute key."""
    name = _INVALID_LABEL_CHARS.sub("_", key)
    if not name:
        return "key_"
    if name[0].isdigit():
        return "key_" + name
    if name.startswith("_") and not name.startswith("__"):
        return "key" + name
    return name


def check_label_names(labels: dict[str, str]) -> dict[str, str]:
    """Config validator of user-given labels: they must be valid and not reserved."""
    for name in labels:
        if not LABEL_NAME_RE.match(name) or name.startswith("__"):
            raise ValueError(
                f"invalid label name {name!r}: use letters, digits and '_', not starting with "
                "a digit or '__'"
            )
    return labels


def format_float(value: float) -> str:
    """A float as Prometheus writes it: +Inf, -Inf, NaN, integers without a fraction."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def label_value(value) -> str:
    """An attribute value (AnyValue) as a label value: JSON for arrays and maps."""
    v = any_value_to_python(value)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, list | dict):
        return json.dumps(v, separators=(",", ":"), default=str)
    return "" if v is None else str(v)


def attribute_labels(*attribute_lists: Iterable) -> dict[str, str]:
    """Sanitised labels of repeated KeyValue fields. Keys that collide after sanitising keep
    all their values, joined with `;` in the order of the original keys. Empty values are left
    out: Prometheus treats them as an absent label."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for attrs in attribute_lists:
        for kv in attrs:
            value = label_value(kv.value)
            if value:
                by_label.setdefault(label_name(kv.key), []).append((kv.key, value))
    return {label: ";".join(v for _, v in sorted(values)) for label, values in by_label.items()}


def job_instance(resource_attributes) -> dict[str, str]:
    """`job` and `instance` labels from the service.* resource attributes (absent ones left
    out)."""
    labels = {}
    name = get_attr(resource_attributes, _SERVICE_NAME)
    if name:
        namespace = get_attr(resource_attributes, _SERVICE_NAMESPACE)
        labels["job"] = f"{namespace}/{name}" if namespace else str(name)
    instance = get_attr(resource_attributes, _SERVICE_INSTANCE_ID)
    if instance:
        labels["instance"] = str(instance)
    return labels


def target_info_labels(resource_attributes) -> dict[str, str] | None:
    """Labels of the resource's `target_info` series, or None when the resource has nothing
    beyond the attributes `job` and `instance` already carry."""
    others = [kv for kv in resource_attributes if kv.key not in _IDENTIFYING]
    if not others:
        return None
    return {**attribute_labels(others), **job_instance(resource_attributes)}


# --- points ---------------------------------------------------------------------------------


Labels = tuple[tuple[str, str], ...]  # sorted by name, without __name__


@dataclass(slots=True)
class Point:
    """One OTLP data point as a Prometheus series: `name` is the family name."""

    name: str
    type: MetricType
    help: str
    labels: Labels
    time_ns: int
    start_ns: int = 0
    delta: bool = False
    stale: bool = False
    value: float = 0.0  # counter, gauge
    bounds: tuple[float, ...] = ()  # histogram: upper bounds
    bucket_counts: tuple[int, ...] = ()  # histogram: per bucket, not cumulative
    sum: float | None = None  # histogram, summary
    count: int = 0  # histogram, summary
    quantiles: tuple[tuple[float, float], ...] = ()  # summary: (quantile, value)

    @property
    def key(self) -> tuple[str, Labels]:
        return self.name, self.labels


@dataclass(frozen=True)
class Options:
    namespace: str = ""
    add_metric_suffixes: bool = True
    resource_to_telemetry: bool = False
    # const_labels / external_labels: added to every series that does not carry them already.
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    target_info: bool = True


@dataclass
class Translation:
    points: list[Point] = field(default_factory=list)
    # (reason, metric name) -> data points left out
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def skipped_count(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, metric_name: str, points: int) -> None:
        key = (reason, metric_name)
        self.skipped[key] = self.skipped.get(key, 0) + points


class SkipLog:
    """Logs a warning for each (reason, metric) left out, once, and for at most `limit`
    distinct ones, so a stream of odd metrics cannot flood the log."""

    def __init__(self, log, limit: int = 1000) -> None:
        self._log = log
        self._limit = limit
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, skipped: Mapping[tuple[str, str], int]) -> None:
        for key, points in skipped.items():
            if key in self._seen or len(self._seen) >= self._limit:
                continue
            self._seen.add(key)
            reason, metric = key
            self._log.warning(f"metric {metric!r}: left out {points} data point(s): {reason}")


_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_NO_RECORDED_VALUE = DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK


def _number(dp) -> float:
    return float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double


@dataclass
class _Context:
    """Labels a metric's points inherit: `fallback` ones yield to point attributes,
    `fixed` ones (job, instance, scope) win over them."""

    fallback: dict[str, str]
    fixed: dict[str, str]
    options: Options

    def labels(self, dp) -> Labels:
        labels = {**self.fallback, **attribute_labels(dp.attributes), **self.fixed}
        for name, value in self.options.extra_labels.items():
            labels.setdefault(name, value)
        return tuple(sorted(labels.items()))


def translate(batch: Metrics, options: Options) -> Translation:
    """Every data point of `batch` as a Point. Exponential histograms and delta non-monotonic
    sums have no Prometheus form and are counted in `skipped`."""
    out = Translation()
    for rm in batch.resource_metrics:
        resource = rm.resource.attributes
        fallback = attribute_labels(resource) if options.resource_to_telemetry else {}
        latest_ns = 0
        for sm in rm.scope_metrics:
            fixed = job_instance(resource)
            if sm.scope.name:
                fixed[SCOPE_NAME_LABEL] = sm.scope.name
            if sm.scope.version:
                fixed[SCOPE_VERSION_LABEL] = sm.scope.version
            context = _Context(fallback, fixed, options)
            for metric in sm.metrics:
                for point in _metric_points(metric, context, out):
                    latest_ns = max(latest_ns, point.time_ns)
                    out.points.append(point)
        info = target_info_labels(resource) if options.target_info else None
        if info is not None and latest_ns:
            info = {**options.extra_labels, **info}
            out.points.append(
                Point(
                    name=TARGET_INFO,
                    type=MetricType.GAUGE,
                    help="Target metadata",
                    labels=tuple(sorted(info.items())),
                    time_ns=latest_ns,
                    value=1.0,
                )
            )
    return out


def _metric_points(metric: Metric, context: _Context, out: Translation) -> Iterator[Point]:
    kind = metric.WhichOneof("data")
    # Gauge, Sum, Histogram or Summary: the branches below read each one's own point fields.
    data: Any
    if kind == "gauge":
        type_, data, delta = MetricType.GAUGE, metric.gauge, False
    elif kind == "sum":
        data = metric.sum
        delta = data.aggregation_temporality == _DELTA
        type_ = MetricType.COUNTER if data.is_monotonic else MetricType.GAUGE
        if delta and not data.is_monotonic:
            points = len(data.data_points)
            out.skip("a delta non-monotonic sum has no Prometheus form", metric.name, points)
            return
    elif kind == "histogram":
        data = metric.histogram
        type_, delta = MetricType.HISTOGRAM, data.aggregation_temporality == _DELTA
    elif kind == "summary":
        type_, data, delta = MetricType.SUMMARY, metric.summary, False
    else:
        if kind is not None:
            points = len(getattr(metric, kind).data_points)
            out.skip(f"{kind} is not supported", metric.name, points)
        return
    options = context.options
    name = metric_name(
        metric.name,
        metric.unit,
        type_,
        namespace=options.namespace,
        add_suffixes=options.add_metric_suffixes,
    )
    for dp in data.data_points:
        point = Point(
            name=name,
            type=type_,
            help=metric.description,
            labels=context.labels(dp),
            time_ns=dp.time_unix_nano,
            start_ns=dp.start_time_unix_nano,
            delta=delta,
            stale=bool(dp.flags & _NO_RECORDED_VALUE),
        )
        if type_ is MetricType.HISTOGRAM:
            point.bounds = tuple(dp.explicit_bounds)
            point.bucket_counts = tuple(dp.bucket_counts)
            point.sum = dp.sum if dp.HasField("sum") else None
            point.count = dp.count
        elif type_ is MetricType.SUMMARY:
            point.quantiles = tuple((q.quantile, q.value) for q in dp.quantile_values)
            point.sum = dp.sum
            point.count = dp.count
        else:
            point.value = _number(dp)
        yield point


def _with(labels: Labels, name: str, value: str) -> Labels:
    return tuple(sorted((*labels, (name, value))))


def samples(point: Point) -> Iterator[tuple[str, Labels, float]]:
    """The Prometheus samples of a point: (sample name, labels, value). Histograms give
    cumulative `_bucket` series up to le="+Inf", `_sum` and `_count`; summaries one series per
    quantile, `_sum` and `_count`. A stale point gives staleness markers."""

    def value(v: float) -> float:
        return STALE_NAN if point.stale else float(v)

    if point.type is MetricType.HISTOGRAM:
        cumulative = 0
        for bound, count in zip(point.bounds, point.bucket_counts, strict=False):
            cumulative += count
            le = format_float(bound)
            yield f"{point.name}_bucket", _with(point.labels, "le", le), value(cumulative)
        yield f"{point.name}_bucket", _with(point.labels, "le", "+Inf"), value(point.count)
    elif point.type is MetricType.SUMMARY:
        for q, v in point.quantiles:
            yield point.name, _with(point.labels, "quantile", format_float(q)), value(v)
    else:
        yield point.name, point.labels, value(point.value)
        return
    if point.sum is not None:
        yield f"{point.name}_sum", point.labels, value(point.sum)
    yield f"{point.name}_count", point.labels, value(point.count)
