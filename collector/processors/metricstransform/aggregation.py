"""Aggregating the data points of one metric: points with the same labels and timestamps (and,
for delta temporality, start times; for histograms, bounds or scale and offsets) merge into
one, as the Collector's metricstransform processor does within a batch.

Gauge and sum points combine by the aggregation type; int points stay ints. Histogram points
are summed whatever the type. Summaries cannot be merged and are left as they are.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    ExponentialHistogramDataPoint,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
)

from collector.processors.metricstransform.config import AggregationType

_DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
MERGEABLE = ("gauge", "sum", "histogram", "exponential_histogram")


def to_int64(value: float) -> int:
    """A double as an int64 point value: truncated toward zero, NaN as 0, clamped to range."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return _INT64_MAX if value > 0 else _INT64_MIN
    return min(max(int(value), _INT64_MIN), _INT64_MAX)


def _wrap(value: int) -> int:
    """An integer result as int64 arithmetic leaves it: wrapped around on overflow."""
    return (value - _INT64_MIN) % 2**64 + _INT64_MIN


def _truncating_div(numerator: int, denominator: int) -> int:
    quotient = abs(numerator) // denominator
    return quotient if numerator >= 0 else -quotient


def _is_delta(metric: Metric) -> bool:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "histogram", "exponential_histogram"):
        return getattr(metric, kind).aggregation_temporality == _DELTA
    return False


def labels_key(attrs) -> tuple:
    """A hashable key equal for equal label sets, whatever their order."""
    return tuple(sorted((kv.key, kv.value.SerializeToString(deterministic=True)) for kv in attrs))


def _point_key(point: Any, delta: bool) -> tuple:
    key: tuple = (labels_key(point.attributes), point.time_unix_nano)
    if delta:
        key += (point.start_time_unix_nano,)
    if isinstance(point, HistogramDataPoint):
        key += (
            tuple(point.explicit_bounds),
            point.HasField("min"),
            point.HasField("max"),
            point.flags,
        )
    elif isinstance(point, ExponentialHistogramDataPoint):
        key += (
            point.scale,
            point.HasField("min"),
            point.HasField("max"),
            point.flags,
            point.negative.offset,
            point.positive.offset,
        )
    return key


def aggregate(
    target: Metric, sources: Iterable[Metric], aggregation: AggregationType | None
) -> None:
    """Replace `target`'s points with the merged points of `sources` (which may include
    `target` itself), all of `target`'s type. Summaries are left as they are."""
    kind = target.WhichOneof("data")
    if kind not in MERGEABLE:
        return
    groups: dict[tuple, list[Any]] = {}
    for source in sources:
        delta = _is_delta(source)
        for point in getattr(source, kind).data_points:
            groups.setdefault(_point_key(point, delta), []).append(point)
    merge = _MERGERS[kind]
    merged = [merge(points, aggregation) for points in groups.values()]
    points = getattr(target, kind).data_points
    del points[:]
    points.extend(merged)


def _first_copy(points: list[Any]) -> Any:
    first = type(points[0])()
    first.CopyFrom(points[0])
    return first


def _number_value(point: NumberDataPoint) -> float:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def _merge_numbers(points: list[NumberDataPoint], aggregation: AggregationType | None) -> Any:
    merged = _first_copy(points)
    merged.start_time_unix_nano = min(p.start_time_unix_nano for p in points)
    for point in points[1:]:
        merged.exemplars.extend(point.exemplars)
    if aggregation is None:
        return merged
    if merged.WhichOneof("value") == "as_int":
        ints = [
            p.as_int if p.WhichOneof("value") == "as_int" else to_int64(p.as_double) for p in points
        ]
        merged.as_int = _wrap(_combine_ints(ints, aggregation))
    else:
        merged.as_double = _combine_doubles([_number_value(p) for p in points], aggregation)
    return merged


def _combine_ints(values: list[int], aggregation: AggregationType) -> int:
    if aggregation is AggregationType.SUM:
        return sum(values)
    if aggregation is AggregationType.MEAN:
        return _truncating_div(sum(values), len(values))
    if aggregation is AggregationType.MIN:
        return min(values)
    if aggregation is AggregationType.MAX:
        return max(values)
    if aggregation is AggregationType.COUNT:
        return len(values)
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return _truncating_div(ordered[middle - 1] + ordered[middle], 2)


def _combine_doubles(values: list[float], aggregation: AggregationType) -> float:
    if aggregation is AggregationType.SUM:
        return math.fsum(values)
    if aggregation is AggregationType.MEAN:
        return math.fsum(values) / len(values)
    if aggregation is AggregationType.MIN:
        return min(values)
    if aggregation is AggregationType.MAX:
        return max(values)
    if aggregation is AggregationType.COUNT:
        return float(len(values))
    return statistics.median(values)


def _add_buckets(into, counts) -> None:
    """Add bucket `counts` to the repeated `into`, element by element, growing it as needed."""
    for i, count in enumerate(counts):
        if i < len(into):
            into[i] += count
        else:
            into.append(count)


def _merge_histogram_stats(merged: Any, point: Any) -> None:
    """Count, sum, min, max, exemplars and start time: what both histogram kinds share."""
    merged.count += point.count
    if point.HasField("sum") or merged.HasField("sum"):
        merged.sum = merged.sum + point.sum
    if merged.HasField("min") and point.min < merged.min:
        merged.min = point.min
    if merged.HasField("max") and point.max > merged.max:
        merged.max = point.max
    merged.exemplars.extend(point.exemplars)
    merged.start_time_unix_nano = min(merged.start_time_unix_nano, point.start_time_unix_nano)


def _merge_histograms(points: list[HistogramDataPoint], _: AggregationType | None) -> Any:
    merged = _first_copy(points)
    for point in points[1:]:
        if point.count == 0:
            continue
        _merge_histogram_stats(merged, point)
        _add_buckets(merged.bucket_counts, point.bucket_counts)
    return merged


def _merge_exponential(points: list[ExponentialHistogramDataPoint], _: Any) -> Any:
    merged = _first_copy(points)
    for point in points[1:]:
        if point.count == 0:
            continue
        _merge_histogram_stats(merged, point)
        merged.zero_count += point.zero_count
        _add_buckets(merged.positive.bucket_counts, point.positive.bucket_counts)
        _add_buckets(merged.negative.bucket_counts, point.negative.bucket_counts)
    return merged


_MERGERS: dict[str, Callable[[list[Any], AggregationType | None], Any]] = {
    "gauge": _merge_numbers,
    "sum": _merge_numbers,
    "histogram": _merge_histograms,
    "exponential_histogram": _merge_exponential,
}
