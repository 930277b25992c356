"""The extension's lifecycle: init, one turn per INVOKE, SHUTDOWN (see the package docstring)."""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import UTC, datetime

from collector.awslambda.extension import say
from collector.awslambda.extension.flushing import BACKGROUND, Flusher, Strategy, parse_strategy
from collector.awslambda.extension.forwarder import Forwarder
from collector.awslambda.extension.front_door import TELEMETRY, Delivery, FrontDoor
from collector.awslambda.extension.lambda_api import LambdaAPI, LambdaAPIError
from collector.awslambda.extension.pipelines import Pipelines
from collector.awslambda.extension.plan import TELEMETRY_SCHEMA_VERSION_MANAGED, Listener, plan

LAYER_CONFIG = "/opt/config/lambda-extension.yaml"  # the launcher sets COLDTAIL_CONFIG
MANAGED_INSTANCES = "lambda-managed-instances"
# Left of a deadline for the last requests to Lambda once the pipelines are drained.
_DEADLINE_MARGIN_S = 0.1
# SHUTDOWN reasons of an environment Lambda ended in the middle of an invocation.
_ENDED_BY_LAMBDA = frozenset({"failure", "timeout"})
# How long SHUTDOWN waits for Lambda's report of such an invocation, at most (seconds).
_LOST_REPORT_WAIT_S = 0.2

log = logging.getLogger("coldtail.lambda_extension")


class InitError(Exception):
    """What fails the function's init, with COLDTAIL_FAIL_INIT_ON_ERROR=true only."""


class Settings:
    """The extension's own settings, from its environment: COLDTAIL_CONFIG (the config file),
    COLDTAIL_FLUSH (see `flushing`), COLDTAIL_FAIL_INIT_ON_ERROR (`true`: what goes wrong
    before init ends fails the function's init instead of being logged); and whether this is
    a Lambda Managed Instances environment (AWS_LAMBDA_INITIALIZATION_TYPE), which serves
    invocations concurrently and is never frozen: extensions get no INVOKE events there, and the
    Telemetry API takes its newer schema only."""

    def __init__(self, environ=os.environ) -> None:
        self.config = environ.get("COLDTAIL_CONFIG") or LAYER_CONFIG
        self.managed = environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == MANAGED_INSTANCES
        self.fail_init_on_error = (
            environ.get("COLDTAIL_FAIL_INIT_ON_ERROR", "").strip().lower() == "true"
        )
        try:
            self.flush = parse_strategy(environ.get("COLDTAIL_FLUSH", ""))
        except ValueError as e:
            say(f"{e}; flushing in the background")
            self.flush = Strategy(BACKGROUND)


class Extension:
    """Serves Lambda's events until SHUTDOWN. `pipelines` is None when the config could not be
    read: the extension then only answers Lambda."""

    def __init__(
        self,
        api: LambdaAPI,
        front_door: FrontDoor,
        forwarder: Forwarder,
        pipelines: Pipelines | None,
        telemetry: str | None,
        strategy: Strategy,
    ) -> None:
        self.api = api
        self.front_door = front_door
        self.forwarder = forwarder
        self.pipelines = pipelines
        self.telemetry = telemetry  # the subscribed lambda_telemetry receiver, if any
        self.flusher = (
            None
            if pipelines is None
            else Flusher(strategy, front_door, forwarder, pipelines, telemetry is not None)
        )
        self._first = True
        self._last_invoke: dict | None = None
        self._last_invoke_epoch = 0.0

    def run(self) -> int:
        """Serve events until SHUTDOWN; the exit status."""
        if self.pipelines is not None:
            # They load while Lambda runs the first invocation; init ends with next_event.
            self.pipelines.start()
        while True:
            event = self.api.next_event()
            remaining = event.get("deadlineMs", 0) / 1000 - _DEADLINE_MARGIN_S - time.time()
            deadline = time.monotonic() + remaining
            if event.get("eventType") == "SHUTDOWN":
                reason = str(event.get("shutdownReason", ""))
                log.info("shutdown", extra={"kv": {"reason": reason}})
                self.shutdown(deadline, reason)
                return 0
            self._last_invoke, self._last_invoke_epoch = event, time.time()
            try:
                self.invocation(str(event.get("requestId", "")), deadline)
            except Exception as e:
                say(f"an invocation's turn failed, carrying on: {e!r}")

    def invocation(self, request_id: str, deadline: float) -> None:
        """Return when the strategy's flush after the invocation is done (at once for the
        strategies that flush in the background or not at all)."""
        if self.flusher is None:
            return
        if self._first:
            # The collector loads once per environment: waiting for it here keeps its loading
            # out of the next invocations, which it would slow down.
            self._first = False
            assert self.pipelines is not None
            self.pipelines.wait(deadline - time.monotonic())
        self.flusher.after_invocation(request_id, deadline)

    def shutdown(self, deadline: float, reason: str = "spindown") -> None:
        """Drain everything into the backends and stop, by `deadline`. After a failure or a
        timeout, the last invocation may have left no trace at all: see `_report_lost`."""
        try:
            if reason in _ENDED_BY_LAMBDA and self._last_invoke is not None:
                self._report_lost(self._last_invoke, reason, deadline)
            if self.flusher is not None and self.pipelines is not None:
                self.flusher.stop()
                if not self.flusher.drain(deadline):
                    log.warning("the front door's queue was not forwarded before SHUTDOWN")
                self.pipelines.stop(deadline - time.monotonic())
        finally:
            self.forwarder.stop()
            self.front_door.close()
            if self.forwarder.dropped:
                say(f"{self.forwarder.dropped} requests of this environment were lost")

    def _report_lost(self, invoke: dict, reason: str, deadline: float) -> None:
        """The invocation Lambda ended (`reason` failure or timeout) made no span the extension
        has, nor a report of Lambda's that says so (a runtime that died may get none): give
        the lambda_telemetry receiver what is known, as Lambda's own events would have told
        it, so that it makes the invocation's synthetic span."""
        request_id = str(invoke.get("requestId", ""))
        wait = min(_LOST_REPORT_WAIT_S, (deadline - time.monotonic()) / 4)
        if not request_id or self.front_door.wait_invocation_over(request_id, wait):
            return
        if self.telemetry is None:
            say(f"invocation {request_id} ended in {reason} and left no trace")
            return
        now = time.time()
        start = {"requestId": request_id, "tracing": invoke.get("tracing")}
        done = {
            "requestId": request_id,
            "status": "timeout" if reason == "timeout" else "failure",
            "metrics": {"durationMs": (now - self._last_invoke_epoch) * 1000},
        }
        events = [
            {
                "time": _timestamp(self._last_invoke_epoch),
                "type": "platform.start",
                "record": start,
            },
            {"time": _timestamp(now), "type": "platform.runtimeDone", "record": done},
        ]
        body = json.dumps(events).encode()
        self.front_door.put(Delivery(self.telemetry, "/", "application/json", "", body))


def _timestamp(epoch: float) -> str:
    """As the Telemetry API writes `time`: ISO 8601, UTC, milliseconds."""
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def start(api: LambdaAPI, settings: Settings) -> Extension:
    """Init after registering: read the raw config, open the front door, subscribe to the
    Telemetry API. What fails is said in one line each and left out, so that the function's
    init goes on; with `settings.fail_init_on_error` it raises InitError instead."""
    from collector.core.confmap import load

    problems: list[str] = []
    front_door = FrontDoor()
    try:
        raw = load([settings.config])
    except Exception as e:
        problems.append(f"the config {settings.config} cannot be read: {e}")
        raw = None
    listeners: list[Listener] = []
    if raw is not None:
        planned, raw, errors = plan(raw)
        problems.extend(f"invalid config {settings.config}: {e}" for e in errors)
        listeners = _listen(front_door, planned, problems)
        schema = TELEMETRY_SCHEMA_VERSION_MANAGED if settings.managed else None
        listeners = _subscribe(api, listeners, problems, schema)
    for problem in problems:
        say(f"{problem}; carrying on without it")
    if problems and settings.fail_init_on_error:
        front_door.close()
        raise InitError("; ".join(problems))
    forwarder = Forwarder(front_door)
    pipelines = None if raw is None else Pipelines(raw, listeners, forwarder)
    telemetry = next((lst.name for lst in listeners if lst.kind == TELEMETRY), None)
    return Extension(api, front_door, forwarder, pipelines, telemetry, settings.flush)


def _listen(front_door: FrontDoor, listeners: list[Listener], problems: list[str]):
    """The listeners whose address could be bound."""
    bound = []
    for listener in listeners:
        try:
            listener.bound = front_door.listen(
                listener.name, listener.kind, listener.endpoint, listener.paths
            )
        except OSError as e:
            problems.append(f"receiver {listener.name}: {e}")
            continue
        bound.append(listener)
    return bound


def _subscribe(
    api: LambdaAPI, listeners: list[Listener], problems: list[str], schema: str | None
) -> list[Listener]:
    """The listeners left once each Telemetry API listener is subscribed (with `schema`, else
    the plan's), or dropped."""
    kept = []
    for listener in listeners:
        if listener.subscription is not None:
            subscription = {**listener.subscription, "destination": listener.destination()}
            if schema is not None:
                subscription["schemaVersion"] = schema
            try:
                api.subscribe_telemetry(subscription)
            except (LambdaAPIError, OSError, ValueError) as e:
                problems.append(f"receiver {listener.name}: the Telemetry API refused: {e}")
                continue
        kept.append(listener)
    return kept


def main() -> int:
    runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        say("AWS_LAMBDA_RUNTIME_API is not set: not in Lambda")
        return 2
    api = LambdaAPI(runtime_api)
    settings = Settings()
    api.register(("SHUTDOWN",) if settings.managed else ("INVOKE", "SHUTDOWN"))
    try:
        extension = start(api, settings)
    except InitError as e:
        api.init_error("Extension.InitFailed", str(e))
        return 1
    return extension.run()
