"""filter processor: drops spans, metrics or log records with the Collector's legacy
include/exclude match syntax.

    filter:
      spans:
        include: {match_type: strict, services: [checkout]}
        exclude: {match_type: regexp, span_names: ["^GET /health"]}
      metrics:
        exclude: {match_type: strict, metric_names: [requests]}
      logs:
        include: {match_type: strict, severity_number: {min: WARN, match_undefined: true}}

An item is kept when it matches `include` (if given) and does not match `exclude` (if given).
Scopes and resources left empty are removed; a batch left empty is dropped, which is not an error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.pdata import LEVELS, count_items, resources
from collector.core.signals import Signal
from collector.processors.internal.base import Processor
from collector.processors.internal.matching import (
    LogMatchProperties,
    MatchProperties,
    MetricMatchProperties,
    Predicate,
    selector,
)


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


class MetricFilter(ComponentConfig):
    include: MetricMatchProperties | None = None
    """Keep only metrics matching these properties: match_type (strict | regexp), metric_names,
    resource_attributes. Unset: all metrics."""
    exclude: MetricMatchProperties | None = None
    """Drop metrics matching these properties (same keys as include). Unset: none."""


class LogFilter(ComponentConfig):
    include: LogMatchProperties | None = None
    """Keep only log records matching these properties: match_type (strict | regexp), bodies,
    severity_texts, severity_number ({min, match_undefined}), record_attributes,
    resource_attributes. Unset: all log records."""
    exclude: LogMatchProperties | None = None
    """Drop log records matching these properties (same keys as include). Unset: none."""


class Config(ComponentConfig):
    error_mode: Literal["propagate", "ignore", "silent"] = "propagate"
    """Accepted for compatibility with Collector configs; matching cannot fail, so it has no
    effect. Default propagate."""
    spans: SpanFilter = Field(default_factory=SpanFilter)
    """Span filter. Empty: all spans pass."""
    metrics: MetricFilter = Field(default_factory=MetricFilter)
    """Metric filter; whole metrics are kept or dropped. Empty: all metrics pass."""
    logs: LogFilter = Field(default_factory=LogFilter)
    """Log record filter. Empty: all log records pass."""


class FilterProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._keep = _keeper(config, signal)

    def process(self, batch):
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
            _retain(getattr(res, scopes_field), lambda s: len(getattr(s, items_field)) > 0)
        _retain(resources(batch), lambda r: len(getattr(r, scopes_field)) > 0)
        return batch if count_items(batch) else None


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
    description="Drops spans, metrics or log records matching include/exclude properties.",
)
