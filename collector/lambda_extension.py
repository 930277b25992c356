"""`coldtail lambda-extension`: the collector as an external AWS Lambda extension.

Lambda starts every executable in /opt/extensions at init; the layer's `extensions/coldtail`
runs this. The lifecycle follows the Extensions API (2020-01-01):

1. Start the pipelines (receivers included) from COLDTAIL_CONFIG, default the layer's
   config/lambda-extension.yaml, so the function can export as soon as its init runs.
2. Register for INVOKE and SHUTDOWN as `coldtail` (the executable's name, as Lambda requires),
   and subscribe every `lambda_telemetry` receiver to the Telemetry API (2022-07-01).
3. For each INVOKE: the function's instrumentation hands its spans to the local OTLP receiver
   and returns its response; the invocation then stays open until this extension asks for the
   next event, so export happens after the response without holding it. Wait for the
   invocation's `platform.runtimeDone` (by then the function has handed over its spans), flush
   the pipelines into the backends, then ask for the next event: nothing waits in a frozen
   environment. Without a `lambda_telemetry` receiver the flush happens at once, and data of
   the running invocation goes out with the next one.
4. On SHUTDOWN: drain and stop within its deadline (Lambda gives extensions 2 s in all).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# The collector's modules are imported after registering (see `register`).
if TYPE_CHECKING:
    import aiohttp

    from collector.config import ServiceConfig

EXTENSION_NAME = "coldtail"
LAYER_CONFIG = "/opt/config/lambda-extension.yaml"  # the launcher sets COLDTAIL_CONFIG
# Left of a deadline for the last requests to Lambda once the pipelines are drained.
_DEADLINE_MARGIN_S = 0.1

log = logging.getLogger("coldtail.lambda_extension")


def config_path() -> str:
    return os.environ.get("COLDTAIL_CONFIG") or LAYER_CONFIG


def load_config(path: str) -> ServiceConfig:
    from collector.components import registry
    from collector.config import validate
    from collector.confmap import load

    return validate(load([path]), registry())


class ExtensionsClient:
    """The Extensions and Telemetry APIs at AWS_LAMBDA_RUNTIME_API."""

    def __init__(self, runtime_api: str, extension_id: str, session: aiohttp.ClientSession) -> None:
        self._base = f"http://{runtime_api}"
        self._session = session
        self.id = extension_id

    async def subscribe_telemetry(self, subscription: dict) -> None:
        async with self._session.put(
            f"{self._base}/2022-07-01/telemetry", headers=self._headers(), json=subscription
        ) as response:
            await self._json(response, "telemetry subscription")

    async def next_event(self) -> dict:
        async with self._session.get(
            f"{self._base}/2020-01-01/extension/event/next", headers=self._headers()
        ) as response:
            return await self._json(response, "next event")

    async def init_error(self, error_type: str, message: str) -> None:
        """Report a failed init (after register): Lambda then fails the init phase."""
        async with self._session.post(
            f"{self._base}/2020-01-01/extension/init/error",
            headers={**self._headers(), "Lambda-Extension-Function-Error-Type": error_type},
            json={"errorMessage": message, "errorType": error_type},
        ):
            pass

    def _headers(self) -> dict[str, str]:
        return {"Lambda-Extension-Identifier": self.id}

    @staticmethod
    async def _json(response: aiohttp.ClientResponse, what: str) -> dict:
        if response.status >= 300:
            raise RuntimeError(f"{what}: HTTP {response.status}: {await response.text()}")
        if response.content_length == 0:
            return {}
        return await response.json(content_type=None) or {}


def register(runtime_api: str) -> str:
    """Register for INVOKE and SHUTDOWN; returns the extension identifier. Lambda starts the
    runtime's init once every extension has registered, so this runs first, before the
    collector's imports, letting the function's init overlap the collector's start."""
    import http.client
    import json

    connection = http.client.HTTPConnection(runtime_api, timeout=10)
    try:
        connection.request(
            "POST",
            "/2020-01-01/extension/register",
            json.dumps({"events": ["INVOKE", "SHUTDOWN"]}),
            {"Lambda-Extension-Name": EXTENSION_NAME, "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"register: HTTP {response.status}: {body[:200]!r}")
        return response.getheader("Lambda-Extension-Identifier", "")
    finally:
        connection.close()


async def run(config: ServiceConfig, runtime_api: str, extension_id: str) -> int:
    import aiohttp

    from collector.receivers.lambda_telemetry import LambdaTelemetryReceiver
    from collector.service import Service

    service = Service(config)
    telemetry = [r for r in service.receivers.values() if isinstance(r, LambdaTelemetryReceiver)]
    # No client timeout: event/next blocks for as long as the environment is idle or frozen.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        client = ExtensionsClient(runtime_api, extension_id, session)
        try:
            await service.start()
            for receiver in telemetry:
                host = receiver.endpoint.rpartition(":")[0]
                await client.subscribe_telemetry(receiver.subscription(host))
        except Exception as e:
            log.exception("extension init failed")
            await client.init_error("Extension.InitFailed", str(e))
            await service.shutdown()
            return 1
        log.info("extension ready", extra={"kv": {"telemetry": bool(telemetry)}})
        while True:
            event = await client.next_event()
            deadline = event.get("deadlineMs", 0) / 1000 - _DEADLINE_MARGIN_S
            if event.get("eventType") == "SHUTDOWN":
                log.info("shutdown", extra={"kv": {"reason": event.get("shutdownReason")}})
                await service.shutdown(timeout=max(deadline - time.time(), 0.1))
                return 0
            for receiver in telemetry:
                await receiver.wait_runtime_done(
                    event.get("requestId", ""), max(deadline - time.time(), 0)
                )
            if not await service.flush(max(deadline - time.time(), 0.1)):
                log.warning("flush did not finish before the invocation's deadline")


def main() -> int:
    runtime_api = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if not runtime_api:
        print("coldtail lambda-extension: AWS_LAMBDA_RUNTIME_API is not set: not in Lambda")
        return 2
    extension_id = register(runtime_api)
    from collector.config import ConfigError
    from collector.confmap import ConfmapError

    path = config_path()
    if not Path(path).exists():
        print(f"coldtail lambda-extension: config {path} not found (set COLDTAIL_CONFIG)")
        return 2
    try:
        config = load_config(path)
    except (ConfmapError, ConfigError) as e:
        print(f"coldtail lambda-extension: invalid configuration {path}:\n{e}")
        return 2
    from collector.telemetry import setup_logging

    setup_logging(config.telemetry.logs.level, config.telemetry.logs.encoding)
    return asyncio.run(run(config, runtime_api, extension_id))


if __name__ == "__main__":
    sys.exit(main())
