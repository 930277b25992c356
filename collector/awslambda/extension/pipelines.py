"""The collector's pipelines, loaded off Lambda's init path and run on their own event loop in
a daemon thread; once they started, the forwarder hands them the front door's queue."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from collector.awslambda.extension import say
from collector.awslambda.extension.forwarder import Forwarder
from collector.awslambda.extension.plan import Listener

if TYPE_CHECKING:
    import asyncio

    from collector.core.service import Service

log = logging.getLogger("coldtail.lambda_extension")


class Pipelines:
    """Validates the raw config and runs the pipelines. `error` is what failed their start;
    the forwarder then drops what arrives, so that the front door's queue stays bounded."""

    def __init__(self, raw: dict, listeners: list[Listener], forwarder: Forwarder) -> None:
        self.raw = raw
        self.listeners = listeners
        self.forwarder = forwarder
        self.error: BaseException | None = None
        self.service: Service | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coldtail-collector", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """Wait until the pipelines run; False when they failed to start or `timeout`
        (seconds) ran out first."""
        return self._ready.wait(max(timeout, 0)) and self.service is not None

    def call(self, coroutine_function, timeout: float):
        """Run `coroutine_function()` on the pipelines' loop and wait up to `timeout` seconds
        (TimeoutError after that)."""
        import asyncio

        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine_function(), self.loop)
        try:
            return future.result(max(timeout, 0))
        except TimeoutError:
            future.cancel()
            raise

    def flush(self, timeout: float) -> bool:
        """Push what the pipelines hold into the backends; False when `timeout` (seconds) ran
        out first."""
        assert self.service is not None
        service = self.service
        try:
            return self.call(lambda: service.flush(max(timeout, 0.01)), max(timeout, 0.01) + 0.5)
        except TimeoutError:
            return False

    def stop(self, timeout: float) -> None:
        """Stop the pipelines, draining them within `timeout` seconds, and their loop."""
        if self.service is None or self.loop is None:
            return
        service = self.service
        try:
            self.call(lambda: service.shutdown(timeout=max(timeout, 0.01)), timeout + 0.2)
        except TimeoutError:
            log.error("the collector did not stop before the shutdown deadline")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(0.5)

    def _run(self) -> None:
        try:
            loop, service = self._load()
        except BaseException as e:
            self.error = e
            say(f"the collector could not start, the function's telemetry is dropped: {e}")
            self.forwarder.start(None)
            self._ready.set()
            return
        self.loop, self.service = loop, service
        self._count_losses(service)
        targets = {}
        for rid, receiver in service.receivers.items():
            endpoint = getattr(receiver, "http_endpoint", None) or getattr(
                receiver, "endpoint", None
            )
            if isinstance(endpoint, str):
                targets[str(rid)] = endpoint
        self.forwarder.start(
            {lst.name: targets[lst.name] for lst in self.listeners if lst.name in targets}
        )
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def _count_losses(self, service: Service) -> None:
        from prometheus_client import Gauge

        registry = service.telemetry.registry
        forwarder = self.forwarder
        Gauge(
            "otelcol_lambda_extension_dropped_requests",
            "Requests the extension answered and then lost: refused by the collector's "
            "receiver, or received while the collector could not run.",
            registry=registry,
        ).set_function(lambda: forwarder.dropped)
        Gauge(
            "otelcol_lambda_extension_refused_requests",
            "Requests answered 503 for want of room in the extension's queue (their senders "
            "keep them and try again).",
            registry=registry,
        ).set_function(lambda: forwarder.front_door.refused)

    def _load(self) -> tuple[asyncio.AbstractEventLoop, Service]:
        import asyncio

        from collector.core.config import validate
        from collector.core.service import Service
        from collector.core.telemetry import setup_logging
        from collector.registry import registry

        config = validate(self.raw, registry())
        setup_logging(config.telemetry.logs.level, config.telemetry.logs.encoding)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            service = Service(config)
            loop.run_until_complete(service.start())
        except BaseException:
            loop.close()
            raise
        log.info("collector started")
        return loop, service
