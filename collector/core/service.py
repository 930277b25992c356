"""The pipeline service: runs the component graph of a ServiceConfig (collector.core.graph),
starting it downstream first and stopping it upstream first, draining within
`service.shutdown_timeout`."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import signal as signals
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from pydantic import BaseModel

from collector.core.component import ComponentID, Kind, Settings, Shared
from collector.core.config import ServiceConfig
from collector.core.config_types import parse_listen_endpoint
from collector.core.endpoints import ListenError, listen_reason, suggest_endpoint
from collector.core.graph import Graph
from collector.core.telemetry import (
    MetricsServer,
    Telemetry,
    coldtail_version,
    component_logger,
)
from collector.core.telemetry_push import TelemetryPush

log = logging.getLogger("coldtail.service")

_METRICS_KEY = "service::telemetry::metrics::address"
# An address in the message of an OSError from asyncio's create_server: ('127.0.0.1', 4318).
_ASYNCIO_ADDRESS = re.compile(r"\('([^']*)', (\d+)")


class Service:
    """Runs the component graph of one config: starts it downstream first, stops it upstream
    first, flushes it. Owns what the components share (telemetry, `shared`) and implements the
    Host protocol."""

    def __init__(
        self, config: ServiceConfig, sources: Sequence[str] = (), overrides: Sequence[str] = ()
    ) -> None:
        """`sources` (the config's) and `overrides` (the keys --set changed) are for the
        start-up banner."""
        self.config = config
        self.sources, self.overrides = list(sources), list(overrides)
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
        resource: dict[str, str | None] = {
            "service.name": "coldtail",
            "service.instance.id": self._instance_id,
            "service.version": coldtail_version(),
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
        """Start extensions, then the graph downstream first (receivers last), then log the
        banner. On failure, stop whatever started and raise RuntimeError saying what failed in
        one line (for an address that cannot be listened on: which, and the key to change).

        Info lines logged meanwhile are held back: a failed start drops them, so that no line
        says something listens that no longer does; a good one folds the listeners' lines into
        the banner."""
        with _HeldBack() as held:
            await self._start()
        self._banner(held)
        log.info("everything is ready; begin running and processing data")

    async def _start(self) -> None:
        self.status = "starting"
        metrics = self.config.telemetry.metrics
        try:
            if metrics.served:
                self._metrics_server = MetricsServer(
                    self.telemetry, metrics.address, self.resource()
                )
                try:
                    await self._metrics_server.start()
                except ListenError as e:
                    raise RuntimeError(self._metrics_conflict(e)) from e
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

    async def _start_one(self, label: str, component) -> None:
        try:
            await component.start(self)
        except Exception as e:
            failure = _listen_failure(e)
            conflict = self._listen_conflict(label, failure) if failure else None
            if conflict:
                raise RuntimeError(conflict) from e
            raise RuntimeError(f"cannot start {label}: {e}") from e

    # --- addresses that cannot be listened on --------------------------------------------

    def _listen_conflict(self, label: str, failure: _ListenFailure) -> str | None:
        """The line saying which config key to change so that the component of `label` can
        listen; None when no key of its config holds the endpoint."""
        # The graph's labels start with the kind and the id: "exporter otlp/a (traces)".
        kind_name, _, rest = label.partition(" ")
        kind, cid = Kind(kind_name), ComponentID.parse(rest.split(" ", 1)[0])
        _, config = self.config.component(kind, cid)
        listeners = dict(_listen_endpoints(config))
        key = failure.key
        if key is None:
            matches = [k for k, v in listeners.items() if _same_address(v, failure.endpoint)]
            if not matches and len(listeners) == 1:
                matches = list(listeners)
            if not matches:
                return None
            key = matches[0]
        return _conflict_line(
            listeners.get(key, failure.endpoint),
            failure.reason,
            failure.transport,
            f"{kind.section}::{cid}::{key}",
        )

    def _metrics_conflict(self, error: ListenError) -> str:
        metrics = self.config.telemetry.metrics
        pulls = [i for i, r in enumerate(metrics.readers) if r.pull is not None]
        if not pulls:
            return _conflict_line(error.endpoint, error.reason, "tcp", _METRICS_KEY)
        # The Helm chart's form: only the port is a key of its own, in a list --set cannot
        # reach.
        key = f"service::telemetry::metrics::readers::{pulls[0]}::pull::exporter::prometheus::port"
        other = suggest_endpoint(error.endpoint, reason=error.reason).rpartition(":")[2]
        return f"cannot listen on {error.endpoint} ({error.reason}): set {key}, e.g. to {other}"

    # --- the banner ----------------------------------------------------------------------

    def _banner(self, held: _HeldBack) -> None:
        """Logs the held-back lines, but the listeners', which make one block with the
        version, the config's sources, the pipelines and the extensions."""
        listening: list[dict[str, str]] = []
        for record in held.records:
            listener = _listener(record)
            if listener is None:
                held.release(record)
            else:
                listening.append(listener)
        layout = self.layout()
        version = coldtail_version()
        kv = {
            "version": version,
            "config": self.sources,
            "set": self.overrides,
            **layout,
            "listening": listening,
        }
        block = self._banner_block(layout, listening)
        log.info(f"coldtail {version} started", extra={"kv": kv, "block": block})

    def _banner_block(self, layout: dict, listening: list[dict[str, str]]) -> list[str]:
        def labelled(label: str, *lines: str) -> list[str]:
            # The label on the first line, the others aligned under it; empty lines dropped.
            kept = [line for line in lines if line]
            return [f"{label if n == 0 else '':<12}{line}" for n, line in enumerate(kept)]

        flows = []
        for pid, pipeline in layout["pipelines"].items():
            parts = [", ".join(pipeline[p]) for p in ("receivers", "processors", "exporters")]
            flows.append(f"{pid}: {' -> '.join(part for part in parts if part)}")
        return [
            *labelled("config:", ", ".join(self.sources)),
            *labelled("set:", ", ".join(self.overrides)),
            *labelled("pipelines:", *flows),
            *labelled("extensions:", ", ".join(layout["extensions"])),
            *labelled("listening:", *(f"{lst['address']}  {lst['by']}" for lst in listening)),
        ]

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
        """Start, wait for SIGTERM/SIGINT (or `stop`), then shut down. A second signal ends
        the process at once, with exit code 128 + the signal's number, as a shell reports a
        process a signal killed: the collector's main loop only."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_signal(sig: int) -> None:
            received.append(sig)
            if len(received) > 1:
                log.warning(
                    "received a second stop signal; exiting now, without draining what the "
                    "pipelines hold"
                )
                os._exit(128 + sig)
            stop.set()

        for sig in (signals.SIGTERM, signals.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.start()
            await stop.wait()
            log.info("received stop signal; shutting down")
        finally:
            try:
                await self.shutdown()
            finally:
                for sig in (signals.SIGTERM, signals.SIGINT):
                    loop.remove_signal_handler(sig)
        log.info("shutdown complete")


class _HeldBack(logging.Filter):
    """Holds back the records under warning level that the handlers of the `coldtail` logger
    get, from entering to leaving; `records` keeps them in order, each once."""

    def __init__(self) -> None:
        super().__init__()
        self.handlers = list(logging.getLogger("coldtail").handlers)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        if id(record) not in self._seen:  # each handler sees the record
            self._seen.add(id(record))
            self.records.append(record)
        return False

    def __enter__(self) -> _HeldBack:
        for handler in self.handlers:
            handler.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for handler in self.handlers:
            handler.removeFilter(self)

    def release(self, record: logging.LogRecord) -> None:
        """Hand a held record to the handlers it was held from."""
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _listener(record: logging.LogRecord) -> dict[str, str] | None:
    """What a component's line saying it listens tells (its `endpoint` or `url` field), for
    the banner; None for other lines."""
    kv = getattr(record, "kv", None) or {}
    address = kv.get("endpoint") or kv.get("url")
    message = record.getMessage()
    if not isinstance(address, str) or not re.search(r"\b(listening|served|serving)\b", message):
        return None
    what = re.sub(r"^serving |\s*\b(listening|served)$", "", message)
    owner = f"{kv['kind']} {kv['name']}" if "kind" in kv and "name" in kv else ""
    if owner and what.lower().replace(" ", "_") != kv["name"]:
        owner += f" ({what})"
    return {"address": address, "by": owner or what}


class _ListenFailure(NamedTuple):
    endpoint: str
    reason: str
    transport: str
    key: str | None  # within the component's config, when the listener said


def _listen_failure(error: BaseException) -> _ListenFailure | None:
    """What a listener that could not bind says, when `error` (or one it came from) is one."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ListenError):
            return _ListenFailure(seen.endpoint, seen.reason, seen.transport, seen.key)
        if isinstance(seen, OSError) and seen.errno in (
            errno.EADDRINUSE,
            errno.EACCES,
            errno.EADDRNOTAVAIL,
        ):
            # Raised by asyncio for a listener that does not say more.
            address = _ASYNCIO_ADDRESS.search(str(seen))
            if address:
                host, port = address.groups()
                host = f"[{host}]" if ":" in host else host
                return _ListenFailure(f"{host}:{port}", listen_reason(seen), "tcp", None)
        seen = seen.__cause__ or seen.__context__
    return None


def _listen_endpoints(model: BaseModel, path: str = "") -> Iterator[tuple[str, str]]:
    """(key path, endpoint) of every listen endpoint (a ListenEndpoint field) in `model`."""
    for name, field in type(model).model_fields.items():
        value = getattr(model, name, None)
        key = f"{path}{field.alias or name}"
        if any(getattr(m, "func", None) is parse_listen_endpoint for m in field.metadata):
            if isinstance(value, str):
                yield key, value
        elif isinstance(value, BaseModel):
            yield from _listen_endpoints(value, f"{key}::")
        elif isinstance(value, list | dict):
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, item in items:
                if isinstance(item, BaseModel):
                    yield from _listen_endpoints(item, f"{key}::{k}::")


def _same_address(a: str, b: str) -> bool:
    return a.rpartition(":")[2] == b.rpartition(":")[2] and (
        a.rpartition(":")[0].strip("[]") == b.rpartition(":")[0].strip("[]")
    )


def _conflict_line(endpoint: str, reason: str, transport: str, key: str) -> str:
    address = f"udp {endpoint}" if transport == "udp" else endpoint
    other = suggest_endpoint(endpoint, transport, reason)
    return f"cannot listen on {address} ({reason}): set {key}, e.g. --set {key}={other}"
