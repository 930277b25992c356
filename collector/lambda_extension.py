"""`coldtail lambda-extension`: the collector as an external AWS Lambda extension.

Lambda starts every executable in /opt/extensions at init; the layer's `extensions/coldtail`
runs this. Lambda's init is over once the runtime and every extension asked for their first
event, so the extension does only standard-library work before that and loads the collector
afterwards. The lifecycle follows the Extensions API (2020-01-01):

1. Register for INVOKE and SHUTDOWN as `coldtail` (the executable's name, as Lambda requires),
   first: Lambda starts the runtime's init once every extension has registered.
2. Read COLDTAIL_CONFIG (default the layer's config/lambda-extension.yaml) as a raw tree
   (`collector.confmap`, no validation) and open the front door
   (`collector.lambda_front_door`) on the addresses of the receivers the pipelines use: the
   `otlp` receiver's OTLP/HTTP endpoint and every `lambda_telemetry` receiver's endpoint. It
   answers the function and Lambda at once and queues what they send. The real receivers are
   moved to private loopback ports (127.0.0.1:0) in the raw tree.
3. Subscribe every `lambda_telemetry` receiver to the Telemetry API (2022-07-01), delivering to
   its front door address, with the receiver's `types` and `buffering` from the raw tree (or
   the receiver's defaults).
4. Ask for the first event: init is over. Meanwhile, in a background thread, the raw tree is
   validated and the pipelines start on their own event loop; a forwarder then replays the
   queue, in order, to the real receivers, and keeps doing so for every later request.
5. For each INVOKE: the function's instrumentation hands its spans to the front door and
   returns its response; the invocation then stays open until this extension asks for the
   next event, so export happens after the response without holding it. Wait until the front
   door has received the invocation's `platform.runtimeDone` (by then the function has handed
   over its spans) and the collector is loaded, both within the invocation's deadline; forward
   everything received so far; flush the pipelines into the backends; then ask for the next
   event: nothing waits in a frozen environment. Without a `lambda_telemetry` receiver the
   flush happens at once, and data of the running invocation goes out with the next one.
6. On SHUTDOWN: the same drain, then stop the pipelines within its deadline (Lambda gives
   extensions 2 s in all), close the front door and exit.

Failures known before init ends (the config cannot be read, an address cannot be bound, the
subscription is refused) are reported to Lambda (init/error), which fails the init. A config
that fails validation is only known after init: it is logged, and the extension keeps
answering Lambda and the function (dropping their data) so that the function never breaks.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from collector.lambda_front_door import OTLP, TELEMETRY, Forwarder, FrontDoor, request

if TYPE_CHECKING:
    import asyncio

    from collector.service import Service

EXTENSION_NAME = "coldtail"
LAYER_CONFIG = "/opt/config/lambda-extension.yaml"  # the launcher sets COLDTAIL_CONFIG
# Left of a deadline for the last requests to Lambda once the pipelines are drained.
_DEADLINE_MARGIN_S = 0.1
# Where the real receivers listen once the front door holds their configured addresses.
PRIVATE_ENDPOINT = "127.0.0.1:0"

# The receivers' defaults, for the raw (unvalidated) config: collector.receivers.otlp and
# collector.receivers.lambda_telemetry (their Config classes), which are not imported before
# init ends.
OTLP_HTTP_DEFAULT_ENDPOINT = "127.0.0.1:4318"
OTLP_DEFAULT_PATHS = {
    "traces_url_path": "/v1/traces",
    "metrics_url_path": "/v1/metrics",
    "logs_url_path": "/v1/logs",
}
TELEMETRY_DEFAULT_ENDPOINT = "127.0.0.1:4325"
TELEMETRY_SCHEMA_VERSION = "2022-12-13"
TELEMETRY_DEFAULT_TYPES = ("platform", "function")
TELEMETRY_DEFAULT_BUFFERING = {"max_items": 1000, "max_bytes": 262144, "timeout_ms": 25}

log = logging.getLogger("coldtail.lambda_extension")


def config_path() -> str:
    return os.environ.get("COLDTAIL_CONFIG") or LAYER_CONFIG


# --- the plan: which addresses the front door serves -------------------------------------------


class Listener:
    """A receiver address the front door serves: `name` is the receiver's id."""

    __slots__ = ("bound", "endpoint", "kind", "name", "paths", "subscription")

    def __init__(
        self, name: str, kind: str, endpoint: str, paths: tuple[str, ...] = (), subscription=None
    ) -> None:
        self.name = name
        self.kind = kind
        self.endpoint = endpoint
        self.paths = paths
        self.subscription: dict | None = subscription  # Telemetry API subscription, sans URI
        self.bound = ""


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _used_receivers(raw: dict) -> list[str]:
    used: list[str] = []
    for pipeline in _map(_map(raw.get("service")).get("pipelines")).values():
        receivers = _map(pipeline).get("receivers")
        for rid in receivers if isinstance(receivers, list) else []:
            if isinstance(rid, str) and rid not in used:
                used.append(rid)
    return used


def _url_path(value: Any, default: str) -> str:
    if not isinstance(value, str):
        return default
    return value if value.startswith("/") else "/" + value


def plan(raw: dict) -> tuple[list[Listener], dict]:
    """The addresses of the receivers the pipelines use that the front door serves, and the raw
    tree with those receivers moved to PRIVATE_ENDPOINT. What this cannot make sense of is left
    alone, for validation to report."""
    receivers = raw.get("receivers")
    if not isinstance(receivers, dict):
        return [], raw
    receivers = dict(receivers)
    listeners = []
    for rid in _used_receivers(raw):
        type_ = rid.strip().partition("/")[0]
        if rid not in receivers or type_ not in ("otlp", "lambda_telemetry"):
            continue
        config = receivers[rid]
        if config is None:
            config = {}
        if not isinstance(config, dict):
            continue
        if type_ == "otlp":
            protocols = config.get("protocols")
            if not isinstance(protocols, dict) or "http" not in protocols:
                continue
            http = protocols["http"]
            if http is None:
                http = {}
            if not isinstance(http, dict):
                continue
            endpoint = str(http.get("endpoint", OTLP_HTTP_DEFAULT_ENDPOINT))
            paths = tuple(_url_path(http.get(k), d) for k, d in OTLP_DEFAULT_PATHS.items())
            listeners.append(Listener(rid, OTLP, endpoint, paths))
            http = {**http, "endpoint": PRIVATE_ENDPOINT}
            config = {**config, "protocols": {**protocols, "http": http}}
        else:
            endpoint = str(config.get("endpoint", TELEMETRY_DEFAULT_ENDPOINT))
            buffering = {**TELEMETRY_DEFAULT_BUFFERING, **_map(config.get("buffering"))}
            subscription = {
                "schemaVersion": TELEMETRY_SCHEMA_VERSION,
                "types": list(config.get("types") or TELEMETRY_DEFAULT_TYPES),
                "buffering": {
                    "maxItems": buffering["max_items"],
                    "maxBytes": buffering["max_bytes"],
                    "timeoutMs": buffering["timeout_ms"],
                },
            }
            listeners.append(Listener(rid, TELEMETRY, endpoint, subscription=subscription))
            config = {**config, "endpoint": PRIVATE_ENDPOINT}
        receivers[rid] = config
    return listeners, {**raw, "receivers": receivers}


# --- Lambda's APIs -----------------------------------------------------------------------------


class LambdaAPI:
    """The Extensions and Telemetry APIs at AWS_LAMBDA_RUNTIME_API, over plain sockets."""

    def __init__(self, runtime_api: str) -> None:
        self.runtime_api = runtime_api
        self.id = ""

    def register(self) -> None:
        """Register for INVOKE and SHUTDOWN; sets `id`."""
        status, headers, body = request(
            self.runtime_api,
            "POST",
            "/2020-01-01/extension/register",
            json.dumps({"events": ["INVOKE", "SHUTDOWN"]}).encode(),
            {"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"},
            timeout=10,
        )
        if status != 200:
            raise RuntimeError(f"register: HTTP {status}: {body[:200]!r}")
        self.id = headers.get("lambda-extension-identifier", "")

    def subscribe_telemetry(self, subscription: dict) -> None:
        self._call("PUT", "/2022-07-01/telemetry", subscription, "telemetry subscription", 10)

    def next_event(self) -> dict:
        # No timeout: event/next blocks for as long as the environment is idle or frozen.
        return self._call("GET", "/2020-01-01/extension/event/next", None, "next event", None)

    def init_error(self, error_type: str, message: str) -> None:
        """Report a failed init (after register): Lambda then fails the init phase."""
        request(
            self.runtime_api,
            "POST",
            "/2020-01-01/extension/init/error",
            json.dumps({"errorMessage": message, "errorType": error_type}).encode(),
            {**self._headers(), "Lambda-Extension-Function-Error-Type": error_type},
            timeout=10,
        )

    def _headers(self) -> dict[str, str]:
        return {"Lambda-Extension-Identifier": self.id, "Content-Type": "application/json"}

    def _call(self, method: str, path: str, payload, what: str, timeout: float | None) -> dict:
        body = b"" if payload is None else json.dumps(payload).encode()
        status, _, answer = request(
            self.runtime_api, method, path, body, self._headers(), timeout=timeout
        )
        if status >= 300:
            raise RuntimeError(f"{what}: HTTP {status}: {answer[:200].decode('utf-8', 'replace')}")
        result = json.loads(answer) if answer.strip() else {}
        return result if isinstance(result, dict) else {}


# --- the collector, off the init path ----------------------------------------------------------


class Collector:
    """Validates the raw config and runs the pipelines on an event loop in a daemon thread;
    once they started, the forwarder hands them the front door's queue."""

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

    def _run(self) -> None:
        try:
            loop, service = self._load()
        except BaseException as e:
            self.error = e
            if _is_config_error(e):
                print(
                    f"coldtail lambda-extension: invalid configuration {config_path()}: the "
                    f"function's telemetry is dropped:\n{e}",
                    file=sys.stderr,
                )
            else:
                log.exception("the collector failed to start: the function's telemetry is dropped")
            self.forwarder.start(None)
            self._ready.set()
            return
        self.loop, self.service = loop, service
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

    def _load(self) -> tuple[asyncio.AbstractEventLoop, Service]:
        import asyncio

        from collector.components import registry
        from collector.config import validate
        from collector.service import Service
        from collector.telemetry import setup_logging

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

    def call(self, coroutine_function, timeout: float):
        """Run `coroutine_function()` on the collector's loop and wait up to `timeout` seconds
        (TimeoutError after that)."""
        import asyncio

        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(coroutine_function(), self.loop)
        try:
            return future.result(max(timeout, 0))
        except TimeoutError:
            future.cancel()
            raise

    def stop_loop(self) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(0.5)


def _is_config_error(error: BaseException) -> bool:
    return type(error).__name__ in ("ConfigError", "ConfmapError")


# --- the extension -----------------------------------------------------------------------------


class Extension:
    def __init__(
        self,
        api: LambdaAPI,
        front_door: FrontDoor,
        forwarder: Forwarder,
        collector: Collector,
        telemetry: bool,
    ) -> None:
        self.api = api
        self.front_door = front_door
        self.forwarder = forwarder
        self.collector = collector
        self.telemetry = telemetry

    def run(self) -> int:
        """Serve events until SHUTDOWN; the exit status."""
        while True:
            event = self.api.next_event()
            remaining = event.get("deadlineMs", 0) / 1000 - _DEADLINE_MARGIN_S - time.time()
            deadline = time.monotonic() + remaining
            if event.get("eventType") == "SHUTDOWN":
                log.info("shutdown", extra={"kv": {"reason": event.get("shutdownReason")}})
                self.shutdown(deadline)
                return 0
            self.invocation_done(str(event.get("requestId", "")), deadline)

    def invocation_done(self, request_id: str, deadline: float) -> None:
        if self.telemetry and not self.front_door.wait_runtime_done(
            request_id, deadline - time.monotonic()
        ):
            log.warning(
                "platform.runtimeDone did not arrive before the invocation's deadline",
                extra={"kv": {"request_id": request_id}},
            )
        if not self._drain(deadline):
            return
        try:
            flushed = self.collector.call(
                lambda: self.collector.service.flush(max(deadline - time.monotonic(), 0.1)),
                max(deadline - time.monotonic(), 0.1) + 0.5,
            )
        except TimeoutError:
            flushed = False
        if not flushed:
            log.warning("flush did not finish before the invocation's deadline")

    def shutdown(self, deadline: float) -> None:
        try:
            if self._drain(deadline):
                budget = max(deadline - time.monotonic(), 0.1)
                try:
                    self.collector.call(
                        lambda: self.collector.service.shutdown(timeout=budget), budget + 0.2
                    )
                except TimeoutError:
                    log.error("the collector did not stop before the shutdown deadline")
                self.collector.stop_loop()
        finally:
            self.forwarder.stop()
            self.front_door.close()

    def _drain(self, deadline: float) -> bool:
        """Wait for the collector and hand it everything received so far; False when the
        collector is not running (failed, or not started before `deadline`)."""
        if not self.collector.wait(deadline - time.monotonic()):
            if self.collector.error is None:
                log.warning("the collector did not start before the deadline")
            return False
        if not self.forwarder.drain(deadline - time.monotonic()):
            log.warning("the front door's queue was not forwarded before the deadline")
        return True


def start(api: LambdaAPI, path: str) -> Extension:
    """Init after registering: read the raw config, open the front door, subscribe to the
    Telemetry API, and start loading the collector. Raises what fails the init."""
    from collector.confmap import load

    listeners, raw = plan(load([path]))
    front_door = FrontDoor()
    try:
        for listener in listeners:
            listener.bound = front_door.listen(
                listener.name, listener.kind, listener.endpoint, listener.paths
            )
        for listener in listeners:
            if listener.subscription is not None:
                uri = f"http://{listener.bound}"
                subscription = {
                    **listener.subscription,
                    "destination": {"protocol": "HTTP", "URI": uri},
                }
                api.subscribe_telemetry(subscription)
    except BaseException:
        front_door.close()
        raise
    forwarder = Forwarder(front_door)
    collector = Collector(raw, listeners, forwarder)
    telemetry = any(listener.kind == TELEMETRY for listener in listeners)
    return Extension(api, front_door, forwarder, collector, telemetry)


def main() -> int:
    runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        print("coldtail lambda-extension: AWS_LAMBDA_RUNTIME_API is not set: not in Lambda")
        return 2
    api = LambdaAPI(runtime_api)
    api.register()
    path = config_path()
    try:
        extension = start(api, path)
    except Exception as e:
        print(f"coldtail lambda-extension: init failed ({path}): {e}", file=sys.stderr)
        api.init_error("Extension.InitFailed", str(e))
        return 1
    # The collector loads while Lambda runs the first invocation; init ends with next_event.
    extension.collector.start()
    return extension.run()


if __name__ == "__main__":
    sys.exit(main())
