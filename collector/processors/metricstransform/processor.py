"""The metricstransform processor: each transform selects metrics of a resource and scope by
name (and point labels) and updates them in place, inserts transformed copies, combines them
into one new metric or groups them under a new resource; then runs its operations on the
result. Transforms run in order, within each batch only (nothing is held across batches).

Where only some points of a selected metric match `experimental_match_labels`, insert copies
and combine and group move the matching points; the others stay in the original metric.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, ResourceMetrics, ScopeMetrics

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.consumer import Consumer
from collector.core.pdata import metric_points, set_attr
from collector.core.signals import Signal
from collector.processors.internal.base import Processor
from collector.processors.metricstransform.aggregation import aggregate
from collector.processors.metricstransform.config import (
    Config,
    SubmatchCase,
    Transform,
    TransformAction,
)
from collector.processors.metricstransform.operations import (
    CompiledOperation,
    collector_version,
)
from collector.processors.metricstransform.selection import Selection


class CompiledTransform:
    def __init__(self, transform: Transform, version: str) -> None:
        self.action = transform.action
        self.selection = Selection(transform)
        self.new_name = transform.new_name
        self.aggregation = transform.aggregation_type
        self.submatch_case = transform.submatch_case
        self.resource_labels = transform.group_resource_labels or {}
        self.operations = [CompiledOperation(op, version) for op in transform.operations]

    def apply(self, metric: Metric) -> bool:
        """Rename `metric` and run the operations on it; False when they left no point of a
        metric that had some (the metric is then dropped)."""
        had_points = len(metric_points(metric)) > 0
        whole = self.action is not TransformAction.UPDATE or self.selection.all_points_match(metric)
        if self.new_name and whole:
            metric.name = self.selection.new_name(self.new_name, metric.name)
        for op in self.operations:
            if whole or not op.whole_metric:
                op.apply(metric, self.selection)
        return not had_points or len(metric_points(metric)) > 0

    def submatch_value(self, value: str) -> str:
        if self.submatch_case is SubmatchCase.LOWER:
            return value.lower()
        if self.submatch_case is SubmatchCase.UPPER:
            return value.upper()
        return value


class MetricsTransformProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        version = collector_version()
        self._transforms = [CompiledTransform(t, version) for t in config.transforms]

    def process(self, batch):
        if not self._transforms:
            return batch
        grouped: list[ResourceMetrics] = []
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                self._transform_scope(rm, sm, grouped)
            _remove_where(rm.scope_metrics, lambda sm: len(sm.metrics) == 0)
        _remove_where(batch.resource_metrics, lambda rm: len(rm.scope_metrics) == 0)
        batch.resource_metrics.extend(grouped)
        return batch

    def _transform_scope(
        self, rm: ResourceMetrics, sm: ScopeMetrics, grouped: list[ResourceMetrics]
    ) -> None:
        metrics = sm.metrics
        for transform in self._transforms:
            if transform.action is TransformAction.UPDATE:
                _update(metrics, transform)
            elif transform.action is TransformAction.INSERT:
                _insert(metrics, transform)
            elif transform.action is TransformAction.COMBINE:
                self._combine(metrics, transform)
            else:
                group = _group(rm, sm, transform)
                if group is not None:
                    grouped.append(group)

    def _combine(self, metrics: Any, transform: CompiledTransform) -> None:
        selection = transform.selection
        matched = [metric for metric in metrics if selection.selects(metric)]
        if not matched:
            return
        problem = combine_problem(matched)
        if problem:
            self.log.warning("metrics not combined into %s: %s", transform.new_name, problem)
            return
        taken = _take(metrics, selection)
        for metric in taken:
            labels = [
                (key, transform.submatch_value(value))
                for key, value in selection.submatch_labels(metric.name)
            ]
            for point in metric_points(metric):
                for key, value in labels:
                    set_attr(point.attributes, key, value)
        combined = Metric()
        combined.CopyFrom(taken[0])
        combined.name = transform.new_name
        aggregate(combined, taken, transform.aggregation)
        if transform.apply(combined):
            metrics.append(combined)


def _update(metrics: Any, transform: CompiledTransform) -> None:
    emptied = []
    for index, metric in enumerate(metrics):
        if transform.selection.selects(metric) and not transform.apply(metric):
            emptied.append(index)
    for index in reversed(emptied):
        del metrics[index]


def _insert(metrics: Any, transform: CompiledTransform) -> None:
    selection = transform.selection
    for index in range(len(metrics)):  # not the metrics this appends
        metric = metrics[index]
        if not selection.name_match(metric.name):
            continue
        matches = selection.point_flags(metric)
        if matches and not any(matches):
            continue
        copy = Metric()
        copy.CopyFrom(metric)
        _keep_points(copy, matches)
        if transform.apply(copy):
            metrics.append(copy)


def _group(
    rm: ResourceMetrics, sm: ScopeMetrics, transform: CompiledTransform
) -> ResourceMetrics | None:
    """A new resource (a copy of `rm`'s with the transform's labels) holding the selected
    metrics of `sm`, which leave it; None when none is selected."""
    taken = _take(sm.metrics, transform.selection)
    if not taken:
        return None
    group = ResourceMetrics(schema_url=rm.schema_url)
    group.resource.CopyFrom(rm.resource)
    for key, value in transform.resource_labels.items():
        set_attr(group.resource.attributes, key, value)
    scope = group.scope_metrics.add(schema_url=sm.schema_url)
    scope.scope.CopyFrom(sm.scope)
    scope.metrics.extend(taken)
    return group


def _take(metrics: Any, selection: Selection) -> list[Metric]:
    """Remove the selected points from `metrics` and return them as metrics: a metric whose
    points all match leaves whole; of the others, a copy holding the matching points."""
    taken: list[Metric] = []
    emptied: list[int] = []
    for index, metric in enumerate(metrics):
        if not selection.name_match(metric.name):
            continue
        matches = selection.point_flags(metric)
        if all(matches):
            taken.append(metric)
            emptied.append(index)
        elif any(matches):
            part = Metric()
            part.CopyFrom(metric)
            _keep_points(part, matches)
            _keep_points(metric, [not match for match in matches])
            taken.append(part)
    for index in reversed(emptied):
        del metrics[index]  # the message stays valid, detached, in `taken`
    return taken


def _keep_points(metric: Metric, keep: list[bool]) -> None:
    points = metric_points(metric)
    for index in reversed(range(len(points))):
        if not keep[index]:
            del points[index]


def _remove_where(items: Any, condition: Any) -> None:
    for index in reversed(range(len(items))):
        if condition(items[index]):
            del items[index]


def _label_keys(metric: Metric) -> set[str]:
    return {kv.key for point in metric_points(metric) for kv in point.attributes}


def combine_problem(metrics: list[Metric]) -> str | None:
    """Why `metrics` cannot be combined into one, or None when they can: they must share type
    (not summary), unit, label keys, temporality and monotonicity."""
    first = metrics[0]
    kind = first.WhichOneof("data")
    for metric in metrics:
        if metric.WhichOneof("data") in ("summary", None):
            return f"{metric.name} is a summary or has no data: it cannot be combined"
    for metric in metrics[1:]:
        other = metric.WhichOneof("data")
        pair = f"{first.name} and {metric.name}"
        if other != kind:
            return f"{pair} are of different types ({kind}, {other})"
        if metric.unit != first.unit:
            return f"{pair} have different units ({first.unit!r}, {metric.unit!r})"
        if _label_keys(metric) != _label_keys(first):
            keys = sorted(_label_keys(first)), sorted(_label_keys(metric))
            return f"{pair} have different labels ({keys[0]}, {keys[1]})"
        if kind is not None and kind != "gauge":
            ours, theirs = getattr(first, kind), getattr(metric, kind)
            if ours.aggregation_temporality != theirs.aggregation_temporality:
                return f"{pair} have different aggregation temporalities"
            if kind == "sum" and ours.is_monotonic != theirs.is_monotonic:
                return f"{pair} have different monotonicity"
    return None


factory = Factory(
    kind=Kind.PROCESSOR,
    type="metricstransform",
    config=Config,
    create=MetricsTransformProcessor,
    signals={Signal.METRICS: Stability.BETA},
    description="Renames metrics, adds, renames or deletes labels and label values, scales, "
    "toggles and aggregates data points, combines and groups metrics.",
)
