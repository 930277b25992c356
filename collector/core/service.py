"""The pipeline service: runs the component graph of a ServiceConfig (collector.core.graph),
starting it downstream first and stopping it upstream first, draining within
`service.shutdown_timeout`."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import signal as signals
import time
import uuid

from collector.core.component import ComponentID, Kind, Settings, Shared
from collector.core.config import ServiceConfig
from collector.core.graph import Graph
from collector.core.telemetry import MetricsServer, Telemetry, component_logger
from collector.core.telemetry_push import TelemetryPush

log = logging.getLogger("coldtail.service")


class Service:
    """Runs the component graph of one config: starts it downstream first, stops it upstream
    first, flushes it. Owns what the components share (telemetry, `shared`) and implements the
    Host protocol."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.shared = Shared()
        self.status = "starting"
        self._instance_id = str(uuid.uuid4())
        self._metrics_server: MetricsServer | None = None
        self._push: TelemetryPush | None = None
        self.graph = Graph(config, self._settings)
        self.receivers = self.graph.receivers

    def _settings(self, kind: Kind, id: ComponentID, pipeline: str) -> Settings:
        return Settings(
            id=id,
            kind=kind,
            telemetry=self.telemetry,
            pipeline=pipeline,
            logger=component_logger(kind.value, id, pipeline),
            shared=self.shared,
        )

    def resource(self) -> dict[str, str]:
        """The own telemetry's resource: defaults, then service::telemetry::resource."""
        try:
            version = importlib.metadata.version("coldtail")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        resource: dict[str, str | None] = {
            "service.name": "coldtail",
            "service.instance.id": self._instance_id,
            "service.version": version,
            **self.config.telemetry.resource,
        }
        return {k: v for k, v in resource.items() if v is not None}

    # --- Host ----------------------------------------------------------------------------

    def extension(self, id: ComponentID):
        return self.graph.extensions.get(id)

    def layout(self) -> dict:
        return {
            "pipelines": {
                p.id: {
                    "receivers": [str(c) for c in p.receivers],
                    "processors": [str(c) for c in p.processors],
                    "exporters": [str(c) for c in p.exporters],
                }
                for p in self.config.pipelines
            },
            "extensions": [str(e) for e in self.config.extensions],
        }

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start extensions, then the graph downstream first (receivers last). On failure,
        stop whatever started and re-raise."""
        self.status = "starting"
        metrics = self.config.telemetry.metrics
        try:
            if metrics.served:
                self._metrics_server = MetricsServer(
                    self.telemetry, metrics.address, self.resource()
                )
                await self._metrics_server.start()
            if metrics.level != "none" or self.config.telemetry.logs.processors:
                self._push = TelemetryPush(
                    self.telemetry.registry,
                    self.resource(),
                    metrics.periodic if metrics.level != "none" else [],
                    self.config.telemetry.logs.processors,
                )
                await self._push.start()
            for eid, ext in self.graph.extensions.items():
                await self._start_one(f"extension {eid}", ext)
            for label, component in self.graph.order:
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
                for _, component in reversed(self.graph.order):
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
        for label, component in reversed(self.graph.order):
            await self._stop_one(label, component, deadline)
        for eid, ext in reversed(self.graph.extensions.items()):
            await self._stop_one(f"extension {eid}", ext, deadline)
        if self._metrics_server:
            await self._metrics_server.shutdown()
        if self._push is not None:
            await self._push.shutdown()
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
