"""resource processor: the attribute actions of `attributes`, applied to resource attributes."""

from __future__ import annotations

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.pdata import resources
from collector.core.signals import Signal
from collector.processors.internal.attraction import Actions, AttributeActions
from collector.processors.internal.base import Processor


class Config(ComponentConfig):
    attributes: Actions
    """Actions applied in order to the attributes of every resource; each is
    `{key, action, value, from_attribute, pattern, converted_type}` as in the attributes
    processor. Required, at least one."""


class ResourceProcessor(Processor):
    mutates_data = True
    attributes_only = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._actions = AttributeActions(config.attributes)

    def process(self, batch):
        for res in resources(batch):
            self._actions.apply(res.resource.attributes)
        return batch


factory = Factory(
    kind=Kind.PROCESSOR,
    type="resource",
    config=Config,
    create=ResourceProcessor,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    description="Inserts, updates, deletes, hashes or converts resource attributes.",
)
