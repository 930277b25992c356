"""The Lambda Extensions API (2020-01-01) of one execution environment.

Extensions register during init (`Lambda-Extension-Name`, `{"events": ["INVOKE", "SHUTDOWN"]}`),
get a `Lambda-Extension-Identifier`, then long-poll `/event/next`. A phase (init, an invocation)
is over for an extension when it asks for its next event. External extensions are the
executables the environment started from a layer's `extensions/`; any other name registers an
internal extension (from inside the runtime process), which may not register for SHUTDOWN.
Refusals are JSON `{errorMessage, errorType}` with 400 (bad request) or 403 (unknown
identifier, wrong phase, or an extension that reported an error).

Under Lambda Managed Instances an external extension may register for SHUTDOWN only and an
internal one for no event (403 `Extension.InvalidEventType` otherwise): no INVOKE event is
ever sent, so `/event/next` answers SHUTDOWN alone, and extensions follow invocations through
the Telemetry API.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from emulator.runtime_api import Invocation

PREFIX = "/2020-01-01/extension"
MAX_EXTENSIONS = 10
EVENT_TYPES = frozenset({"INVOKE", "SHUTDOWN"})
NAME_HEADER = "Lambda-Extension-Name"
IDENTIFIER_HEADER = "Lambda-Extension-Identifier"
_ERROR_TYPE_HEADER = "Lambda-Extension-Function-Error-Type"
_EVENT_IDENTIFIER_HEADER = "Lambda-Extension-Event-Identifier"
_ACCEPT_FEATURE_HEADER = "Lambda-Extension-Accept-Feature"


@dataclass
class Extension:
    """A registered extension. `idle` resolves when it asks for its next event after the last
    one it was sent (or, during init, for the first time)."""

    name: str
    id: str
    events: frozenset[str]
    external: bool
    idle: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def send(self, event: dict[str, Any]) -> None:
        self.idle = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(event)


@dataclass(frozen=True)
class ExtensionFailure:
    """An extension reported an error (init/error, exit/error) or its process exited
    (`exited`)."""

    name: str
    error_type: str
    message: str
    exited: bool = False


def _refusal(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"errorMessage": message, "errorType": error_type}, status=status)


def _forbidden() -> web.Response:
    return _refusal(403, "Extension.InvalidExtensionIdentifier", "Invalid extension identifier")


class ExtensionsAPI:
    """Registration and lifecycle events for the extensions of one environment.

    `function_info` is the body of a successful registration (functionName, functionVersion,
    handler, accountId; accountId only for `Lambda-Extension-Accept-Feature: accountId`).
    `managed_instances`: the registration rules of Lambda Managed Instances (see the module).
    Not thread-safe: use it from the event loop of the environment's server.
    """

    def __init__(
        self,
        function_info: dict[str, str],
        external: Collection[str] = (),
        on_register: Callable[[Extension], None] = lambda extension: None,
        *,
        managed_instances: bool = False,
    ) -> None:
        self.managed_instances = managed_instances
        self.extensions: dict[str, Extension] = {}  # by identifier, in registration order
        self._function_info = function_info
        self._external = frozenset(external)
        self._on_register = on_register
        loop = asyncio.get_running_loop()
        self._registered = {name: loop.create_future() for name in self._external}
        self._initialized = False
        self._failed_ids: set[str] = set()
        self.failure: asyncio.Future[ExtensionFailure] = loop.create_future()

    def routes(self) -> list[web.AbstractRouteDef]:
        return [
            web.post(f"{PREFIX}/register", self._register),
            web.get(f"{PREFIX}/event/next", self._next),
            web.post(f"{PREFIX}/init/error", self._init_error),
            web.post(f"{PREFIX}/exit/error", self._exit_error),
        ]

    @property
    def all_external_registered(self) -> asyncio.Future[Any]:
        """Resolves when every external extension the environment started has registered."""
        return asyncio.gather(*self._registered.values())

    async def idle(self) -> None:
        """Return once every registered extension waits in /event/next with nothing to do."""
        while pending := [e.idle for e in self.extensions.values() if not e.idle.done()]:
            await asyncio.wait(pending)

    def end_init(self) -> None:
        """Init is over: registration closes."""
        self._initialized = True

    def invoke(self, invocation: Invocation) -> None:
        """Send the INVOKE event to the extensions registered for it."""
        event = {
            "eventType": "INVOKE",
            "deadlineMs": invocation.deadline_ms,
            "requestId": invocation.request_id,
            "invokedFunctionArn": invocation.function_arn,
            "tracing": {"type": "X-Amzn-Trace-Id", "value": invocation.trace_header},
        }
        self._send("INVOKE", event)

    def shutdown(self, reason: str, deadline_ms: int) -> list[Extension]:
        """Send the SHUTDOWN event (`reason`: spindown, timeout or failure; `deadline_ms`:
        epoch milliseconds) and return the extensions it was sent to."""
        event = {"eventType": "SHUTDOWN", "shutdownReason": reason, "deadlineMs": deadline_ms}
        return self._send("SHUTDOWN", event)

    def fail(self, failure: ExtensionFailure) -> None:
        if not self.failure.done():
            self.failure.set_result(failure)

    def _send(self, event_type: str, event: dict[str, Any]) -> list[Extension]:
        receivers = [e for e in self.extensions.values() if event_type in e.events]
        for extension in receivers:
            extension.send(event)
        return receivers

    # --- handlers ---------------------------------------------------------------------------

    def caller(self, request: web.Request) -> Extension | None:
        """The registered extension the request identifies, unless it reported an error."""
        identifier = request.headers.get(IDENTIFIER_HEADER, "")
        if identifier in self._failed_ids:
            return None
        return self.extensions.get(identifier)

    async def _register(self, request: web.Request) -> web.Response:
        name = request.headers.get(NAME_HEADER)
        if not name:
            return _refusal(400, "InvalidRequest", f"missing header {NAME_HEADER}")
        try:
            body = json.loads(await request.text() or "{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _refusal(400, "InvalidRequest", "body must be a JSON object")
        events = body.get("events") or []
        unknown = sorted(set(map(str, events)) - EVENT_TYPES)
        if unknown:
            return _refusal(400, "InvalidEventType", f"unknown events: {unknown}")
        if self._initialized:
            return _refusal(403, "InvalidStateTransition", "registration is closed after init")
        if any(e.name == name for e in self.extensions.values()):
            return _refusal(400, "ExtensionAlreadyRegistered", f"{name} is registered")
        if len(self.extensions) >= MAX_EXTENSIONS:
            return _refusal(400, "TooManyExtensions", f"at most {MAX_EXTENSIONS} extensions")
        external = name in self._external
        if self.managed_instances:
            allowed = {"SHUTDOWN"} if external else set()
            if refused := sorted(set(events) - allowed):
                message = f"events not allowed under Lambda Managed Instances: {refused}"
                return _refusal(403, "Extension.InvalidEventType", message)
        if not external and "SHUTDOWN" in events:
            message = "internal extensions cannot register for SHUTDOWN"
            return _refusal(400, "ShutdownEventNotSupportedForInternalExtension", message)
        extension = Extension(name, str(uuid.uuid4()), frozenset(events), external)
        self.extensions[extension.id] = extension
        if external:
            self._registered[name].set_result(None)
        self._on_register(extension)
        body = dict(self._function_info)
        if "accountId" not in request.headers.get(_ACCEPT_FEATURE_HEADER, ""):
            body.pop("accountId", None)
        return web.json_response(body, headers={IDENTIFIER_HEADER: extension.id})

    async def _next(self, request: web.Request) -> web.Response:
        extension = self.caller(request)
        if extension is None:
            return _forbidden()
        if not extension.idle.done():
            extension.idle.set_result(None)
        event = await extension.queue.get()
        headers = {IDENTIFIER_HEADER: extension.id, _EVENT_IDENTIFIER_HEADER: str(uuid.uuid4())}
        return web.Response(
            body=json.dumps(event), content_type="application/json", headers=headers
        )

    async def _init_error(self, request: web.Request) -> web.Response:
        if self._initialized:
            return _refusal(403, "InvalidStateTransition", "init is over")
        return await self._report_error(request)

    async def _exit_error(self, request: web.Request) -> web.Response:
        return await self._report_error(request)

    async def _report_error(self, request: web.Request) -> web.Response:
        """No further call of the reporting extension succeeds; the phase in progress fails."""
        extension = self.caller(request)
        if extension is None:
            return _forbidden()
        error_type = request.headers.get(_ERROR_TYPE_HEADER, "Extension.Unknown")
        self._failed_ids.add(extension.id)
        self.fail(ExtensionFailure(extension.name, error_type, await request.text()))
        return web.json_response({"status": "OK"}, status=202)
