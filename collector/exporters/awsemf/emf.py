"""OTLP metrics as CloudWatch embedded metric format (EMF) log events.

Each event holds the metrics of one resource, scope, timestamp and label set: the labels as
top-level fields, each metric's value under its name, and the `_aws` metadata naming the
namespace, the metrics (with CloudWatch units) and the dimension sets CloudWatch extracts
metrics for. Labels are the data point's attributes, the resource's when
`resource_to_telemetry_conversion` is on, and `OTelLib` (the instrumentation scope's name),
written as the Collector writes attribute values as text (pdata.value_text).

CloudWatch adds up what it receives, so cumulative sums and histograms are sent as the change
since the previous point of the same series (the first point of a series only sets the base);
gauges, delta sums and non-monotonic sums as they are. A histogram's value is a statistic set
{Count, Sum, Min, Max}.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from collector.core.pdata import value_text

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
SCOPE_DIMENSION = "OTelLib"
MAX_DIMENSIONS = 30  # per dimension set, CloudWatch's limit
# UCUM units as CloudWatch names them; others are sent without a unit.
_UNITS = {
    "ms": "Milliseconds",
    "s": "Seconds",
    "us": "Microseconds",
    "By": "Bytes",
    "KBy": "Kilobytes",
    "MBy": "Megabytes",
    "GBy": "Gigabytes",
    "bit": "Bits",
    "%": "Percent",
    "1": "Count",
    "{count}": "Count",
    "By/s": "Bytes/Second",
}


@dataclass(frozen=True)
class Declaration:
    """Which metrics get which dimension sets, as the exporter's `metric_declarations`."""

    dimensions: list[list[str]]
    selectors: list[re.Pattern[str]]

    def matches(self, name: str) -> bool:
        return any(selector.search(name) for selector in self.selectors)


@dataclass
class _Event:
    timestamp_ms: int
    labels: dict[str, str]
    values: dict[str, object] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)


class EmfWriter:
    """Turns batches into EMF events; holds the previous value of every cumulative series."""

    def __init__(
        self,
        rollup: str,
        declarations: list[Declaration],
        resource_labels: bool,
        retain_initial_delta: bool = False,
    ) -> None:
        self.rollup = rollup
        self.declarations = declarations
        self.resource_labels = resource_labels
        self.retain_initial = retain_initial_delta
        self._previous: dict[tuple, tuple[float, ...]] = {}

    def events(self, rm, namespace: str) -> Iterator[dict]:
        """The EMF events of one ResourceMetrics, in CloudWatch namespace `namespace`."""
        resource = {kv.key: value_text(kv.value) for kv in rm.resource.attributes}
        for sm in rm.scope_metrics:
            grouped: dict[tuple, _Event] = {}
            for metric in sm.metrics:
                for timestamp, labels, value in self._points(metric, resource, sm.scope.name):
                    key = (timestamp, tuple(sorted(labels.items())))
                    event = grouped.get(key)
                    if event is None:
                        event = grouped[key] = _Event(timestamp, labels)
                    event.values[metric.name] = value
                    unit = _UNITS.get(metric.unit)
                    if unit:
                        event.units[metric.name] = unit
            for event in grouped.values():
                document = self._document(event, namespace)
                if document is not None:
                    yield document

    def _points(self, metric: Metric, resource: Mapping[str, str], scope: str):
        kind = metric.WhichOneof("data")
        if kind == "gauge":
            for dp in metric.gauge.data_points:
                yield _ms(dp), self._labels(dp, resource, scope), _number(dp)
        elif kind == "sum":
            data = metric.sum
            cumulative = data.aggregation_temporality == _CUMULATIVE and data.is_monotonic
            for dp in data.data_points:
                labels = self._labels(dp, resource, scope)
                value = _number(dp)
                if cumulative:
                    delta = self._delta((metric.name, *sorted(labels.items())), (value,))
                    if delta is None:
                        continue
                    value = delta[0]
                yield _ms(dp), labels, value
        elif kind == "histogram":
            histogram = metric.histogram
            for hp in histogram.data_points:
                labels = self._labels(hp, resource, scope)
                count, total = float(hp.count), hp.sum
                if histogram.aggregation_temporality == _CUMULATIVE:
                    delta = self._delta((metric.name, *sorted(labels.items())), (count, total))
                    if delta is None:
                        continue
                    count, total = delta
                if count <= 0:
                    continue
                stats = {"Count": count, "Sum": total}
                stats["Min"] = hp.min if hp.HasField("min") else total / count
                stats["Max"] = hp.max if hp.HasField("max") else total / count
                yield _ms(hp), labels, stats

    def _delta(self, series: tuple, values: tuple[float, ...]) -> tuple[float, ...] | None:
        previous = self._previous.get(series)
        self._previous[series] = values
        if previous is None:
            return values if self.retain_initial else None
        if any(now < before for now, before in zip(values, previous, strict=True)):
            return values  # a reset: the series started again from zero
        return tuple(now - before for now, before in zip(values, previous, strict=True))

    def _labels(self, dp, resource: Mapping[str, str], scope: str) -> dict[str, str]:
        labels = dict(resource) if self.resource_labels else {}
        labels.update((kv.key, value_text(kv.value)) for kv in dp.attributes)
        if scope:
            labels[SCOPE_DIMENSION] = scope
        return labels

    def _dimension_sets(self, name: str, labels: Mapping[str, str]) -> list[list[str]] | None:
        """The metric's dimension sets; None makes it no CloudWatch metric, though its value
        stays in the log event, as the OTel Collector's exporter keeps it."""
        keys = sorted(k for k in labels if k != SCOPE_DIMENSION)
        scope = [SCOPE_DIMENSION] if SCOPE_DIMENSION in labels else []
        if self.declarations:
            matched = [d for d in self.declarations if d.matches(name)]
            if not matched:
                return None
            sets = [
                dims
                for declaration in matched
                for dims in declaration.dimensions
                if dims and all(d in labels for d in dims)
            ]
            sets += self._rollup(scope, keys, all_singles=True)
        else:
            sets = [scope + keys, *self._rollup(scope, keys, all_singles=len(keys) > 1)]
        unique = list({tuple(s[:MAX_DIMENSIONS]): None for s in sets if s})
        return [list(s) for s in unique] or None

    def _rollup(self, scope: list[str], keys: list[str], all_singles: bool) -> list[list[str]]:
        """The rolled-up sets `dimension_rollup_option` adds: none, and one per label."""
        sets = []
        if self.rollup == "ZeroAndSingleDimensionRollup" and keys:
            sets.append(scope)
        if self.rollup != "NoDimensionRollup" and all_singles:
            sets += [[*scope, key] for key in keys]
        return sets

    def _document(self, event: _Event, namespace: str) -> dict | None:
        directives = []
        values = {}
        for name, value in event.values.items():
            values[name] = value
            sets = self._dimension_sets(name, event.labels)
            if sets is None:
                continue
            metric: dict = {"Name": name}
            if name in event.units:
                metric["Unit"] = event.units[name]
            directives.append({"Namespace": namespace, "Dimensions": sets, "Metrics": [metric]})
        if not values:
            return None
        if not directives:  # a log event only
            return {**event.labels, **values}
        return {
            "_aws": {"Timestamp": event.timestamp_ms, "CloudWatchMetrics": directives},
            **event.labels,
            **values,
        }


def _ms(dp) -> int:
    return dp.time_unix_nano // 1_000_000


def _number(dp) -> float:
    return float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double
