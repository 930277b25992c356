"""The Lambda Runtime API (2018-06-01) of one execution environment, served on 127.0.0.1.

Status codes follow AWS's OpenAPI description of the API and its reference implementation (the
Runtime Interface Emulator): posts are answered 202; a post for a request id that is not the
invocation in flight (or was answered already) 400 `InvalidRequestID`; a response larger than
6 MB 413; an init error posted after the runtime finished init (asked for its first invocation)
403 `InvalidStateTransition`.

With SnapStart the runtime ends its init with `GET /runtime/restore/next`, which Lambda answers
(200) once the environment is restored from the snapshot; the runtime then runs its
after-restore hooks and asks for its first invocation, or reports the hooks' failure with
`POST /runtime/restore/error` (202). Outside of that step, both are refused 403
`InvalidStateTransition`.

Under Lambda Managed Instances (`ConcurrentRuntimeAPIServer`) several runtime workers hold
`/invocation/next` at once; see that class.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

PREFIX = "/2018-06-01/runtime"
MAX_RESPONSE_BYTES = 6 * 1024 * 1024  # the synchronous invocation payload limit
_ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


@dataclass(frozen=True)
class RuntimeReply:
    """What the runtime posted: a response body, or an error (`error_type` set)."""

    body: bytes
    error_type: str | None = None  # Lambda-Runtime-Function-Error-Type, or our own for 413
    arrived: float | None = None  # epoch seconds the runtime began posting it


@dataclass
class Invocation:
    """One event on its way to the runtime. `reply` is resolved by the server when the runtime
    posts the response or the error of this request id."""

    request_id: str
    event: bytes
    function_arn: str
    trace_header: str  # X-Ray header: Root=1-...;Parent=...;Sampled=1
    client_context: str | None = None  # JSON text
    cognito_identity: str | None = None  # JSON text
    deadline_ms: int = 0  # epoch milliseconds; set when the invoke phase starts
    reply: asyncio.Future[RuntimeReply] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Lambda-Runtime-Aws-Request-Id": self.request_id,
            "Lambda-Runtime-Deadline-Ms": str(self.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": self.trace_header,
        }
        if self.client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = self.client_context
        if self.cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = self.cognito_identity
        return headers


def _refusal(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response({"errorMessage": message, "errorType": error_type}, status=status)


_ACCEPTED = {"status": "OK"}


class RuntimeAPIServer:
    """HTTP server of one environment; `address` (host:port) is its AWS_LAMBDA_RUNTIME_API.

    Other APIs Lambda serves on the same address (Extensions API 2020-01-01, Telemetry API
    2022-07-01) mount their routes with `add_routes` before `start`.

    With `snap_start`, the runtime's restore step is served (see `restore`).

    Not thread-safe: use it from the event loop that started it.
    """

    _SERVES_RESTORE = True

    def __init__(self, *, snap_start: bool = False) -> None:
        # Above the payload limit, so that an oversized response reaches the handler and gets
        # the documented 413 answer rather than aiohttp's own.
        self.app = web.Application(client_max_size=2 * MAX_RESPONSE_BYTES)
        self.app.add_routes(
            [
                web.get(f"{PREFIX}/invocation/next", self._get_next),
                web.post(f"{PREFIX}/invocation/{{request_id}}/response", self._post_response),
                web.post(f"{PREFIX}/invocation/{{request_id}}/error", self._post_error),
                web.post(f"{PREFIX}/init/error", self._post_init_error),
            ]
        )
        if self._SERVES_RESTORE:
            self.app.add_routes(
                [
                    web.get(f"{PREFIX}/restore/next", self._get_restore_next),
                    web.post(f"{PREFIX}/restore/error", self._post_restore_error),
                ]
            )
        self._snap_start = snap_start
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._queue: asyncio.Queue[Invocation] = asyncio.Queue()
        self._current: Invocation | None = None
        self._initialized = False
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[None] = loop.create_future()
        self.init_error: asyncio.Future[RuntimeReply] = loop.create_future()
        self.restore_error: asyncio.Future[RuntimeReply] = loop.create_future()
        self._restored: asyncio.Future[None] | None = None  # answers the pending restore/next
        self._restoring = False

    def add_routes(self, routes: Iterable[web.AbstractRouteDef]) -> None:
        """Serve more routes on this address; call before start()."""
        self.app.add_routes(routes)

    @property
    def ready(self) -> asyncio.Future[None]:
        """Resolves when the runtime asks for its next invocation: the end of init (with
        SnapStart, its request to be restored), of the restore, or of the invocation last
        dispatched."""
        return self._ready

    def restore(self) -> None:
        """The environment was restored from its snapshot: answer the runtime's pending
        restore/next, so that it runs its after-restore hooks; `ready` resolves again once it
        asks for its first invocation. A runtime that ended its init asking for an invocation
        has no hooks to run: it stays ready."""
        if self._restored is None:
            return
        self._ready = asyncio.get_running_loop().create_future()
        self._restoring = True
        self._restored.set_result(None)

    def dispatch(self, invocation: Invocation) -> bool:
        """Hand `invocation` to the runtime's pending (or next) request for an invocation;
        always accepted (True)."""
        self._ready = asyncio.get_running_loop().create_future()
        self._current = invocation
        self._queue.put_nowait(invocation)
        return True

    async def start(self) -> None:
        # handler_cancellation: a runtime killed while long-polling /next must not leave its
        # handler waiting on the queue.
        self._runner = web.AppRunner(
            self.app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.address = f"{host}:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    # --- handlers ---------------------------------------------------------------------------

    async def _get_next(self, request: web.Request) -> web.Response:
        self._initialized = True
        self._restoring = False
        if not self._ready.done():
            self._ready.set_result(None)
        invocation = await self._queue.get()
        return web.Response(body=invocation.event, headers=invocation.headers())

    def _claim(self, request_id: str) -> Invocation | web.Response:
        """The invocation in flight under `request_id`, no longer in flight (so that a second
        post is refused), or the refusal of the post."""
        current = self._current
        if current is None or current.request_id != request_id:
            return _refusal(400, "InvalidRequestID", "Invalid request ID")
        self._current = None
        return current

    async def _post_response(self, request: web.Request) -> web.Response:
        arrived = time.time()
        invocation = self._claim(request.match_info["request_id"])
        if isinstance(invocation, web.Response):
            return invocation
        body = await request.read()
        if len(body) > MAX_RESPONSE_BYTES:
            message = (
                "Response payload size exceeded maximum allowed payload size "
                f"({MAX_RESPONSE_BYTES} bytes)."
            )
            error = {"errorMessage": message, "errorType": "Function.ResponseSizeTooLarge"}
            invocation.reply.set_result(
                RuntimeReply(json.dumps(error).encode(), error["errorType"], arrived)
            )
            return _refusal(413, "RequestEntityTooLarge", message)
        invocation.reply.set_result(RuntimeReply(body, arrived=arrived))
        return web.json_response(_ACCEPTED, status=202)

    async def _post_error(self, request: web.Request) -> web.Response:
        arrived = time.time()
        invocation = self._claim(request.match_info["request_id"])
        if isinstance(invocation, web.Response):
            return invocation
        error_type = request.headers.get(_ERROR_TYPE_HEADER, "Unhandled")
        invocation.reply.set_result(RuntimeReply(await request.read(), error_type, arrived))
        return web.json_response(_ACCEPTED, status=202)

    async def _post_init_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._initialized or self.init_error.done():
            return _refusal(403, "InvalidStateTransition", "State transition is not allowed")
        error_type = request.headers.get(_ERROR_TYPE_HEADER, "Unhandled")
        self.init_error.set_result(RuntimeReply(body, error_type))
        return web.json_response(_ACCEPTED, status=202)

    async def _get_restore_next(self, request: web.Request) -> web.Response:
        if not self._snap_start or self._initialized:
            return _refusal(403, "InvalidStateTransition", "State transition is not allowed")
        self._initialized = True
        self._restored = asyncio.get_running_loop().create_future()
        if not self._ready.done():
            self._ready.set_result(None)
        await self._restored
        return web.Response(status=200)

    async def _post_restore_error(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self._restoring or self.restore_error.done():
            return _refusal(403, "InvalidStateTransition", "State transition is not allowed")
        error_type = request.headers.get(_ERROR_TYPE_HEADER, "Unhandled")
        self.restore_error.set_result(RuntimeReply(body, error_type))
        return web.json_response(_ACCEPTED, status=202)


class ConcurrentRuntimeAPIServer(RuntimeAPIServer):
    """The Runtime API under Lambda Managed Instances: the runtime's workers each long-poll
    `/invocation/next`, so that as many invocations as workers waiting can be in flight at once.

    `dispatch` hands an invocation to the worker that has waited longest; with no worker waiting
    it refuses (False) at once, as Lambda rejects such an invoke with Runtime.Unavailable rather
    than queue it. Posts are routed by request id. After `expire` (the invocation timed out) the
    worker is left running; its late post is refused with 400 `Runtime.InvokeTimeout` (the
    error AWS's emulator names; the status code is our conservative choice, a refusal the
    runtime logs and carries on from), and it asks for its next invocation afterwards. `ready`
    resolves at the first request for an invocation: the runtime's part of init is over. No
    SnapStart: the restore routes are not served.
    """

    _SERVES_RESTORE = False

    def __init__(self) -> None:
        super().__init__()
        self._waiting: collections.deque[asyncio.Future[Invocation]] = collections.deque()
        self._in_flight: dict[str, Invocation] = {}
        self._expired: set[str] = set()

    @property
    def idle_workers(self) -> int:
        """How many workers wait for an invocation."""
        return sum(not worker.done() for worker in self._waiting)

    def dispatch(self, invocation: Invocation) -> bool:
        while self._waiting:
            worker = self._waiting.popleft()
            if not worker.done():
                self._in_flight[invocation.request_id] = invocation
                worker.set_result(invocation)
                return True
        return False

    def expire(self, request_id: str) -> None:
        """The invocation timed out: a post for it is refused from now on."""
        if self._in_flight.pop(request_id, None) is not None:
            self._expired.add(request_id)

    async def _get_next(self, request: web.Request) -> web.Response:
        self._initialized = True
        if not self._ready.done():
            self._ready.set_result(None)
        worker: asyncio.Future[Invocation] = asyncio.get_running_loop().create_future()
        self._waiting.append(worker)
        try:
            invocation = await worker
        finally:
            if worker in self._waiting:  # the worker went away while waiting
                self._waiting.remove(worker)
        return web.Response(body=invocation.event, headers=invocation.headers())

    def _claim(self, request_id: str) -> Invocation | web.Response:
        invocation = self._in_flight.pop(request_id, None)
        if invocation is not None:
            return invocation
        if request_id in self._expired:
            return _refusal(400, "Runtime.InvokeTimeout", "Invocation timed out")
        return _refusal(400, "InvalidRequestID", "Invalid request ID")
