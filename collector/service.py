"""The pipeline service: builds the component graph from a ServiceConfig, starts it downstream
first, and stops it upstream first, draining within `service.shutdown_timeout`."""

from __future__ import annotations

import asyncio
import logging
import signal as signals
import time

from collector.component import ComponentID, Kind, Registry, Settings
from collector.config import Pipeline, ServiceConfig
from collector.consumer import Consumer
from collector.fanout import fan_out
from collector.signals import Signal
from collector.telemetry import MetricsServer, Telemetry, component_logger

log = logging.getLogger("coldtail.service")


class GraphError(Exception):
    """The pipelines form a cycle through connectors."""


class Service:
    """Owns every component instance of one config. Implements the Host protocol."""

    def __init__(self, config: ServiceConfig, registry: Registry | None = None) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.status = "starting"
        self._order: list[tuple[str, object]] = []  # (label, component), downstream first
        self._exporters: dict[tuple[ComponentID, Signal], object] = {}
        self._connectors: dict[tuple[ComponentID, Signal], object] = {}
        self._entries: dict[str, Consumer] = {}
        self._building: set[str] = set()
        self._extensions: dict[ComponentID, object] = {}
        self.receivers: dict[ComponentID, object] = {}
        self._metrics_server: MetricsServer | None = None
        self._build()

    # --- Host ----------------------------------------------------------------------------

    def extension(self, id: ComponentID):
        return self._extensions.get(id)

    # --- graph ---------------------------------------------------------------------------

    def _settings(self, kind: Kind, id: ComponentID, pipeline: str = "") -> Settings:
        return Settings(
            id=id,
            kind=kind,
            telemetry=self.telemetry,
            pipeline=pipeline,
            logger=component_logger(kind.value, id, pipeline),
        )

    def _add(self, label: str, component) -> None:
        self._order.append((label, component))

    def _exporter(self, id: ComponentID, signal: Signal):
        key = (id, signal)
        if key not in self._exporters:
            factory, cfg = self.config.component(Kind.EXPORTER, id)
            self._exporters[key] = exp = factory.create(
                self._settings(Kind.EXPORTER, id), cfg, signal
            )
            self._add(f"exporter {id} ({signal})", exp)
        return self._exporters[key]

    def _connector(self, id: ComponentID, signal_in: Signal):
        key = (id, signal_in)
        if key not in self._connectors:
            factory, cfg = self.config.component(Kind.CONNECTOR, id)
            outputs = {}
            for out_signal in factory.signals.get(signal_in, {}):
                targets = [
                    self._entry(p)
                    for p in self.config.pipelines
                    if p.signal == out_signal and id in p.receivers
                ]
                if targets:
                    outputs[out_signal] = fan_out(targets)
            self._connectors[key] = conn = factory.create(
                self._settings(Kind.CONNECTOR, id), cfg, signal_in, outputs
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

    def _build(self) -> None:
        for pipeline in self.config.pipelines:
            self._entry(pipeline)
        receivers = self.config.components[Kind.RECEIVER]
        for rid in sorted(
            {r for p in self.config.pipelines for r in p.receivers if r in receivers}
        ):
            nexts = {}
            for signal in Signal:
                targets = [
                    self._entry(p)
                    for p in self.config.pipelines
                    if p.signal == signal and rid in p.receivers
                ]
                if targets:
                    nexts[signal] = fan_out(targets)
            factory, cfg = self.config.component(Kind.RECEIVER, rid)
            self.receivers[rid] = rec = factory.create(
                self._settings(Kind.RECEIVER, rid), cfg, nexts
            )
            self._add(f"receiver {rid}", rec)
        for eid in self.config.extensions:
            factory, cfg = self.config.component(Kind.EXTENSION, eid)
            self._extensions[eid] = factory.create(self._settings(Kind.EXTENSION, eid), cfg)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start extensions, then the graph downstream first (receivers last). On failure,
        stop whatever started and re-raise."""
        self.status = "starting"
        metrics = self.config.telemetry.metrics
        try:
            if metrics.level != "none":
                self._metrics_server = MetricsServer(self.telemetry, metrics.address)
                await self._metrics_server.start()
            for eid, ext in self._extensions.items():
                await self._start_one(f"extension {eid}", ext)
            for label, component in self._order:
                await self._start_one(label, component)
        except BaseException:
            await self.shutdown()
            raise
        self.status = "ready"
        log.info("everything is ready; begin running and processing data")

    async def _start_one(self, label: str, component) -> None:
        try:
            await component.start(self)
        except Exception as e:
            raise RuntimeError(f"cannot start {label}: {e}") from e

    async def flush(self, timeout: float) -> bool:
        """Push held data down the pipeline, upstream first, into the backends, without
        stopping anything: components that hold data offer `async flush()`. Returns False when
        `timeout` (seconds) ran out first. The Lambda extension flushes before each freeze."""
        try:
            async with asyncio.timeout(timeout):
                for _, component in reversed(self._order):
                    flush = getattr(component, "flush", None)
                    if flush is not None:
                        await flush()
        except TimeoutError:
            return False
        return True

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop receivers first and drain down the pipeline within `timeout` seconds (default
        service.shutdown_timeout)."""
        if self.status == "stopped":
            return
        self.status = "stopping"
        deadline = time.monotonic() + (self.config.shutdown_timeout if timeout is None else timeout)
        # Components built downstream first: stopping in reverse order drains upstream first.
        for label, component in reversed(self._order):
            await self._stop_one(label, component, deadline)
        for eid, ext in reversed(self._extensions.items()):
            await self._stop_one(f"extension {eid}", ext, deadline)
        if self._metrics_server:
            await self._metrics_server.shutdown()
        self.status = "stopped"

    async def _stop_one(self, label: str, component, deadline: float) -> None:
        # Components that never started still get shutdown() (it is safe without start) so
        # that a failed start releases what construction took; a minimum slice keeps a late
        # component from getting no time at all after an earlier one used the budget.
        budget = max(deadline - time.monotonic(), 0.1)
        try:
            await asyncio.wait_for(component.shutdown(), budget)
        except TimeoutError:
            log.error(
                "shutdown timed out; data it held may be lost", extra={"kv": {"component": label}}
            )
        except Exception:
            log.exception("shutdown failed", extra={"kv": {"component": label}})

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Start, wait for SIGTERM/SIGINT (or `stop`), then shut down."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGTERM, signals.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
            await stop.wait()
            log.info("received stop signal; shutting down")
        finally:
            for sig in (signals.SIGTERM, signals.SIGINT):
                loop.remove_signal_handler(sig)
            await self.shutdown()
        log.info("shutdown complete")
