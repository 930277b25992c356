"""The Lambda Telemetry API (2022-07-01) of one execution environment, with events of the schema
2022-12-13.

A registered extension subscribes with `PUT /2022-07-01/telemetry`: `schemaVersion`, `types`
(platform, function, extension), `buffering` (maxItems 1,000..10,000, default 1,000; maxBytes
262,144..1,048,576, default 262,144; timeoutMs 25..30,000, default 1,000) and an HTTP
`destination`, which must be `http://sandbox.localdomain:PORT` as on Lambda (see `sandbox`: the
name is this machine inside the environment). Each subscription buffers its events and
a background task POSTs them as a JSON array once the oldest waited timeoutMs, or maxItems or
maxBytes are reached; a failed POST is retried with backoff. Deliveries wait while the
environment is frozen, so an invocation's last events (its platform.report) reach subscribers
in the next invocation or at shutdown, as on Lambda. Events of init are kept for extensions that
subscribe during init, so that they also get platform.initStart.

Under Lambda Managed Instances (`managed_instances`) the events follow AWS's emulator of them:
platform.start carries functionArn, each invocation ends with platform.report whose metrics are
durationMs alone and which carries the responseLatency and responseDuration spans, and there is
no platform.runtimeDone. Lambda documents that these environments require the schema
2025-01-29; we refuse any other (400), the conservative reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from emulator.extensions_api import Extension
from emulator.runtime_api import Invocation
from emulator.sandbox import SANDBOX_ADDRESS, SANDBOX_HOST

PATH = "/2022-07-01/telemetry"
SCHEMA_VERSIONS = frozenset({"2022-07-01", "2022-12-13", "2025-01-29"})
MANAGED_INSTANCES_SCHEMA_VERSION = "2025-01-29"
TYPES = frozenset({"platform", "function", "extension"})
# name: (default, minimum, maximum)
BUFFERING = {
    "maxItems": (1000, 1000, 10_000),
    "maxBytes": (262_144, 262_144, 1_048_576),
    "timeoutMs": (1000, 25, 30_000),
}
# A subscriber that does not keep up loses events beyond twice its buffer, as Lambda drops
# records to bound its memory (and says so with platform.logsDropped).
_BACKLOG_FACTOR = 2
_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds; the last one repeats


def timestamp(epoch: float | None = None) -> str:
    """ISO 8601 in UTC with milliseconds, as the events' `time`."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _category(event_type: str) -> str:
    return "platform" if event_type.startswith("platform.") else event_type


@dataclass
class Subscription:
    """One extension's subscription and the events buffered for it."""

    name: str
    types: frozenset[str]
    url: URL
    max_items: int
    max_bytes: int
    timeout_ms: int
    buffer: list[dict[str, Any]] = field(default_factory=list)
    buffered_bytes: int = 0
    oldest: float = 0.0  # monotonic time the oldest buffered event was added
    dropped_records: int = 0
    dropped_bytes: int = 0
    added: asyncio.Event = field(default_factory=asyncio.Event)
    drained: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, event: dict[str, Any], size: int) -> None:
        if _category(event["type"]) not in self.types:
            return
        if (
            len(self.buffer) >= _BACKLOG_FACTOR * self.max_items
            or self.buffered_bytes + size > _BACKLOG_FACTOR * self.max_bytes
        ):
            self.dropped_records += 1
            self.dropped_bytes += size
            return
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(event)
        self.buffered_bytes += size
        self.drained.clear()
        self.added.set()

    def wait_s(self, flushing: bool) -> float | None:
        """Seconds until the buffer is due for delivery; None when it is empty."""
        if not self.buffer:
            return None
        if flushing or len(self.buffer) >= self.max_items or self.buffered_bytes >= self.max_bytes:
            return 0.0
        return max(self.oldest + self.timeout_ms / 1000 - time.monotonic(), 0.0)

    def take(self) -> list[dict[str, Any]]:
        batch, self.buffer, self.buffered_bytes = self.buffer, [], 0
        if self.dropped_records:
            record = {
                "droppedRecords": self.dropped_records,
                "droppedBytes": self.dropped_bytes,
                "reason": "The subscriber did not keep up: its buffer was full.",
            }
            batch.append({"time": timestamp(), "type": "platform.logsDropped", "record": record})
            self.dropped_records = self.dropped_bytes = 0
        return batch


def _buffering(body: dict[str, Any], errors: list[str]) -> dict[str, int]:
    requested = body.get("buffering") or {}
    if not isinstance(requested, dict):
        errors.append("buffering must be an object")
        requested = {}
    values = {}
    for name, (default, minimum, maximum) in BUFFERING.items():
        value = requested.get(name, default)
        if not isinstance(value, int) or not minimum <= value <= maximum:
            errors.append(f"buffering.{name} must be an integer in [{minimum}, {maximum}]")
        values[name] = value
    return values


def _destination(body: dict[str, Any], errors: list[str]) -> URL | None:
    destination = body.get("destination")
    if not isinstance(destination, dict):
        errors.append("destination is required")
        return None
    if destination.get("protocol") != "HTTP":
        errors.append("destination.protocol must be HTTP (TCP is not emulated)")
    try:
        url = URL(str(destination.get("URI", "")))
    except ValueError:
        url = URL()
    if url.scheme != "http" or not url.host:
        errors.append("destination.URI must be an http:// URI")
        return None
    if url.host != SANDBOX_HOST:
        errors.append(f"destination.URI host must be {SANDBOX_HOST}, not {url.host}")
    if url.explicit_port is None:
        errors.append("URI port is not provided")
    return url.with_host(SANDBOX_ADDRESS)


class TelemetryAPI:
    """Subscriptions and event delivery for one environment. `caller` maps a request to the
    registered extension it identifies (None when unknown). Not thread-safe: use it from the
    event loop of the environment's server. `close` ends every delivery. With
    `subscription_status` set, every valid subscription is answered with that status instead
    (a fault as Lambda may answer it), and nothing is subscribed. Events whose type is in
    `withheld` are never delivered (a fault: they are lost on the way). `managed_instances`:
    the subscriptions and events of Lambda Managed Instances (see the module)."""

    def __init__(
        self,
        caller: Callable[[web.Request], Extension | None],
        *,
        managed_instances: bool = False,
    ) -> None:
        self._caller = caller
        self.managed_instances = managed_instances
        self._subscriptions: dict[str, Subscription] = {}  # by extension id
        self._deliveries: dict[str, asyncio.Task[None]] = {}
        self._init_events: list[tuple[dict[str, Any], int]] | None = []
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._flushing = False
        self._session: aiohttp.ClientSession | None = None
        self.subscription_status: int | None = None
        self.withheld: frozenset[str] = frozenset()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [web.put(PATH, self._subscribe)]

    # --- lifecycle --------------------------------------------------------------------------

    def end_init(self) -> None:
        """Init is over: its events are no longer kept for later subscribers."""
        self._init_events = None

    def freeze(self) -> None:
        self._thawed.clear()

    def thaw(self) -> None:
        self._thawed.set()

    async def flush(self, timeout: float) -> None:
        """Deliver everything buffered now; give up after `timeout` seconds."""
        self._flushing = True
        for subscription in self._subscriptions.values():
            subscription.added.set()
        try:
            waits = [s.drained.wait() for s in self._subscriptions.values()]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), max(timeout, 0.0))
        finally:
            self._flushing = False

    async def close(self) -> None:
        """Stop delivering; what is still buffered is lost. Idempotent."""
        deliveries = list(self._deliveries.values())
        self._deliveries.clear()
        for task in deliveries:
            task.cancel()
        await asyncio.gather(*deliveries, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- events -----------------------------------------------------------------------------

    def record(self, event_type: str, record: Any, epoch: float | None = None) -> None:
        """Buffer one event for the subscribers of its category (platform, function or
        extension); `epoch` is when it happened (default: now)."""
        if event_type in self.withheld:
            return
        event = {"time": timestamp(epoch), "type": event_type, "record": record}
        size = len(json.dumps(event))
        if self._init_events is not None:
            self._init_events.append((event, size))
        for subscription in self._subscriptions.values():
            subscription.add(event, size)

    def init_start(self, init_type: str, function_name: str, version: str) -> None:
        self.record(
            "platform.initStart",
            {
                "initializationType": init_type,
                "phase": "init",
                "functionName": function_name,
                "functionVersion": version,
            },
        )

    def init_done(
        self, init_type: str, status: str, error_type: str | None, duration_ms: float
    ) -> None:
        """platform.initRuntimeDone and platform.initReport."""
        outcome = {"initializationType": init_type, "phase": "init", "status": status}
        if error_type:
            outcome["errorType"] = error_type
        self.record("platform.initRuntimeDone", outcome)
        self.record("platform.initReport", {**outcome, "metrics": {"durationMs": duration_ms}})

    def restore_start(self, function_name: str, version: str) -> None:
        record = {"functionName": function_name, "functionVersion": version}
        self.record("platform.restoreStart", record)

    def restore_done(self, status: str, error_type: str | None, duration_ms: float) -> None:
        """platform.restoreRuntimeDone and platform.restoreReport."""
        outcome = {"status": status}
        if error_type:
            outcome["errorType"] = error_type
        self.record("platform.restoreRuntimeDone", outcome)
        self.record("platform.restoreReport", {**outcome, "metrics": {"durationMs": duration_ms}})

    def invoke_start(self, invocation: Invocation, version: str) -> None:
        record = {
            "requestId": invocation.request_id,
            "version": version,
            "tracing": _tracing(invocation),
        }
        if self.managed_instances:
            record["functionArn"] = invocation.function_arn
        self.record("platform.start", record)

    def runtime_done(
        self,
        invocation: Invocation,
        status: str,
        error_type: str | None,
        *,
        started: float,
        duration_ms: float,
        response_started: float | None = None,
        produced_bytes: int | None = None,
    ) -> None:
        """platform.runtimeDone. `started` and `response_started` (when the runtime began
        posting its response) are epoch seconds."""
        metrics: dict[str, Any] = {"durationMs": duration_ms}
        record = _outcome(invocation, status, error_type, metrics)
        if produced_bytes is not None:
            metrics["producedBytes"] = produced_bytes
        if response_started is not None:
            record["spans"] = _response_spans(started, response_started, duration_ms)
        self.record("platform.runtimeDone", record)

    def report(
        self,
        invocation: Invocation,
        status: str,
        error_type: str | None,
        metrics: dict[str, Any],
    ) -> None:
        """platform.report with `metrics` (durationMs, billedDurationMs, memorySizeMB,
        maxMemoryUsedMB and, after a cold start, initDurationMs, or after a restore from a
        snapshot, restoreDurationMs and billedRestoreDurationMs)."""
        self.record("platform.report", _outcome(invocation, status, error_type, metrics))

    def managed_report(
        self,
        invocation: Invocation,
        status: str,
        error_type: str | None,
        *,
        started: float,
        duration_ms: float,
        response_started: float | None = None,
    ) -> None:
        """platform.report under Lambda Managed Instances: metrics are durationMs alone (3
        decimals); the response spans are on it when the runtime responded. `started` and
        `response_started` are epoch seconds."""
        metrics = {"durationMs": round(duration_ms, 3)}
        record = _outcome(invocation, status, error_type, metrics)
        if response_started is not None:
            record["spans"] = _response_spans(started, response_started, duration_ms)
        self.record("platform.report", record)

    def extension_registered(self, extension: Extension) -> None:
        record = {"name": extension.name, "state": "Ready", "events": sorted(extension.events)}
        self.record("platform.extension", record)

    def log(self, category: str, line: str) -> None:
        """A log line of the function (`function`) or of an extension (`extension`)."""
        self.record(category, line)

    # --- subscription and delivery ----------------------------------------------------------

    async def _subscribe(self, request: web.Request) -> web.Response:
        extension = self._caller(request)
        if extension is None:
            message = "Invalid extension identifier"
            error = {"errorMessage": message, "errorType": "Telemetry.InvalidExtensionIdentifier"}
            return web.json_response(error, status=403)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        errors: list[str] = []
        versions = {MANAGED_INSTANCES_SCHEMA_VERSION} if self.managed_instances else SCHEMA_VERSIONS
        if body.get("schemaVersion") not in versions:
            errors.append(f"schemaVersion must be one of {sorted(versions)}")
        types = body.get("types")
        if not isinstance(types, list) or not types or not set(types) <= TYPES:
            errors.append(f"types should be a non-empty list of {sorted(TYPES)}")
            types = []
        buffering = _buffering(body, errors)
        url = _destination(body, errors)
        if errors or url is None:
            error = {"errorMessage": "; ".join(errors), "errorType": "ValidationError"}
            return web.json_response(error, status=400)
        if self.subscription_status is not None:
            error = {"errorMessage": "subscription failed", "errorType": "Telemetry.Failure"}
            return web.json_response(error, status=self.subscription_status)
        subscription = Subscription(
            extension.name,
            frozenset(types),
            url,
            buffering["maxItems"],
            buffering["maxBytes"],
            buffering["timeoutMs"],
        )
        if (previous := self._deliveries.pop(extension.id, None)) is not None:
            previous.cancel()
        self._subscriptions[extension.id] = subscription
        self._deliveries[extension.id] = asyncio.create_task(self._deliver(subscription))
        for event, size in self._init_events or ():
            subscription.add(event, size)
        record = {"name": extension.name, "state": "Subscribed", "types": sorted(types)}
        self.record("platform.telemetrySubscription", record)
        return web.json_response("OK")

    async def _deliver(self, subscription: Subscription) -> None:
        """Post each batch once it is due and the environment is thawed, one at a time."""
        while True:
            subscription.added.clear()
            wait_s = subscription.wait_s(self._flushing)
            if wait_s is None:
                subscription.drained.set()
            if wait_s != 0.0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscription.added.wait(), wait_s)
                continue
            await self._thawed.wait()
            await self._post(subscription.url, subscription.take())

    async def _post(self, url: URL, batch: list[dict[str, Any]]) -> None:
        """POST until the subscriber accepts (any 2xx); no timeout, as a subscriber may be
        frozen with the environment in the middle of a request."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        body = json.dumps(batch).encode()
        headers = {"Content-Type": "application/json"}
        for attempt in itertools.count():
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self._session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.ok:
                        return
            await asyncio.sleep(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)])


def _outcome(
    invocation: Invocation, status: str, error_type: str | None, metrics: dict[str, Any]
) -> dict[str, Any]:
    """The record of an invocation's runtimeDone or report."""
    record = {
        "requestId": invocation.request_id,
        "status": status,
        "metrics": metrics,
        "tracing": _tracing(invocation),
    }
    if error_type:
        record["errorType"] = error_type
    return record


def _tracing(invocation: Invocation) -> dict[str, str]:
    return {"type": "X-Amzn-Trace-Id", "value": invocation.trace_header}


def _response_spans(started: float, response_started: float, duration_ms: float) -> list[dict]:
    """responseLatency (event sent to the runtime's first response byte) and responseDuration
    (the rest of `duration_ms`); times in epoch seconds."""
    latency_ms = (response_started - started) * 1000
    return [
        {"name": "responseLatency", "start": timestamp(started), "durationMs": latency_ms},
        {
            "name": "responseDuration",
            "start": timestamp(response_started),
            "durationMs": max(duration_ms - latency_ms, 0.0),
        },
    ]
