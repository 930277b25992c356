"""One Lambda execution environment: a real runtime process and the Runtime API it talks to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.testing.lambda_emulator.runtime_api import (
    Invocation,
    RuntimeAPIServer,
    RuntimeReply,
)

VERSION = "$LATEST"
ACCOUNT_ID = "123456789012"
EXECUTION_ENV = f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"
SHUTDOWN_GRACE = 2.0  # seconds between SIGTERM and SIGKILL, Lambda's cap on the Shutdown phase
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


def install_runtime(directory: Path) -> None:
    """Write the runtime bootstrap into `directory` (the environments' LAMBDA_RUNTIME_DIR)."""
    (directory / BOOTSTRAP).write_text(_BOOTSTRAP_SOURCE)


class InitType(StrEnum):
    """AWS_LAMBDA_INITIALIZATION_TYPE."""

    ON_DEMAND = "on-demand"
    PROVISIONED = "provisioned-concurrency"


class Status(StrEnum):
    SUCCESS = "success"
    ERROR = "error"  # the function (or its init) reported an error
    TIMEOUT = "timeout"
    CRASH = "crash"  # the runtime process exited, or could not be started


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
    cold: bool  # this invocation ran the environment's init
    init_duration_ms: float | None  # set when cold
    duration_ms: float
    billed_duration_ms: int  # rounded up to the ms; includes the init of an on-demand cold start
    environment_id: str
    log_stream_name: str
    trace_header: str


@dataclass(frozen=True)
class FunctionConfig:
    """A function's configuration. Times in seconds; `env` holds the user's variables (including
    AWS_LAMBDA_EXEC_WRAPPER); `layers` are directories added to PYTHONPATH after `code_dir`,
    as /opt/python is on Lambda."""

    handler: str
    code_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 3.0
    memory_mb: int = 128
    layers: tuple[Path, ...] = ()
    function_name: str = "coldtail-function"
    region: str = "us-east-1"
    init_timeout: float = 10.0

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


class EnvironmentHooks:
    """Extension point around an environment's lifecycle, for the Extensions and Telemetry
    APIs: override what you need. Each coroutine is awaited at that point and delays it, as
    extensions delay Lambda's phases."""

    def routes(self, environment: ExecutionEnvironment) -> Iterable[web.AbstractRouteDef]:
        """Routes served on the environment's AWS_LAMBDA_RUNTIME_API address."""
        return ()

    async def on_init_start(self, environment: ExecutionEnvironment) -> None:
        """The Runtime API listens; the runtime process is not started yet."""

    async def on_init_end(
        self, environment: ExecutionEnvironment, error: FunctionError | None
    ) -> None:
        """Init is over: the runtime asked for its first invocation, or init failed."""

    async def on_invoke_start(
        self, environment: ExecutionEnvironment, invocation: Invocation
    ) -> None:
        """The event is about to be handed to the runtime."""

    async def on_invoke_end(
        self, environment: ExecutionEnvironment, result: InvocationResult
    ) -> None:
        """The invocation's outcome is known (response, error, timeout or crash)."""

    async def on_freeze(self, environment: ExecutionEnvironment) -> None:
        """The runtime asked for its next invocation; the environment is frozen next."""

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


def _request_prefix(request_id: str | None) -> str:
    """How Lambda's own error messages start: `RequestId: <id> ` during an invocation."""
    return f"RequestId: {request_id} " if request_id else ""


def _exit_reason(returncode: int) -> str:
    """How Lambda words a runtime exit: `exit status 3`, `signal: killed`."""
    if returncode < 0:
        return f"signal: {signal.strsignal(-returncode).lower()}"
    return f"exit status {returncode}"


class ExecutionEnvironment:
    """One execution environment: a runtime process (awslambdaric, started through the exec
    wrapper when AWS_LAMBDA_EXEC_WRAPPER is set) and its Runtime API server.

    Invocations are served one at a time (the caller keeps `busy`). Between them the runtime's
    process group is stopped (SIGSTOP) and continued (SIGCONT), as Lambda freezes its microVM.
    After a timeout, a crash or a failed init the environment is discarded: `alive` turns
    False and it serves nothing more. The runtime's stdout and stderr lines go to `logs`.
    """

    def __init__(
        self,
        config: FunctionConfig,
        runtime_dir: Path,
        *,
        init_type: InitType = InitType.ON_DEMAND,
        hooks: Iterable[EnvironmentHooks] = (),
    ) -> None:
        self.config = config
        self.init_type = init_type
        self.id = uuid.uuid4().hex
        self.log_stream_name = f"{time.strftime('%Y/%m/%d', time.gmtime())}/[{VERSION}]{self.id}"
        self.logs: list[str] = []
        self.init_duration_ms: float | None = None
        self.busy = False
        self.server = RuntimeAPIServer()
        self.process: asyncio.subprocess.Process | None = None
        self._runtime_dir = runtime_dir
        self._hooks = tuple(hooks)
        self._exited: asyncio.Task[int] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._discarded = False

    @property
    def alive(self) -> bool:
        """False once discarded or shut down."""
        return not self._discarded

    @property
    def variables(self) -> dict[str, str]:
        """The runtime process's environment, as Lambda defines it; valid once init started."""
        config = self.config
        return {
            "PATH": os.environ.get("PATH", os.defpath),
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
            "AWS_EXECUTION_ENV": EXECUTION_ENV,
            "LAMBDA_TASK_ROOT": str(config.code_dir),
            "LAMBDA_RUNTIME_DIR": str(self._runtime_dir),
            "TZ": ":UTC",
        }

    def _command(self) -> list[str]:
        # -P keeps the runtime dir off sys.path: the function imports from its code and layers.
        command = [sys.executable, "-P", str(self._runtime_dir / BOOTSTRAP)]
        wrapper = self.config.env.get("AWS_LAMBDA_EXEC_WRAPPER")
        return [wrapper, *command] if wrapper else command

    # --- lifecycle --------------------------------------------------------------------------

    async def provision(self) -> FunctionError | None:
        """Init ahead of any invocation (provisioned concurrency), then freeze. Returns the
        init error, if any; the environment is then discarded."""
        failure = await self._init(request_id=None)
        if failure:
            return failure.error
        await self._freeze()
        return None

    async def invoke(self, invocation: Invocation) -> InvocationResult:
        """Run one invocation, starting the runtime first when this is the environment's first
        one (cold start). Never raises for what the function does; see `InvocationResult`."""
        cold = self.process is None
        if cold:
            failure = await self._init(invocation.request_id)
            if failure:
                return self._result(
                    invocation, failure.status, failure.payload, failure.error, 0.0, cold=True
                )
        else:
            self._signal(signal.SIGCONT)
        for hook in self._hooks:
            await hook.on_invoke_start(self, invocation)
        started = time.monotonic()
        invocation.deadline_ms = int(time.time() * 1000 + self.config.timeout * 1000)
        self.server.dispatch(invocation)
        done = await self._first(invocation.reply, timeout=self.config.timeout)
        duration_ms = (time.monotonic() - started) * 1000
        if invocation.reply in done:
            payload, error = _reported(invocation.reply.result())
            status = Status.SUCCESS if error is None else Status.ERROR
        else:
            failure = self._ended_early(invocation.request_id, self.config.timeout)
            status, payload, error = failure.status, failure.payload, failure.error
        result = self._result(invocation, status, payload, error, duration_ms, cold=cold)
        for hook in self._hooks:
            await hook.on_invoke_end(self, result)
        if status in (Status.TIMEOUT, Status.CRASH):
            await self._discard("timeout" if status is Status.TIMEOUT else "failure")
        else:
            await self._settle(started)
        return result

    async def shutdown(self) -> None:
        """Shutdown phase: SIGTERM to the runtime's process group, SIGKILL to what is still
        running after 2 s. Idempotent."""
        await self._discard("spindown", grace=SHUTDOWN_GRACE)

    async def _init(self, request_id: str | None) -> _Failure | None:
        """Start the runtime and wait until it asks for its first invocation (or fails)."""
        for hook in self._hooks:
            self.server.add_routes(hook.routes(self))
        await self.server.start()
        for hook in self._hooks:
            await hook.on_init_start(self)
        started = time.monotonic()
        failure = None
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
            failure = _platform_failure(
                Status.CRASH, "Runtime.InvalidEntrypoint", f"{prefix}Error: {e}"
            )
        else:
            self._exited = asyncio.create_task(self.process.wait())
            self._reader = asyncio.create_task(self._read_logs(self.process.stdout))
            init_error = self.server.init_error
            done = await self._first(
                self.server.ready, init_error, timeout=self.config.init_timeout
            )
            if init_error in done:
                failure = _Failure(Status.ERROR, *_reported(init_error.result()))
            elif self.server.ready not in done:
                failure = self._ended_early(request_id, self.config.init_timeout, phase="Init")
        self.init_duration_ms = (time.monotonic() - started) * 1000
        for hook in self._hooks:
            await hook.on_init_end(self, failure.error if failure else None)
        if failure:
            await self._discard("failure")
        return failure

    async def _settle(self, started: float) -> None:
        """After a reply: freeze once the runtime asks for its next invocation; discard the
        environment when it exits instead, or does not ask before the deadline."""
        remaining = started + self.config.timeout - time.monotonic()
        done = await self._first(self.server.ready, timeout=max(remaining, 0.0))
        if self.server.ready in done:
            await self._freeze()
        else:
            await self._discard("failure")

    async def _freeze(self) -> None:
        for hook in self._hooks:
            await hook.on_freeze(self)
        self._signal(signal.SIGSTOP)

    async def _discard(self, reason: str, grace: float = 0.0) -> None:
        if self._discarded:
            return
        self._discarded = True
        for hook in self._hooks:
            await hook.on_shutdown(self, reason)
        if self._exited is not None:
            if grace and not self._exited.done():
                self._signal(signal.SIGTERM)
                self._signal(signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exited), grace)
            # The whole group, so that a child the runtime started does not outlive it.
            self._signal(signal.SIGKILL)
            await self._exited
        if self._reader is not None:
            await self._reader
        await self.server.stop()

    # --- helpers ----------------------------------------------------------------------------

    async def _first(self, *futures: asyncio.Future, timeout: float) -> set[asyncio.Future]:
        """Wait until one of `futures` is done, the runtime exits, or `timeout` seconds pass;
        returns what is done."""
        assert self._exited is not None
        done, _ = await asyncio.wait(
            {*futures, self._exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        return done

    def _ended_early(self, request_id: str | None, limit: float, phase: str = "Task") -> _Failure:
        """The failure of a phase that ended without a reply: the runtime exited, or `limit`
        seconds passed."""
        prefix = _request_prefix(request_id)
        assert self._exited is not None
        if self._exited.done():
            reason = _exit_reason(self._exited.result())
            message = f"{prefix}Error: Runtime exited with error: {reason}"
            return _platform_failure(Status.CRASH, "Runtime.ExitError", message)
        message = f"{prefix}Error: {phase} timed out after {limit:.2f} seconds"
        return _platform_failure(Status.TIMEOUT, "Sandbox.Timedout", message)

    def _result(
        self,
        invocation: Invocation,
        status: Status,
        payload: Any,
        error: FunctionError | None,
        duration_ms: float,
        *,
        cold: bool,
    ) -> InvocationResult:
        init_ms = self.init_duration_ms if cold else None
        # Since August 2025 Lambda bills the init of on-demand environments with the invocation.
        billed = math.ceil(duration_ms + (init_ms or 0.0))
        return InvocationResult(
            request_id=invocation.request_id,
            status=status,
            payload=payload,
            error=error,
            cold=cold,
            init_duration_ms=init_ms,
            duration_ms=duration_ms,
            billed_duration_ms=billed,
            environment_id=self.id,
            log_stream_name=self.log_stream_name,
            trace_header=invocation.trace_header,
        )

    def _signal(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    async def _read_logs(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        pending = b""
        while chunk := await stream.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            self.logs.extend(line.decode(errors="replace") for line in lines)
        if pending:
            self.logs.append(pending.decode(errors="replace"))
