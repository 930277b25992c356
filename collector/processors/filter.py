"""filter processor: drops spans, span events, metrics, data points or log records that match
OTTL conditions, or that the Collector's legacy include/exclude match properties select.

    filter:
      error_mode: ignore
      traces:
        span: ['attributes["http.route"] == "/health"']
        spanevent: ['IsMatch(name, "^debug")']
      metrics:
        metric: ['name == "requests" and resource.attributes["env"] == "dev"']
        datapoint: ['attributes["le"] == nil']
      logs:
        log_record: ['severity_number < SEVERITY_NUMBER_WARN']

With OTTL, an item matching any condition is dropped. A dropped span takes its events along
(their conditions are not evaluated); a span whose events all drop stays. A metric whose data
points all drop is dropped. With the legacy syntax (`spans`, and `include` / `exclude` under
`metrics` and `logs`) an item is kept when it matches `include` (if given) and does not match
`exclude` (if given); a signal uses one syntax or the other, as upstream. Scopes and resources
left empty are removed; a batch left empty is dropped, which is not an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.pdata import LEVELS, count_items, metric_points, resources
from collector.core.signals import Signal
from collector.processors.internal import ottl
from collector.processors.internal.base import Processor
from collector.processors.internal.matching import (
    LogMatchProperties,
    MatchProperties,
    MetricMatchProperties,
    Predicate,
    selector,
)
from collector.processors.internal.ottl import ErrorMode, ErrorPolicy, TransformContext
from collector.processors.internal.ottl.functions import FILTER_ONLY, standard

Test = Callable[[TransformContext], bool]
Conditions = tuple[tuple[str, Test], ...]


class SpanFilter(ComponentConfig):
    include: MatchProperties | None = None
    """Keep only spans matching these properties: match_type (strict | regexp), services,
    span_names, span_kinds, attributes, resource_attributes (or resources), libraries. Unset: all
    spans."""
    exclude: MatchProperties | None = None
    """Drop spans matching these properties (same keys as include). Unset: none."""

    @model_validator(mode="after")
    def _for_spans(self):
        for props in (self.include, self.exclude):
            if props is not None:
                props.predicate(Signal.TRACES)
        return self


class TraceConditions(ComponentConfig):
    span: list[str] | None = None
    """OTTL conditions in the span context (`name == "GET /health"`,
    `resource.attributes["env"] == "dev"`); a span matching any is dropped. Unset: none."""
    spanevent: list[str] | None = None
    """OTTL conditions in the spanevent context; a span event matching any is dropped (its
    span stays). Unset: none."""


class MetricFilter(ComponentConfig):
    include: MetricMatchProperties | None = None
    """Keep only metrics matching these properties: match_type (strict | regexp), metric_names,
    resource_attributes. Unset: all metrics."""
    exclude: MetricMatchProperties | None = None
    """Drop metrics matching these properties (same keys as include). Unset: none."""
    metric: list[str] | None = None
    """OTTL conditions in the metric context; a metric matching any is dropped. Not with
    include/exclude. Unset: none."""
    datapoint: list[str] | None = None
    """OTTL conditions in the datapoint context; a data point matching any is dropped, and a
    metric left without data points too. Not with include/exclude. Unset: none."""


class LogFilter(ComponentConfig):
    include: LogMatchProperties | None = None
    """Keep only log records matching these properties: match_type (strict | regexp), bodies,
    severity_texts, severity_number ({min, match_undefined}), record_attributes,
    resource_attributes. Unset: all log records."""
    exclude: LogMatchProperties | None = None
    """Drop log records matching these properties (same keys as include). Unset: none."""
    log_record: list[str] | None = None
    """OTTL conditions in the log context; a log record matching any is dropped. Not with
    include/exclude. Unset: none."""


# (config section, conditions key, OTTL context) per signal; the legacy properties of the
# same signal live under `legacy`.
_OTTL_KEYS = {
    Signal.TRACES: (("traces", "span", "span"), ("traces", "spanevent", "spanevent")),
    Signal.METRICS: (("metrics", "metric", "metric"), ("metrics", "datapoint", "datapoint")),
    Signal.LOGS: (("logs", "log_record", "log"),),
}
_LEGACY = {Signal.TRACES: "spans", Signal.METRICS: "metrics", Signal.LOGS: "logs"}


class Config(ComponentConfig):
    error_mode: ErrorMode = "ignore"
    """What an OTTL condition failing on an item does: ignore (default, as the OTel Collector
    since 0.153: log it; the condition does not match), silent (the condition does not match)
    or propagate (the batch fails and is dropped, the sender is told). Legacy matching cannot
    fail."""
    profiles: dict | None = None
    """Accepted for compatibility: profiles pipelines are skipped (see service::pipelines)."""
    spans: SpanFilter = Field(default_factory=SpanFilter)
    """Legacy span filter (include/exclude). Empty: all spans pass."""
    traces: TraceConditions = Field(default_factory=TraceConditions)
    """OTTL conditions for spans (`span`) and span events (`spanevent`). Not with `spans`."""
    metrics: MetricFilter = Field(default_factory=MetricFilter)
    """Metric filter: legacy include/exclude (whole metrics), or OTTL conditions (`metric`,
    `datapoint`). Empty: all metrics pass."""
    logs: LogFilter = Field(default_factory=LogFilter)
    """Log record filter: legacy include/exclude, or OTTL conditions (`log_record`). Empty: all
    log records pass."""

    _conditions: dict[str, Conditions] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        functions = standard(FILTER_ONLY)
        for signal, keys in _OTTL_KEYS.items():
            legacy = getattr(self, _LEGACY[signal])
            uses_ottl = any(getattr(getattr(self, part), key) is not None for part, key, _ in keys)
            if uses_ottl and (legacy.include is not None or legacy.exclude is not None):
                what = " (traces) and include/exclude (spans)" if signal is Signal.TRACES else ""
                message = (
                    f"cannot use OTTL conditions{what or ' and include/exclude'} for "
                    f"{_LEGACY[signal]} at the same time"
                )
                problems.append(((keys[0][0],), message, None))
            for part, key, context in keys:
                compiled = []
                for i, text in enumerate(getattr(getattr(self, part), key) or ()):
                    try:
                        test = ottl.compile_condition(text, signal, context, functions=functions)
                    except ottl.StatementError as e:
                        problems.append(((part, key, i), str(e), text))
                        continue
                    compiled.append((text, test))
                self._conditions[context] = tuple(compiled)
        if problems:
            raise ottl.config_error("filter", problems)
        return self

    def conditions(self, context: str) -> Conditions:
        return self._conditions.get(context, ())


class FilterProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._keep = _keeper(config, signal)
        contexts = [context for _, _, context in _OTTL_KEYS[signal]]
        self._ottl = [config.conditions(c) for c in contexts]
        self._uses_ottl = any(self._ottl)
        self._policy = ErrorPolicy(config.error_mode, self.log)

    def process(self, batch):
        if self._uses_ottl:
            try:
                return self._drop_matching(batch)
            finally:
                self._policy.report()
        if self._keep is None:
            return batch
        scopes_field, items_field = LEVELS[self.signal]
        keep = self._keep
        for res in resources(batch):
            for scope in getattr(res, scopes_field):
                _retain(
                    getattr(scope, items_field),
                    lambda item, r=res.resource, s=scope.scope: keep(r, s, item),
                )
        return _without_empty_parts(batch, self.signal)

    def _drop_matching(self, batch):
        """Drop the items OTTL conditions match, then empty scopes and resources."""
        scopes_field, items_field = LEVELS[self.signal]
        ctx = TransformContext()
        keep = self._item_keeper(ctx)
        for res in resources(batch):
            ctx.resource = res.resource
            for scope in getattr(res, scopes_field):
                ctx.scope = scope.scope
                _retain(getattr(scope, items_field), keep)
        return _without_empty_parts(batch, self.signal)

    def _item_keeper(self, ctx: TransformContext) -> Callable[[Any], bool]:
        """keep(span | metric | log record), which also drops the span events or data points
        the inner conditions match."""
        signal, policy = self.signal, self._policy
        outer, inner = (*self._ottl, ())[:2]
        slot = _ITEM_SLOTS[signal]
        keep_inner = _ottl_keeper(inner, ctx, _INNER_SLOTS.get(signal, ""), policy)

        def keep(item: Any) -> bool:
            setattr(ctx, slot, item)
            ctx.cache = None
            if outer and _matches(outer, ctx, policy):
                return False
            if keep_inner is None:
                return True
            if signal is Signal.TRACES:
                _retain(item.events, keep_inner)
                return True
            points = metric_points(item)
            if isinstance(points, tuple):  # a metric without data
                return True
            _retain(points, keep_inner)
            return len(points) > 0

        return keep


_ITEM_SLOTS = {Signal.TRACES: "span", Signal.METRICS: "metric", Signal.LOGS: "log"}
_INNER_SLOTS = {Signal.TRACES: "spanevent", Signal.METRICS: "datapoint"}


def _ottl_keeper(
    conditions: Conditions, ctx: TransformContext, slot: str, policy: ErrorPolicy
) -> Callable[[Any], bool] | None:
    """keep(item) for span events or data points: false when a condition matches."""
    if not conditions:
        return None

    def keep(item: Any) -> bool:
        setattr(ctx, slot, item)
        ctx.cache = None
        return not _matches(conditions, ctx, policy)

    return keep


def _matches(conditions: Conditions, ctx: TransformContext, policy: ErrorPolicy) -> bool:
    for text, test in conditions:
        try:
            if test(ctx):
                return True
        except Exception as e:  # a failing condition does not match
            policy.failed(text, e)
    return False


def _keeper(config: Config, signal: Signal) -> Predicate | None:
    if signal is Signal.TRACES:
        include, exclude = config.spans.include, config.spans.exclude
        return selector(
            include.predicate(signal) if include else None,
            exclude.predicate(signal) if exclude else None,
        )
    part = config.metrics if signal is Signal.METRICS else config.logs
    return selector(
        part.include.predicate() if part.include else None,
        part.exclude.predicate() if part.exclude else None,
    )


def _without_empty_parts(batch, signal: Signal):
    """`batch` without scopes and resources left empty; None when nothing is left."""
    scopes_field, items_field = LEVELS[signal]
    for res in resources(batch):
        _retain(getattr(res, scopes_field), lambda s: len(getattr(s, items_field)) > 0)
    _retain(resources(batch), lambda r: len(getattr(r, scopes_field)) > 0)
    return batch if count_items(batch) else None


def _retain(items, keep) -> None:
    """Keep the entries of a repeated message field for which `keep` is true, in order."""
    kept = [item for item in items if keep(item)]
    if len(kept) != len(items):
        del items[:]
        items.extend(kept)


factory = Factory(
    kind=Kind.PROCESSOR,
    type="filter",
    config=Config,
    create=FilterProcessor,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Drops spans, span events, metrics, data points or log records matching OTTL "
    "conditions or include/exclude properties.",
)
