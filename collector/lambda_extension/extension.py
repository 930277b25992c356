"""The extension's lifecycle: init, one turn per INVOKE, SHUTDOWN (see the package docstring)."""

from __future__ import annotations

import logging
import os
import time

from collector.lambda_extension import say
from collector.lambda_extension.flushing import Flusher, Strategy, parse_strategy
from collector.lambda_extension.forwarder import Forwarder
from collector.lambda_extension.front_door import TELEMETRY, FrontDoor
from collector.lambda_extension.lambda_api import LambdaAPI, LambdaAPIError
from collector.lambda_extension.pipelines import Pipelines
from collector.lambda_extension.plan import Listener, plan

LAYER_CONFIG = "/opt/config/lambda-extension.yaml"  # the launcher sets COLDTAIL_CONFIG
# Left of a deadline for the last requests to Lambda once the pipelines are drained.
_DEADLINE_MARGIN_S = 0.1

log = logging.getLogger("coldtail.lambda_extension")


class InitError(Exception):
    """What fails the function's init, with COLDTAIL_FAIL_INIT_ON_ERROR=true only."""


class Settings:
    """The extension's own settings, from its environment: COLDTAIL_CONFIG (the config file),
    COLDTAIL_FLUSH (see `flushing`), COLDTAIL_FAIL_INIT_ON_ERROR (`true`: what goes wrong
    before init ends fails the function's init instead of being logged)."""

    def __init__(self, environ=os.environ) -> None:
        self.config = environ.get("COLDTAIL_CONFIG") or LAYER_CONFIG
        self.fail_init_on_error = (
            environ.get("COLDTAIL_FAIL_INIT_ON_ERROR", "").strip().lower() == "true"
        )
        try:
            self.flush = parse_strategy(environ.get("COLDTAIL_FLUSH", ""))
        except ValueError as e:
            say(f"{e}; flushing in the background")
            self.flush = Strategy("background")


class Extension:
    """Serves Lambda's events until SHUTDOWN. `pipelines` is None when the config could not be
    read: the extension then only answers Lambda."""

    def __init__(
        self,
        api: LambdaAPI,
        front_door: FrontDoor,
        forwarder: Forwarder,
        pipelines: Pipelines | None,
        telemetry: bool,
        strategy: Strategy,
    ) -> None:
        self.api = api
        self.front_door = front_door
        self.forwarder = forwarder
        self.pipelines = pipelines
        self.telemetry = telemetry
        self.flusher = (
            None
            if pipelines is None
            else Flusher(strategy, front_door, forwarder, pipelines, telemetry)
        )
        self._first = True

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
                log.info("shutdown", extra={"kv": {"reason": event.get("shutdownReason")}})
                self.shutdown(deadline)
                return 0
            try:
                self.invocation(str(event.get("requestId", "")), deadline)
            except Exception as e:
                say(f"an invocation's turn failed, carrying on: {e!r}")

    def invocation(self, request_id: str, deadline: float) -> None:
        """Return once the invocation's spans are in hand and the strategy's flush is done."""
        if self.flusher is None:
            return
        if (self.telemetry or self.front_door.hands_over) and not (
            self.front_door.wait_invocation_over(request_id, deadline - time.monotonic())
        ):
            log.warning(
                "the invocation's spans did not arrive before its deadline",
                extra={"kv": {"request_id": request_id}},
            )
        if self._first:
            # The collector loads once per environment: waiting for it here keeps its loading
            # out of the next invocations, which it would slow down.
            self._first = False
            assert self.pipelines is not None
            self.pipelines.wait(deadline - time.monotonic())
        self.flusher.after_invocation(request_id, deadline)

    def shutdown(self, deadline: float) -> None:
        """Drain everything into the backends and stop, by `deadline`."""
        try:
            if self.flusher is not None and self.pipelines is not None:
                self.flusher.stop()
                if self.pipelines.wait(deadline - time.monotonic()):
                    self.front_door.flushing()
                    if not self.forwarder.drain(deadline - time.monotonic()):
                        log.warning("the front door's queue was not forwarded before SHUTDOWN")
                    self.pipelines.stop(deadline - time.monotonic())
        finally:
            self.forwarder.stop()
            self.front_door.close()
            if self.forwarder.dropped:
                say(f"{self.forwarder.dropped} requests of this environment were lost")


def start(api: LambdaAPI, settings: Settings) -> Extension:
    """Init after registering: read the raw config, open the front door, subscribe to the
    Telemetry API. What fails is said in one line each and left out, so that the function's
    init goes on; with `settings.fail_init_on_error` it raises InitError instead."""
    from collector.confmap import load

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
        listeners = _subscribe(api, listeners, problems)
    for problem in problems:
        say(f"{problem}; carrying on without it")
    if problems and settings.fail_init_on_error:
        front_door.close()
        raise InitError("; ".join(problems))
    forwarder = Forwarder(front_door)
    pipelines = None if raw is None else Pipelines(raw, listeners, forwarder)
    telemetry = any(listener.kind == TELEMETRY for listener in listeners)
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


def _subscribe(api: LambdaAPI, listeners: list[Listener], problems: list[str]):
    """The listeners left once each Telemetry API listener is subscribed, or dropped."""
    kept = []
    for listener in listeners:
        if listener.subscription is not None:
            subscription = {**listener.subscription, "destination": listener.destination()}
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
    api.register()
    settings = Settings()
    try:
        extension = start(api, settings)
    except InitError as e:
        api.init_error("Extension.InitFailed", str(e))
        return 1
    return extension.run()
