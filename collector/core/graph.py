"""The component graph of one config: every pipeline built back to front (exporters and
connectors behind a fan-out, then its processors in reverse, each holding `next`), then the
receivers, each given a fan-out per signal over the pipelines that list it, then the extensions.
Building creates components; starting and stopping them is the service's."""

from __future__ import annotations

from collections.abc import Callable

from collector.core.component import ComponentID, Kind, Settings
from collector.core.config import Pipeline, ServiceConfig
from collector.core.consumer import Consumer
from collector.core.fanout import fan_out
from collector.core.signals import Signal


class GraphError(Exception):
    """The pipelines form a cycle through connectors."""


# (kind, id, pipeline) -> the Settings of that component
SettingsFor = Callable[[Kind, ComponentID, str], Settings]


class Graph:
    """Every component instance of one config. `order` lists them downstream first (as
    `(label, component)`), the order they start in; `receivers` and `extensions` by id."""

    def __init__(self, config: ServiceConfig, settings: SettingsFor) -> None:
        self.config = config
        self._settings = settings
        self.order: list[tuple[str, object]] = []
        self.receivers: dict[ComponentID, object] = {}
        self.extensions: dict[ComponentID, object] = {}
        self._exporters: dict[tuple[ComponentID, Signal], object] = {}
        self._connectors: dict[tuple[ComponentID, Signal], object] = {}
        self._entries: dict[str, Consumer] = {}
        self._building: set[str] = set()
        for pipeline in config.pipelines:
            self._entry(pipeline)
        self._build_receivers()
        for eid in config.extensions:
            factory, cfg = config.component(Kind.EXTENSION, eid)
            self.extensions[eid] = factory.create(settings(Kind.EXTENSION, eid, ""), cfg)

    def _add(self, label: str, component) -> None:
        self.order.append((label, component))

    def _targets(self, signal: Signal, receiver: ComponentID) -> list[Consumer]:
        """The entries of the pipelines of `signal` that list `receiver` (or a connector)."""
        return [
            self._entry(p)
            for p in self.config.pipelines
            if p.signal == signal and receiver in p.receivers
        ]

    def _exporter(self, id: ComponentID, signal: Signal):
        key = (id, signal)
        if key not in self._exporters:
            factory, cfg = self.config.component(Kind.EXPORTER, id)
            self._exporters[key] = exp = factory.create(
                self._settings(Kind.EXPORTER, id, ""), cfg, signal
            )
            self._add(f"exporter {id} ({signal})", exp)
        return self._exporters[key]

    def _connector(self, id: ComponentID, signal_in: Signal):
        key = (id, signal_in)
        if key not in self._connectors:
            factory, cfg = self.config.component(Kind.CONNECTOR, id)
            outputs = {}
            for out_signal in factory.signals.get(signal_in, {}):
                if targets := self._targets(out_signal, id):
                    outputs[out_signal] = fan_out(targets)
            self._connectors[key] = conn = factory.create(
                self._settings(Kind.CONNECTOR, id, ""), cfg, signal_in, outputs
            )
            self._add(f"connector {id} ({signal_in})", conn)
        return self._connectors[key]

    def _entry(self, pipeline: Pipeline) -> Consumer:
        """The first consumer of a pipeline, building it (and all downstream) on first use."""
        if pipeline.id in self._entries:
            return self._entries[pipeline.id]
        if pipeline.id in self._building:
            raise GraphError(
                f"service::pipelines::{pipeline.id}: pipelines form a cycle through connectors"
            )
        self._building.add(pipeline.id)
        connectors = self.config.components[Kind.CONNECTOR]
        consumers = [
            self._connector(e, pipeline.signal)
            if e in connectors
            else self._exporter(e, pipeline.signal)
            for e in pipeline.exporters
        ]
        next_: Consumer = fan_out(consumers)
        for pid in reversed(pipeline.processors):
            factory, cfg = self.config.component(Kind.PROCESSOR, pid)
            next_ = factory.create(
                self._settings(Kind.PROCESSOR, pid, pipeline.id), cfg, pipeline.signal, next_
            )
            self._add(f"processor {pid} in {pipeline.id}", next_)
        self._building.discard(pipeline.id)
        self._entries[pipeline.id] = next_
        return next_

    def _build_receivers(self) -> None:
        receivers = self.config.components[Kind.RECEIVER]
        for rid in sorted(
            {r for p in self.config.pipelines for r in p.receivers if r in receivers}
        ):
            nexts = {s: fan_out(targets) for s in Signal if (targets := self._targets(s, rid))}
            factory, cfg = self.config.component(Kind.RECEIVER, rid)
            self.receivers[rid] = rec = factory.create(
                self._settings(Kind.RECEIVER, rid, ""), cfg, nexts
            )
            self._add(f"receiver {rid}", rec)
