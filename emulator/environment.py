"""One Lambda execution environment: a real runtime process, the external extensions of its
layers, and the Runtime, Extensions and Telemetry APIs they talk to."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from emulator.extensions_api import ExtensionFailure, ExtensionsAPI
from emulator.runtime_api import (
    ConcurrentRuntimeAPIServer,
    Invocation,
    RuntimeAPIServer,
    RuntimeReply,
)
from emulator.sandbox import sandboxed, write_hosts
from emulator.telemetry_api import TelemetryAPI

VERSION = "$LATEST"
ACCOUNT_ID = "123456789012"
SHUTDOWN_GRACE = 2.0  # seconds between SIGTERM and SIGKILL, Lambda's cap on the Shutdown phase
# With external extensions the runtime gets up to 300 ms of the 2 s (500 ms when an internal
# extension registered); the extensions the rest, from their SHUTDOWN event on.
RUNTIME_SHUTDOWN_GRACE = 0.3
RUNTIME_SHUTDOWN_GRACE_INTERNAL = 0.5
# Under Lambda Managed Instances the runtime gets 600 ms (none when no extension registered),
# then the extensions their 2 s from the SHUTDOWN event on (AWS's emulator of them).
MANAGED_RUNTIME_SHUTDOWN_GRACE = 0.6
# Lambda's limit on the Restore phase of SnapStart: loading the runtime and its after-restore
# hooks (beyond it, Invoke fails with SnapStartTimeoutException).
RESTORE_TIMEOUT = 10.0
BOOTSTRAP = "bootstrap.py"

# Lambda's own bootstrap: the handler is read from $_HANDLER when the runtime starts, so an
# AWS_LAMBDA_EXEC_WRAPPER script can change it before it runs `exec "$@"`.
_BOOTSTRAP_SOURCE = """\
import os

from awslambdaric.__main__ import main

main(["awslambdaric", os.environ["_HANDLER"]])
"""

# Set by Lambda; a function's configuration cannot set them.
RESERVED_VARIABLES = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_MAX_CONCURRENCY",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "TZ",
    }
)

# Lambda does not set these for SnapStart functions: a snapshot serves many environments.
NOT_SNAP_START_VARIABLES = frozenset({"AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME"})

# The runtime's own variables, which extensions do not get.
RUNTIME_ONLY_VARIABLES = frozenset(
    {
        "_HANDLER",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_MAX_CONCURRENCY",
        "AWS_XRAY_CONTEXT_MISSING",
        "AWS_XRAY_DAEMON_ADDRESS",
        "LAMBDA_RUNTIME_DIR",
        "LAMBDA_TASK_ROOT",
        "_AWS_XRAY_DAEMON_ADDRESS",
        "_AWS_XRAY_DAEMON_PORT",
    }
)


def install_runtime(directory: Path) -> None:
    """Write the runtime bootstrap into `directory` (the environments' LAMBDA_RUNTIME_DIR),
    and the hosts file of the environments' sandbox."""
    (directory / BOOTSTRAP).write_text(_BOOTSTRAP_SOURCE)
    write_hosts(directory)


def python_runtime(python: Path) -> str:
    """The Lambda runtime identifier of the interpreter `python`, like python3.12."""
    probe = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return f"python{probe.stdout.strip()}"


class InitType(StrEnum):
    """AWS_LAMBDA_INITIALIZATION_TYPE."""

    ON_DEMAND = "on-demand"
    PROVISIONED = "provisioned-concurrency"
    SNAP_START = "snap-start"
    LAMBDA_MANAGED_INSTANCES = "lambda-managed-instances"


class Status(StrEnum):
    SUCCESS = "success"
    ERROR = "error"  # the function (or its init) reported an error
    TIMEOUT = "timeout"
    CRASH = "crash"  # the runtime or an extension exited, or could not be started
    # Refused at once, nothing ran: no runtime worker was free (Lambda Managed Instances).
    UNAVAILABLE = "unavailable"

    @property
    def telemetry(self) -> str:
        """The status as the Telemetry API words it."""
        return "failure" if self in (Status.CRASH, Status.UNAVAILABLE) else str(self)


@dataclass(frozen=True)
class FunctionError:
    type: str
    message: str
    stack_trace: list[str] = field(default_factory=list)

    @classmethod
    def from_payload(cls, payload: Any, default_type: str) -> FunctionError:
        """From Lambda's error document `{errorMessage, errorType, stackTrace}`; `default_type`
        when it has no type, as Lambda falls back on the error-type header."""
        if not isinstance(payload, dict):
            return cls(default_type, "")
        return cls(
            str(payload.get("errorType") or default_type),
            str(payload.get("errorMessage", "")),
            list(payload.get("stackTrace") or []),
        )


@dataclass
class InvocationResult:
    """The outcome of one invocation, as the Invoke API and the REPORT log line tell it."""

    request_id: str
    status: Status
    payload: Any  # the response, parsed as JSON when it is JSON; on failure the error document
    error: FunctionError | None
    cold: bool  # the environment's first invocation: its init ran, or it was restored, first
    init_duration_ms: float | None  # set when cold, unless restored; includes the extensions
    restore_duration_ms: float | None  # set when cold and restored from a SnapStart snapshot
    billed_restore_duration_ms: int | None  # of the restore: the runtime and its hooks' part
    duration_ms: float  # until the runtime's response and every extension's next event request
    runtime_duration_ms: float  # until the runtime's response (or its timeout or crash)
    # Rounded up to the ms; includes the init of an on-demand cold start. None under Lambda
    # Managed Instances, which bill instances, not durations.
    billed_duration_ms: int | None
    max_memory_used_mb: int  # resident memory of the runtime and extensions at the end; 0: none
    environment_id: str
    log_stream_name: str
    trace_header: str


@dataclass(frozen=True)
class FunctionConfig:
    """A function's configuration. Times in seconds; `env` holds the user's variables (including
    AWS_LAMBDA_EXEC_WRAPPER); `layers` are directories added to PYTHONPATH after `code_dir`,
    as /opt/python is on Lambda, whose `extensions/` executables are external extensions, as
    /opt/extensions/ is on Lambda. `python` is the runtime's interpreter, `runtime` its Lambda
    identifier (python3.12): the runtime runs on it and it is first on PATH, as /var/lang/bin
    is on Lambda, so extensions started with `python3` run on it too."""

    handler: str
    code_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    memory_mb: int = 128
    layers: tuple[Path, ...] = ()
    function_name: str = "coldtail-function"
    region: str = "us-east-1"
    init_timeout: float = 10.0
    python: Path = Path(sys.executable)
    runtime: str = f"python{sys.version_info.major}.{sys.version_info.minor}"

    def __post_init__(self) -> None:
        reserved = sorted(RESERVED_VARIABLES & self.env.keys())
        if reserved:
            raise ValueError(f"reserved environment variables cannot be set: {reserved}")

    @property
    def function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def external_extensions(self) -> dict[str, Path]:
        """The executables in the layers' `extensions/` by file name, sorted; a later layer's
        file replaces an earlier one's, as Lambda extracts layers in order into /opt."""
        found: dict[str, Path] = {}
        for directory in (layer / "extensions" for layer in self.layers):
            if directory.is_dir():
                for path in directory.iterdir():
                    if path.is_file() and os.access(path, os.X_OK):
                        found[path.name] = path
        return dict(sorted(found.items()))


class EnvironmentHooks:
    """Extension point around an environment's lifecycle: override what you need. Each
    coroutine is awaited at that point and delays it, as extensions delay Lambda's phases."""

    def routes(self, environment: ExecutionEnvironment) -> Iterable[web.AbstractRouteDef]:
        """Routes served on the environment's AWS_LAMBDA_RUNTIME_API address."""
        return ()

    async def on_init_start(self, environment: ExecutionEnvironment) -> None:
        """The Runtime API listens; the runtime process is not started yet."""

    async def on_init_end(
        self, environment: ExecutionEnvironment, error: FunctionError | None
    ) -> None:
        """Init is over: the runtime and every extension asked for their first event, or init
        failed."""

    async def on_invoke_start(
        self, environment: ExecutionEnvironment, invocation: Invocation
    ) -> None:
        """The event is about to be handed to the runtime."""

    async def on_invoke_end(
        self, environment: ExecutionEnvironment, result: InvocationResult
    ) -> None:
        """The invocation's outcome is known (response, error, timeout or crash)."""

    async def on_freeze(self, environment: ExecutionEnvironment) -> None:
        """The runtime and every extension asked for their next event; the environment is
        frozen next."""

    async def on_shutdown(self, environment: ExecutionEnvironment, reason: str) -> None:
        """The environment goes away; `reason` as the Extensions API's SHUTDOWN event gives it:
        spindown, timeout or failure."""


@dataclass(frozen=True)
class _Failure:
    """A failed init or invocation: its status, the error document Lambda returns, the error."""

    status: Status
    payload: Any
    error: FunctionError


def _platform_failure(status: Status, error_type: str, message: str) -> _Failure:
    """A failure Lambda reports itself, the runtime having reported nothing."""
    return _Failure(
        status,
        {"errorMessage": message, "errorType": error_type},
        FunctionError(error_type, message),
    )


def _reported(reply: RuntimeReply) -> tuple[Any, FunctionError | None]:
    """The payload of what the runtime posted (JSON when it parses) and, for an error, the
    error."""
    try:
        payload = json.loads(reply.body)
    except ValueError:
        payload = reply.body.decode(errors="replace")
    if reply.error_type is None:
        return payload, None
    return payload, FunctionError.from_payload(payload, reply.error_type)


def _restore_failure(reply: RuntimeReply) -> _Failure:
    """The runtime's report of failed after-restore hooks: the error is of the type it posted
    in the header (Runtime.AfterRestoreError), whatever the exception's own type."""
    payload, error = _reported(reply)
    assert error is not None and reply.error_type is not None
    return _Failure(Status.ERROR, payload, dataclasses.replace(error, type=reply.error_type))


def _request_prefix(request_id: str | None) -> str:
    """How Lambda's own error messages start: `RequestId: <id> ` during an invocation."""
    return f"RequestId: {request_id} " if request_id else ""


def _exit_reason(returncode: int) -> str:
    """How Lambda words a runtime exit: `exit status 3`, `signal: killed`."""
    if returncode < 0:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return f"signal: {name.lower()}"
    return f"exit status {returncode}"


class ExecutionEnvironment:
    """One execution environment: a runtime process (awslambdaric, started through the exec
    wrapper when AWS_LAMBDA_EXEC_WRAPPER is set), the external extensions of the layers (a
    process each), and the server of the Runtime, Extensions and Telemetry APIs.

    With the init type SNAP_START the first invocation first runs the init that takes the
    snapshot (not billed to it) and freezes the environment, then restores it (the Restore
    phase: the runtime's after-restore hooks, the extensions carrying on from the snapshot).

    Invocations are served one at a time (the caller keeps `busy`). Between them the process
    groups of the runtime and the extensions are stopped (SIGSTOP) and continued (SIGCONT), as
    Lambda freezes its microVM. After a timeout, a crash or a failed init the environment is
    discarded: `alive` turns False and it serves nothing more. The stdout and stderr lines of
    the runtime and the extensions go to `logs`, and to the Telemetry API's subscribers.

    With the init type LAMBDA_MANAGED_INSTANCES the environment serves up to `max_concurrency`
    invocations at once, `invoke` being called concurrently: the runtime gets
    AWS_LAMBDA_MAX_CONCURRENCY and starts that many workers, each asking for invocations
    (`ConcurrentRuntimeAPIServer`); init is over once the extensions are ready and one worker
    asked. An invocation that finds no worker free fails at once (Runtime.Unavailable); one that
    times out fails without stopping its worker or the others. The environment is never frozen.
    Extensions register for SHUTDOWN only and follow invocations through the Telemetry API, which
    reports them as these environments do. An exit of the runtime process or a failed extension,
    during an invocation or between them, fails the environment. A worker that dies in an
    invocation (the runtime process living on) fails that invocation at its timeout: nothing
    tells the runtime API about the worker, so we assume nothing earlier. Shutdown as AWS's
    emulator of these environments does it: SIGTERM to the runtime and SIGKILL 600 ms later (at
    once with no extension registered), the telemetry flushed, then the SHUTDOWN event, with a
    deadline 2 s later, to the extensions registered for it, the others being killed.
    """

    def __init__(
        self,
        config: FunctionConfig,
        runtime_dir: Path,
        *,
        init_type: InitType = InitType.ON_DEMAND,
        hooks: Iterable[EnvironmentHooks] = (),
        max_concurrency: int = 1,
    ) -> None:
        self.config = config
        self.init_type = init_type
        self.max_concurrency = max_concurrency
        managed = init_type is InitType.LAMBDA_MANAGED_INSTANCES
        self.id = uuid.uuid4().hex
        self.log_stream_name = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{VERSION}]{self.id}"
        self.logs: list[str] = []
        self.init_duration_ms: float | None = None
        self.restore_duration_ms: float | None = None
        self.billed_restore_duration_ms: int | None = None
        self.busy = False
        self.process: asyncio.subprocess.Process | None = None
        self.extension_processes: dict[str, asyncio.subprocess.Process] = {}
        self.telemetry = TelemetryAPI(
            caller=lambda request: self.extensions.caller(request), managed_instances=managed
        )
        function_info = {
            "functionName": config.function_name,
            "functionVersion": VERSION,
            "handler": config.handler,
            "accountId": ACCOUNT_ID,
        }
        self._extension_paths = config.external_extensions()
        self.extensions = ExtensionsAPI(
            function_info,
            self._extension_paths,
            self.telemetry.extension_registered,
            managed_instances=managed,
        )
        self.server = (
            ConcurrentRuntimeAPIServer()
            if managed
            else RuntimeAPIServer(snap_start=init_type is InitType.SNAP_START)
        )
        self.server.add_routes([*self.extensions.routes(), *self.telemetry.routes()])
        self._runtime_dir = runtime_dir
        self._hooks = tuple(hooks)
        self._exited: asyncio.Task[int] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._extension_exits: list[asyncio.Task[int]] = []
        self._extension_readers: list[asyncio.Task[None]] = []
        self._discarded = False
        self._shutting_down: asyncio.Task[None] | None = None
        self._managed_init_task: asyncio.Task[_Failure | None] | None = None
        self._health_watch: asyncio.Task[None] | None = None

    @property
    def managed(self) -> bool:
        """A Lambda Managed Instances environment."""
        return self.init_type is InitType.LAMBDA_MANAGED_INSTANCES

    @property
    def alive(self) -> bool:
        """False once discarded or shut down."""
        return not self._discarded

    @property
    def variables(self) -> dict[str, str]:
        """The runtime process's environment, as Lambda defines it; valid once init started."""
        variables = self._lambda_variables()
        if self.managed:
            variables["AWS_LAMBDA_MAX_CONCURRENCY"] = str(self.max_concurrency)
        if self.init_type is InitType.SNAP_START:
            return {k: v for k, v in variables.items() if k not in NOT_SNAP_START_VARIABLES}
        return variables

    def _lambda_variables(self) -> dict[str, str]:
        config = self.config
        # The interpreter's directory first, as /var/lang/bin is on Lambda: `python3` in the
        # #! line of an extension is the runtime's Python.
        path = os.pathsep.join((str(config.python.parent), os.environ.get("PATH", "")))
        return {
            "PATH": path.rstrip(os.pathsep),
            "LANG": "en_US.UTF-8",
            "PYTHONPATH": os.pathsep.join(map(str, (config.code_dir, *config.layers))),
            **config.env,
            "_HANDLER": config.handler,
            "AWS_LAMBDA_RUNTIME_API": self.server.address,
            "AWS_LAMBDA_FUNCTION_NAME": config.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": VERSION,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": config.log_group_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": self.log_stream_name,
            "AWS_LAMBDA_INITIALIZATION_TYPE": str(self.init_type),
            "AWS_REGION": config.region,
            "AWS_DEFAULT_REGION": config.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "LAMBDA_RUNTIME_DIR": str(self._runtime_dir),
            "TZ": ":UTC",
        }

    @property
    def extension_variables(self) -> dict[str, str]:
        """The environment of the external extensions: the runtime's, without its own."""
        variables = self.variables
        return {k: v for k, v in variables.items() if k not in RUNTIME_ONLY_VARIABLES}

    def _command(self) -> list[str]:
        # -P keeps the runtime dir off sys.path: the function imports from its code and layers.
        command = [str(self.config.python), "-P", str(self._runtime_dir / BOOTSTRAP)]
        wrapper = self.config.env.get("AWS_LAMBDA_EXEC_WRAPPER")
        return self._sandboxed([wrapper, *command] if wrapper else command)

    def _sandboxed(self, command: list[str]) -> list[str]:
        """`command` in the environment's sandbox; OSError, as exec would raise it, when its
        program is not an executable file (the sandbox's shell would only exit 127)."""
        program = command[0]
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        return sandboxed(command, self._runtime_dir / "hosts")

    # --- lifecycle --------------------------------------------------------------------------

    async def provision(self) -> FunctionError | None:
        """Init ahead of any invocation (provisioned concurrency, or Lambda Managed Instances),
        then freeze (unless managed). Returns the init error, if any; the environment is then
        discarded."""
        if self.managed:
            failure = await self._managed_init(request_id=None)
            return failure.error if failure else None
        failure = await self._init(request_id=None)
        if failure:
            return failure.error
        await self._freeze()
        return None

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        """Run one invocation, starting the extensions and the runtime first when this is the
        environment's first one (cold start). It ends once the runtime replied and every
        extension asked for its next event. Never raises for what the function or the
        extensions do; see `InvocationResult`."""
        if self.managed:
            return await self._invoke_managed(invocation)
        cold = self.process is None
        if cold:
            failure = await self._cold_start(invocation.request_id)
            if failure:
                return self._result(
                    invocation, failure.status, failure.payload, failure.error, 0.0, 0.0, cold=True
                )
        else:
            self._thaw()
        for hook in self._hooks:
            await hook.on_invoke_start(self, invocation)
        started, started_epoch = time.monotonic(), time.time()
        invocation.deadline_ms = int(started_epoch * 1000 + self.config.timeout * 1000)
        self.telemetry.invoke_start(invocation, VERSION)
        self.extensions.invoke(invocation)
        self.server.dispatch(invocation)
        done = await self._first(invocation.reply, timeout=self.config.timeout)
        runtime_ms = (time.monotonic() - started) * 1000
        if invocation.reply in done:
            reply = invocation.reply.result()
            payload, error = _reported(reply)
            status = Status.SUCCESS if error is None else Status.ERROR
            self.telemetry.runtime_done(
                invocation,
                status.telemetry,
                error.type if error else None,
                started=started_epoch,
                duration_ms=runtime_ms,
                response_started=reply.arrived,
                produced_bytes=len(reply.body) if error is None else None,
            )
            failure = await self._extensions_done(invocation.request_id, started)
        else:
            failure = self._ended_early(invocation.request_id, self.config.timeout)
            self.telemetry.runtime_done(
                invocation,
                failure.status.telemetry,
                failure.error.type,
                started=started_epoch,
                duration_ms=runtime_ms,
            )
        if failure:
            status, payload, error = failure.status, failure.payload, failure.error
        duration_ms = (time.monotonic() - started) * 1000
        result = self._result(
            invocation, status, payload, error, duration_ms, runtime_ms, cold=cold
        )
        self._report(invocation, result)
        for hook in self._hooks:
            await hook.on_invoke_end(self, result)
        if status in (Status.TIMEOUT, Status.CRASH):
            await self._discard("timeout" if status is Status.TIMEOUT else "failure")
        else:
            await self._settle(started)
        return result

    async def shutdown(self) -> None:
        """Shutdown phase: SIGTERM to the runtime's process group, SIGKILL to what is still
        running after 2 s. With external extensions the runtime gets 300 ms (500 ms when an
        internal extension registered), then the extensions get the SHUTDOWN event and the rest
        of the 2 s. (Lambda Managed Instances: see the class.) Idempotent."""
        await self._discard("spindown", grace=SHUTDOWN_GRACE)

    # --- Lambda Managed Instances -----------------------------------------------------------

    async def _managed_init(self, request_id: str | None) -> _Failure | None:
        """Init, once: invocations arriving meanwhile wait for the same init. Once it
        succeeded, the environment's health is watched."""
        if self._managed_init_task is None:
            self._managed_init_task = asyncio.ensure_future(self._init(request_id))
        failure = await asyncio.shield(self._managed_init_task)
        if failure is None and self._health_watch is None:
            self._health_watch = asyncio.ensure_future(self._watch_health())
        return failure

    async def _watch_health(self) -> None:
        """The environment fails when the runtime process exits or an extension fails, be it
        in an invocation or between invocations."""
        assert self._exited is not None
        either: set[asyncio.Future[Any]] = {self._exited, self.extensions.failure}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        await self._discard("failure")

    async def _invoke_managed(self, invocation: Invocation) -> InvocationResult:
        """One invocation beside others in flight, on a free runtime worker; see the class."""
        assert isinstance(self.server, ConcurrentRuntimeAPIServer)
        cold = self._managed_init_task is None or not self._managed_init_task.done()
        failure = await self._managed_init(invocation.request_id)
        if failure:
            return self._result(
                invocation, failure.status, failure.payload, failure.error, 0.0, 0.0, cold=True
            )
        if not self.alive or not self.server.idle_workers:
            return self._unavailable(invocation, cold)
        for hook in self._hooks:
            await hook.on_invoke_start(self, invocation)
        started, started_epoch = time.monotonic(), time.time()
        invocation.deadline_ms = int(started_epoch * 1000 + self.config.timeout * 1000)
        if not self.server.dispatch(invocation):  # taken while a hook ran
            return self._unavailable(invocation, cold)
        self.telemetry.invoke_start(invocation, VERSION)
        done = await self._first(invocation.reply, timeout=self.config.timeout)
        duration_ms = (time.monotonic() - started) * 1000
        response_started = None
        if invocation.reply in done:
            reply = invocation.reply.result()
            payload, error = _reported(reply)
            status = Status.SUCCESS if error is None else Status.ERROR
            response_started = reply.arrived
        else:
            failure = self._ended_early(invocation.request_id, self.config.timeout)
            status, payload, error = failure.status, failure.payload, failure.error
            self.server.expire(invocation.request_id)
        self.telemetry.managed_report(
            invocation,
            status.telemetry,
            error.type if error else None,
            started=started_epoch,
            duration_ms=duration_ms,
            response_started=response_started,
        )
        result = self._result(
            invocation, status, payload, error, duration_ms, duration_ms, cold=cold
        )
        for hook in self._hooks:
            await hook.on_invoke_end(self, result)
        if failure and failure.status is not Status.TIMEOUT:
            await self._discard("failure")
        return result

    def _unavailable(self, invocation: Invocation, cold: bool) -> InvocationResult:
        message = f"{_request_prefix(invocation.request_id)}Error: no runtime worker is free"
        failure = _platform_failure(Status.UNAVAILABLE, "Runtime.Unavailable", message)
        return self._result(
            invocation, failure.status, failure.payload, failure.error, 0.0, 0.0, cold=cold
        )

    async def _cold_start(self, request_id: str) -> _Failure | None:
        """Init; with SnapStart, the init of the snapshot, then the restore from it."""
        if self.init_type is not InitType.SNAP_START:
            return await self._init(request_id)
        failure = await self._init(request_id=None)  # ahead of the invocation, outside of it
        if failure:
            return failure
        await self._freeze()  # the snapshot
        return await self._restore(request_id)

    async def _restore(self, request_id: str) -> _Failure | None:
        """Restore phase: thaw the snapshot; the runtime runs its after-restore hooks and asks
        for its first invocation, within RESTORE_TIMEOUT. Discards the environment on failure."""
        started = time.monotonic()
        self.telemetry.restore_start(self.config.function_name, VERSION)
        self._thaw()
        thawed = time.monotonic()
        self.server.restore()
        ready = asyncio.ensure_future(self._ready())
        restore_error = self.server.restore_error
        done = await self._first(ready, restore_error, timeout=RESTORE_TIMEOUT)
        ready.cancel()
        ended = time.monotonic()
        self.restore_duration_ms = (ended - started) * 1000
        # Lambda bills the runtime's part, not its own restoring of the snapshot.
        self.billed_restore_duration_ms = math.ceil((ended - thawed) * 1000)
        failure = None
        if restore_error.done():  # posted before the runtime exits
            failure = _restore_failure(restore_error.result())
        elif ready not in done:
            failure = self._ended_early(request_id, RESTORE_TIMEOUT, phase="Restore")
        status, error = (failure.status, failure.error) if failure else (Status.SUCCESS, None)
        duration_ms = self.restore_duration_ms
        self.telemetry.restore_done(status.telemetry, error.type if error else None, duration_ms)
        if failure:
            await self._discard("failure")
        return failure

    async def _init(self, request_id: str | None) -> _Failure | None:
        """Start the extensions, then the runtime once they registered, and wait until the
        runtime and every extension asked for their next event (or something failed)."""
        for hook in self._hooks:
            self.server.add_routes(hook.routes(self))
        await self.server.start()
        for hook in self._hooks:
            await hook.on_init_start(self)
        started = time.monotonic()
        deadline = started + self.config.init_timeout
        self.telemetry.init_start(str(self.init_type), self.config.function_name, VERSION)
        failure = await self._start_extensions(request_id, deadline)
        if failure is None:
            failure = await self._start_runtime(request_id, deadline)
        self.init_duration_ms = (time.monotonic() - started) * 1000
        self.extensions.end_init()
        self.telemetry.end_init()
        status, error = (failure.status, failure.error) if failure else (Status.SUCCESS, None)
        self.telemetry.init_done(
            str(self.init_type),
            status.telemetry,
            error.type if error else None,
            self.init_duration_ms,
        )
        for hook in self._hooks:
            await hook.on_init_end(self, error)
        if failure:
            await self._discard("failure")
        return failure

    async def _start_extensions(self, request_id: str | None, deadline: float) -> _Failure | None:
        """Start the external extensions and wait until each registered."""
        for name, path in self._extension_paths.items():
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._sandboxed([str(path)]),
                    cwd=self.config.code_dir,
                    env=self.extension_variables,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                message = f"{_request_prefix(request_id)}Error: extension {name}: {e}"
                return _platform_failure(Status.CRASH, "Extension.LaunchError", message)
            self.extension_processes[name] = process
            self._extension_exits.append(asyncio.create_task(self._watch(name, process)))
            reader = asyncio.create_task(self._read_logs(process.stdout, "extension"))
            self._extension_readers.append(reader)
        if not self.extension_processes:
            return None
        registered = self.extensions.all_external_registered
        done = await self._first(registered, timeout=deadline - time.monotonic())
        if registered in done:
            return None
        return self._ended_early(request_id, self.config.init_timeout, phase="Init")

    async def _start_runtime(self, request_id: str | None, deadline: float) -> _Failure | None:
        """Start the runtime and wait until it and every extension asked for their next
        event."""
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self._command(),
                cwd=self.config.code_dir,
                env=self.variables,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # one process group: frozen, thawed and killed as one
            )
        except OSError as e:
            prefix = _request_prefix(request_id)
            return _platform_failure(
                Status.CRASH, "Runtime.InvalidEntrypoint", f"{prefix}Error: {e}"
            )
        self._exited = asyncio.create_task(self.process.wait())
        self._reader = asyncio.create_task(self._read_logs(self.process.stdout, "function"))
        ready = asyncio.ensure_future(self._ready())
        init_error = self.server.init_error
        done = await self._first(ready, init_error, timeout=deadline - time.monotonic())
        ready.cancel()
        if init_error in done:
            payload, error = _reported(init_error.result())
            assert error is not None, "an init error always has a type"
            return _Failure(Status.ERROR, payload, error)
        if ready in done:
            return None
        return self._ended_early(request_id, self.config.init_timeout, phase="Init")

    async def _ready(self) -> None:
        await self.server.ready
        await self.extensions.idle()

    async def _extensions_done(self, request_id: str, started: float) -> _Failure | None:
        """After the runtime's reply: wait until every extension asked for its next event,
        within the function's timeout, which bounds the whole Invoke phase."""
        idle = asyncio.ensure_future(self.extensions.idle())
        remaining = started + self.config.timeout - time.monotonic()
        either: set[asyncio.Future[Any]] = {idle, self.extensions.failure}
        done, _ = await asyncio.wait(
            either,
            timeout=max(remaining, 0.0),
            return_when=asyncio.FIRST_COMPLETED,
        )
        idle.cancel()
        if idle in done:
            return None
        prefix = _request_prefix(request_id)
        if self.extensions.failure.done():
            return self._extension_failure(prefix)
        return self._timed_out(prefix, self.config.timeout, "Task")

    async def _settle(self, started: float) -> None:
        """After a reply: freeze once the runtime asks for its next invocation; discard the
        environment when it exits instead, or does not ask before the deadline."""
        remaining = started + self.config.timeout - time.monotonic()
        done = await self._first(self.server.ready, timeout=remaining)
        if self.server.ready in done:
            await self._freeze()
        else:
            await self._discard("failure")

    async def _freeze(self) -> None:
        for hook in self._hooks:
            await hook.on_freeze(self)
        self.telemetry.freeze()
        self._signal(signal.SIGSTOP, self._processes())

    def _thaw(self) -> None:
        self._signal(signal.SIGCONT, self._processes())
        self.telemetry.thaw()

    async def _discard(self, reason: str, grace: float = 0.0) -> None:
        """Shut down, once; a later call waits for the same shutdown to end."""
        if self._shutting_down is None:
            self._discarded = True
            self._shutting_down = asyncio.ensure_future(self._shut_down(reason, grace))
        await asyncio.shield(self._shutting_down)
        watch = self._health_watch
        if watch is not None and watch is not asyncio.current_task():
            await watch  # it ends once the runtime exited

    async def _shut_down(self, reason: str, grace: float) -> None:
        for hook in self._hooks:
            await hook.on_shutdown(self, reason)
        started = time.monotonic()
        if self.managed:
            registered = bool(self.extensions.extensions)
            await self._stop_runtime(MANAGED_RUNTIME_SHUTDOWN_GRACE if registered else 0.0)
            started = time.monotonic()
        else:
            if self.extension_processes:
                internal = any(not e.external for e in self.extensions.extensions.values())
                share = RUNTIME_SHUTDOWN_GRACE_INTERNAL if internal else RUNTIME_SHUTDOWN_GRACE
                grace = min(grace, share)
            await self._stop_runtime(grace)
        await self._stop_extensions(reason, deadline=started + SHUTDOWN_GRACE)
        await self.telemetry.close()
        await self.server.stop()

    async def _stop_runtime(self, grace: float) -> None:
        """SIGTERM, and SIGKILL after `grace` seconds (at once when 0)."""
        if self._exited is None:
            return
        runtime = self._processes()[:1]
        if grace and not self._exited.done():
            self._signal(signal.SIGTERM, runtime)
            # A stopped process acts on SIGTERM once continued.
            self._signal(signal.SIGCONT, runtime)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._exited), grace)
        # The whole group, so that a child the runtime started does not outlive it.
        self._signal(signal.SIGKILL, runtime)
        await self._exited
        assert self._reader is not None
        await self._reader

    async def _stop_extensions(self, reason: str, deadline: float) -> None:
        """The extensions' part of shutdown: they get what telemetry is buffered, then the
        SHUTDOWN event; those still running at `deadline` are killed."""
        if not self.extension_processes:
            return
        extensions = list(self.extension_processes.values())
        self._signal(signal.SIGCONT, extensions)
        self.telemetry.thaw()
        await self.telemetry.flush(timeout=deadline - time.monotonic())
        deadline_ms = int((time.time() + deadline - time.monotonic()) * 1000)
        receivers = {extension.name for extension in self.extensions.shutdown(reason, deadline_ms)}
        if self.managed:
            others = [p for name, p in self.extension_processes.items() if name not in receivers]
            self._signal(signal.SIGKILL, others)
        await asyncio.wait(self._extension_exits, timeout=max(deadline - time.monotonic(), 0.0))
        self._signal(signal.SIGKILL, extensions)
        await asyncio.gather(*self._extension_exits, *self._extension_readers)

    # --- helpers ----------------------------------------------------------------------------

    async def _first(self, *futures: asyncio.Future, timeout: float) -> set[asyncio.Future]:
        """Wait until one of `futures` is done, the runtime exits, an extension fails, or
        `timeout` seconds pass; returns what is done."""
        watched = {*futures, self.extensions.failure}
        if self._exited is not None:
            watched.add(self._exited)
        done, _ = await asyncio.wait(
            watched, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED
        )
        return done

    def _ended_early(self, request_id: str | None, limit: float, phase: str = "Task") -> _Failure:
        """The failure of a phase that ended without a reply: an extension failed, the runtime
        exited, or `limit` seconds passed."""
        prefix = _request_prefix(request_id)
        if self.extensions.failure.done():
            return self._extension_failure(prefix)
        if self._exited is not None and self._exited.done():
            reason = _exit_reason(self._exited.result())
            message = f"{prefix}Error: Runtime exited with error: {reason}"
            return _platform_failure(Status.CRASH, "Runtime.ExitError", message)
        return self._timed_out(prefix, limit, phase)

    def _extension_failure(self, prefix: str) -> _Failure:
        failure: ExtensionFailure = self.extensions.failure.result()
        status = Status.CRASH if failure.exited else Status.ERROR
        return _platform_failure(status, failure.error_type, f"{prefix}Error: {failure.message}")

    @staticmethod
    def _timed_out(prefix: str, limit: float, phase: str) -> _Failure:
        message = f"{prefix}Error: {phase} timed out after {limit:.2f} seconds"
        return _platform_failure(Status.TIMEOUT, "Sandbox.Timedout", message)

    def _result(
        self,
        invocation: Invocation,
        status: Status,
        payload: Any,
        error: FunctionError | None,
        duration_ms: float,
        runtime_duration_ms: float,
        *,
        cold: bool,
    ) -> InvocationResult:
        restored = cold and self.init_type is InitType.SNAP_START
        init_ms = self.init_duration_ms if cold and not restored else None
        # Since August 2025 Lambda bills the init of on-demand environments with the invocation;
        # a restore is billed apart.
        billed = None if self.managed else math.ceil(duration_ms + (init_ms or 0.0))
        return InvocationResult(
            request_id=invocation.request_id,
            status=status,
            payload=payload,
            error=error,
            cold=cold,
            init_duration_ms=init_ms,
            restore_duration_ms=self.restore_duration_ms if restored else None,
            billed_restore_duration_ms=self.billed_restore_duration_ms if restored else None,
            duration_ms=duration_ms,
            runtime_duration_ms=runtime_duration_ms,
            billed_duration_ms=billed,
            max_memory_used_mb=self._memory_used_mb(),
            environment_id=self.id,
            log_stream_name=self.log_stream_name,
            trace_header=invocation.trace_header,
        )

    def _report(self, invocation: Invocation, result: InvocationResult) -> None:
        metrics: dict[str, Any] = {
            "durationMs": result.duration_ms,
            "billedDurationMs": result.billed_duration_ms,
            "memorySizeMB": self.config.memory_mb,
            "maxMemoryUsedMB": result.max_memory_used_mb,
        }
        if result.init_duration_ms is not None:
            metrics["initDurationMs"] = result.init_duration_ms
        if result.restore_duration_ms is not None:
            metrics["restoreDurationMs"] = result.restore_duration_ms
            metrics["billedRestoreDurationMs"] = result.billed_restore_duration_ms
        error_type = result.error.type if result.error else None
        self.telemetry.report(invocation, result.status.telemetry, error_type, metrics)

    def _memory_used_mb(self) -> int:
        """Resident memory of the environment's live processes and their children (the
        runtime's workers), in MB rounded up. Memory use of a Python process rarely shrinks, so
        it stands for the invocation's peak."""
        rss = 0
        for process in self._processes():
            if process.returncode is None:
                with contextlib.suppress(psutil.Error):
                    parent = psutil.Process(process.pid)
                    for member in (parent, *parent.children(recursive=True)):
                        rss += member.memory_info().rss
        return math.ceil(rss / 2**20)

    def _processes(self) -> list[asyncio.subprocess.Process]:
        """The runtime (first, once started) and the external extensions."""
        runtime = [self.process] if self.process is not None else []
        return [*runtime, *self.extension_processes.values()]

    @staticmethod
    def _signal(signum: int, processes: Iterable[asyncio.subprocess.Process]) -> None:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    async def _watch(self, name: str, process: asyncio.subprocess.Process) -> int:
        """Wait for an extension's exit, a failure unless the environment is shutting down."""
        returncode = await process.wait()
        if not self._discarded:
            message = f"Extension {name} exited with error: {_exit_reason(returncode)}"
            failure = ExtensionFailure(name, "Extension.Crash", message, exited=True)
            self.extensions.fail(failure)
        return returncode

    async def _read_logs(self, stream: asyncio.StreamReader | None, category: str) -> None:
        """Lines to `logs` and to telemetry as `category` (function or extension)."""
        assert stream is not None
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._log(category, line)
        if pending:
            self._log(category, pending)

    def _log(self, category: str, line: bytes) -> None:
        text = line.decode(errors="replace")
        self.logs.append(text)
        self.telemetry.log(category, text)
