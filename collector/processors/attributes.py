"""attributes processor: insert, update, upsert, delete, hash, extract or convert attributes of
spans, log records and metric data points, optionally only for those selected by `include` /
`exclude` (the Collector's legacy match properties)."""

from __future__ import annotations

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.pdata import iter_items, metric_points
from collector.core.signals import Signal
from collector.processors.internal.attraction import Actions, AttributeActions
from collector.processors.internal.base import Processor
from collector.processors.internal.matching import MatchProperties, selector


class Config(ComponentConfig):
    actions: Actions
    """Actions applied in order to every selected span, log record or data point; each is
    `{key, action, value, from_attribute, pattern, converted_type}`. Required, at least one."""
    include: MatchProperties | None = None
    """Only items matching these properties get the actions (for metrics: data points of the
    matching metrics). Unset: all items."""
    exclude: MatchProperties | None = None
    """Items matching these properties are left alone. Unset: none are excluded."""


class AttributesProcessor(Processor):
    mutates_data = True
    attributes_only = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._actions = AttributeActions(config.actions)
        include, exclude = config.include, config.exclude
        self._selected = selector(
            include.predicate(signal) if include else None,
            exclude.predicate(signal) if exclude else None,
        )

    def process(self, batch):
        apply, selected = self._actions.apply, self._selected
        for resource, scope, item in iter_items(batch):
            if selected is not None and not selected(resource, scope, item):
                continue
            if self.signal is Signal.METRICS:
                for point in metric_points(item):
                    apply(point.attributes)
            else:
                apply(item.attributes)
        return batch


factory = Factory(
    kind=Kind.PROCESSOR,
    type="attributes",
    config=Config,
    create=AttributesProcessor,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    description="Inserts, updates, deletes, hashes or converts span, log and data point "
    "attributes.",
)
