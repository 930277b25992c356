"""The operations of a transform, each changing one metric in place."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from collector.core.pdata import delete_attr, find_attr, metric_points, set_attr, value_text
from collector.processors.metricstransform.aggregation import aggregate, to_int64
from collector.processors.metricstransform.config import Operation, OperationAction
from collector.processors.metricstransform.selection import Selection

# (metric, the transform's selection) -> None
Step = Callable[[Metric, Selection], None]


def collector_version() -> str:
    try:
        return importlib.metadata.version("coldtail")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class CompiledOperation:
    """One operation, ready to run. `whole_metric` operations (adding a label, deleting points,
    aggregating) run under action update only when every point of the metric matches
    `experimental_match_labels`; the others change the matching points only."""

    def __init__(self, op: Operation, version: str) -> None:
        self.action = op.action
        self.whole_metric = op.action in _WHOLE_METRIC
        self._run: Step = _BUILDERS[op.action](op, version)

    def apply(self, metric: Metric, selection: Selection) -> None:
        self._run(metric, selection)


def _with_version(text: str, version: str) -> str:
    return text.replace("{{version}}", version)


def _add_label(op: Operation, version: str) -> Step:
    key, value = op.new_label, _with_version(op.new_value, version)

    def run(metric: Metric, _: Selection) -> None:
        for point in metric_points(metric):
            if find_attr(point.attributes, key) is None:
                set_attr(point.attributes, key, value)

    return run


def _update_label(op: Operation, version: str) -> Step:
    label, new_label = op.label, op.new_label
    renames = {a.value: _with_version(a.new_value, version) for a in op.value_actions}

    def run(metric: Metric, selection: Selection) -> None:
        for point in metric_points(metric):
            attrs = point.attributes
            kv = find_attr(attrs, label)
            if kv is None or not selection.point_matches(attrs):
                continue
            old = value_text(kv.value)
            if new_label and new_label != label:
                delete_attr(attrs, new_label)
                kv.key = new_label
            if old in renames:
                kv.value.string_value = renames[old]

    return run


def _delete_label_value(op: Operation, _: str) -> Step:
    label, doomed = op.label, op.label_value

    def deleted(point: Any) -> bool:
        kv = find_attr(point.attributes, label)
        return kv is not None and value_text(kv.value) == doomed

    def run(metric: Metric, _: Selection) -> None:
        points = metric_points(metric)
        for index in reversed(range(len(points))):
            if deleted(points[index]):
                del points[index]

    return run


def _number_points(metric: Metric) -> Any:
    kind = metric.WhichOneof("data")
    return getattr(metric, kind).data_points if kind in ("gauge", "sum") else ()


def _toggle_scalar_data_type(op: Operation, _: str) -> Step:
    def run(metric: Metric, selection: Selection) -> None:
        for point in _number_points(metric):
            if not selection.point_matches(point.attributes):
                continue
            value = point.WhichOneof("value")
            if value == "as_int":
                point.as_double = float(point.as_int)
            elif value == "as_double":
                point.as_int = to_int64(point.as_double)

    return run


def _scale(value: Any, factor: float, kind: str | None) -> None:
    """Scale a number point or an exemplar in place, keeping its value type."""
    if kind == "as_int":
        value.as_int = to_int64(value.as_int * factor)
    elif kind == "as_double":
        value.as_double *= factor


def _scale_value(op: Operation, _: str) -> Step:
    factor = op.experimental_scale

    def run(metric: Metric, selection: Selection) -> None:
        if metric.WhichOneof("data") == "histogram":
            _scale_histogram(metric, factor, selection)
            return
        for point in _number_points(metric):
            if selection.point_matches(point.attributes):
                _scale(point, factor, point.WhichOneof("value"))

    return run


def _scale_histogram(metric: Metric, factor: float, selection: Selection) -> None:
    for point in metric.histogram.data_points:
        if not selection.point_matches(point.attributes):
            continue
        for name in ("sum", "min", "max"):
            if point.HasField(name):
                setattr(point, name, getattr(point, name) * factor)
        bounds = [bound * factor for bound in point.explicit_bounds]
        del point.explicit_bounds[:]
        point.explicit_bounds.extend(bounds)
        for exemplar in point.exemplars:
            _scale(exemplar, factor, exemplar.WhichOneof("value"))


def _aggregate_labels(op: Operation, _: str) -> Step:
    keep = set(op.label_set or ())
    aggregation = op.aggregation_type

    def run(metric: Metric, _: Selection) -> None:
        if metric.WhichOneof("data") == "summary":
            return  # summaries cannot be merged: their labels stay too
        for point in metric_points(metric):
            attrs = point.attributes
            for index in reversed(range(len(attrs))):
                if attrs[index].key not in keep:
                    del attrs[index]
        aggregate(metric, [metric], aggregation)

    return run


def _aggregate_label_values(op: Operation, version: str) -> Step:
    label, values = op.label, set(op.aggregated_values)
    new_value = _with_version(op.new_value, version)
    aggregation = op.aggregation_type

    def run(metric: Metric, _: Selection) -> None:
        if metric.WhichOneof("data") == "summary":
            return
        for point in metric_points(metric):
            kv = find_attr(point.attributes, label)
            if kv is not None and value_text(kv.value) in values:
                kv.value.string_value = new_value
        aggregate(metric, [metric], aggregation)

    return run


_BUILDERS: dict[OperationAction, Callable[[Operation, str], Step]] = {
    OperationAction.ADD_LABEL: _add_label,
    OperationAction.UPDATE_LABEL: _update_label,
    OperationAction.DELETE_LABEL_VALUE: _delete_label_value,
    OperationAction.TOGGLE_SCALAR_DATA_TYPE: _toggle_scalar_data_type,
    OperationAction.SCALE_VALUE: _scale_value,
    OperationAction.AGGREGATE_LABELS: _aggregate_labels,
    OperationAction.AGGREGATE_LABEL_VALUES: _aggregate_label_values,
}

_WHOLE_METRIC = {
    OperationAction.ADD_LABEL,
    OperationAction.DELETE_LABEL_VALUE,
    OperationAction.AGGREGATE_LABELS,
    OperationAction.AGGREGATE_LABEL_VALUES,
}
