"""A Lambda function run locally: its configuration, its execution environments, invoke."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from emulator.environment import (
    EnvironmentHooks,
    ExecutionEnvironment,
    FunctionConfig,
    InitType,
    InvocationResult,
    install_runtime,
    python_runtime,
)
from emulator.runtime_api import Invocation


def trace_header() -> str:
    """A new X-Ray trace header, sampled, as Lambda passes it with active tracing."""
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=1"


class LambdaEmulator:
    """A Lambda function whose handler runs in real awslambdaric processes on this machine.

        async with LambdaEmulator("app.handler", code_dir, timeout=3) as fn:
            result = await fn.invoke({"key": "value"})

    An invocation goes to an idle environment, or to a new one (a cold start) when all are
    busy, so concurrent invocations run in separate processes. `provisioned` environments are
    initialised by `start`, before any invocation. Environments that time out, crash or fail
    init are discarded; the next invocation starts a new one. `log_streams` maps every
    environment's log stream name to its log lines, discarded environments included.
    `exec_wrapper` sets AWS_LAMBDA_EXEC_WRAPPER; `hooks` apply to every environment. `python`
    is the runtime's interpreter (default: this one), which needs awslambdaric.
    `telemetry_subscription_status`, when set, is how the Telemetry API answers every
    subscription, as when Lambda refuses it or fails; the Telemetry API events of the types in
    `telemetry_withheld` are never delivered. With `snap_start` the function is a version
    published with SnapStart: each new environment is restored from a snapshot of its init (see
    `ExecutionEnvironment`); Lambda does not combine it with provisioned concurrency.

    With `managed_instances` the function runs on Lambda Managed Instances: `start` initialises
    one environment (Lambda readies them when the version is published), which serves up to
    `max_concurrency` invocations at once, so concurrent `invoke` calls run concurrently in it;
    one that finds every runtime worker busy fails at once with Runtime.Unavailable (status
    UNAVAILABLE), not queued. The environment is never frozen, and a timeout fails only its
    invocation. When the environment failed, the next invocation initialises a new one (cold).
    `shutdown` shuts it down even with invocations in flight, which fail. Neither SnapStart nor
    provisioned concurrency combine with it. The emulator does not hold the runtime to Python
    3.13+, the versions Lambda offers there, as long as awslambdaric 4 runs on it.
    """

    def __init__(
        self,
        handler: str,
        code_dir: str | Path,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 3.0,
        memory_mb: int = 128,
        exec_wrapper: str | Path | None = None,
        layers: Iterable[str | Path] = (),
        provisioned: int = 0,
        function_name: str = "coldtail-function",
        region: str = "us-east-1",
        init_timeout: float = 10.0,
        hooks: Iterable[EnvironmentHooks] = (),
        python: str | Path | None = None,
        telemetry_subscription_status: int | None = None,
        telemetry_withheld: Iterable[str] = (),
        snap_start: bool = False,
        managed_instances: bool = False,
        max_concurrency: int = 4,
    ) -> None:
        if snap_start and provisioned:
            raise ValueError("SnapStart and provisioned concurrency cannot be combined")
        if managed_instances and (snap_start or provisioned):
            raise ValueError(
                "Lambda Managed Instances combine with neither SnapStart nor provisioned "
                "concurrency"
            )
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        variables = dict(env or {})
        runtime_python: dict[str, Any] = {}
        if python is not None:
            runtime_python = {"python": Path(python), "runtime": python_runtime(Path(python))}
        if exec_wrapper is not None:
            variables["AWS_LAMBDA_EXEC_WRAPPER"] = str(exec_wrapper)
        self.config = FunctionConfig(
            handler=handler,
            code_dir=Path(code_dir).resolve(),
            env=variables,
            timeout=timeout,
            memory_mb=memory_mb,
            layers=tuple(Path(layer).resolve() for layer in layers),
            function_name=function_name,
            region=region,
            init_timeout=init_timeout,
            **runtime_python,
        )
        self.telemetry_subscription_status = telemetry_subscription_status
        self.telemetry_withheld = frozenset(telemetry_withheld)
        self.provisioned = provisioned
        self.snap_start = snap_start
        self.managed_instances = managed_instances
        self.max_concurrency = max_concurrency
        self.environments: list[ExecutionEnvironment] = []
        self._retired: list[ExecutionEnvironment] = []
        self.log_streams: dict[str, list[str]] = {}
        self._hooks = tuple(hooks)
        self._runtime_dir: Path | None = None

    async def start(self) -> None:
        """Prepare the runtime and initialise the provisioned environments; raises
        RuntimeError when one of them fails init."""
        self._runtime_dir = Path(tempfile.mkdtemp(prefix="coldtail-lambda-runtime-"))
        install_runtime(self._runtime_dir)
        ahead = [self._new_environment(InitType.PROVISIONED) for _ in range(self.provisioned)]
        if self.managed_instances:
            ahead.append(self._new_environment(InitType.LAMBDA_MANAGED_INSTANCES))
        errors = await asyncio.gather(*(e.provision() for e in ahead))
        failed = [error for error in errors if error is not None]
        if failed:
            await self.close()
            raise RuntimeError(f"an environment failed its init ahead of invocations: {failed[0]}")

    async def invoke(
        self,
        event: Any = None,
        *,
        client_context: Mapping[str, Any] | None = None,
        cognito_identity: Mapping[str, Any] | None = None,
        trace: str | None = None,
    ) -> InvocationResult:
        """Invoke synchronously (RequestResponse). `event` is sent as JSON, or as is when it
        is bytes; `trace` is the X-Ray header to pass (default: a new sampled trace)."""
        if self._runtime_dir is None:
            raise RuntimeError("start the emulator first (async with LambdaEmulator(...))")
        invocation = Invocation(
            request_id=str(uuid.uuid4()),
            event=event if isinstance(event, bytes) else json.dumps(event).encode(),
            function_arn=self.config.function_arn,
            trace_header=trace or trace_header(),
            client_context=json.dumps(client_context) if client_context is not None else None,
            cognito_identity=(
                json.dumps(cognito_identity) if cognito_identity is not None else None
            ),
        )
        if self.managed_instances:
            return await self._invoke_managed(invocation)
        environment = next((e for e in self.environments if not e.busy), None)
        if environment is None:
            init_type = InitType.SNAP_START if self.snap_start else InitType.ON_DEMAND
            environment = self._new_environment(init_type)
        environment.busy = True
        try:
            return await environment.invoke(invocation)
        finally:
            environment.busy = False
            if not environment.alive and environment in self.environments:
                self.environments.remove(environment)

    async def _invoke_managed(self, invocation: Invocation) -> InvocationResult:
        self._retire_failed()
        if not self.environments:
            self._new_environment(InitType.LAMBDA_MANAGED_INSTANCES)
        [environment] = self.environments
        result = await environment.invoke(invocation)
        self._retire_failed()
        return result

    def _retire_failed(self) -> None:
        """Set aside the environments that failed; `close` waits for the end of their
        shutdown, which may have begun between invocations."""
        self._retired += [e for e in self.environments if not e.alive]
        self.environments = [e for e in self.environments if e.alive]

    async def shutdown(self) -> None:
        """Shut the idle environments down (Lambda's Shutdown phase); the next invocation
        starts cold."""
        idle = [e for e in self.environments if not e.busy]
        self.environments = [e for e in self.environments if e.busy]
        await asyncio.gather(*(e.shutdown() for e in idle))

    async def close(self) -> None:
        """Shut every environment down, busy ones included. Idempotent."""
        environments = [*self.environments, *self._retired]
        self.environments, self._retired = [], []
        await asyncio.gather(*(e.shutdown() for e in environments))
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    def _new_environment(self, init_type: InitType) -> ExecutionEnvironment:
        assert self._runtime_dir is not None
        environment = ExecutionEnvironment(
            self.config,
            self._runtime_dir,
            init_type=init_type,
            hooks=self._hooks,
            max_concurrency=self.max_concurrency,
        )
        environment.telemetry.subscription_status = self.telemetry_subscription_status
        environment.telemetry.withheld = self.telemetry_withheld
        self.environments.append(environment)
        self.log_streams[environment.log_stream_name] = environment.logs
        return environment

    async def __aenter__(self) -> LambdaEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
