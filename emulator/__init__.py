"""A faithful local AWS Lambda for tests: the Runtime API (2018-06-01) served per execution
environment, real runtime processes (awslambdaric, through AWS_LAMBDA_EXEC_WRAPPER when set),
Lambda's environment variables, cold and warm starts, freezing between invocations, timeouts,
crashes, init errors, concurrent and provisioned environments, SnapStart (restores from a
snapshot, with the runtime's hooks), Lambda Managed Instances (one environment serving several
invocations at once on the runtime's workers), and shutdown. External
extensions (the executables in a layer's `extensions/`) run beside the runtime and talk to the
Extensions API (2020-01-01) and the Telemetry API (2022-07-01) on the same address.

    async with LambdaEmulator("app.handler", code_dir, timeout=3) as fn:
        result = await fn.invoke({"key": "value"})
        assert result.status == Status.SUCCESS and result.cold

As a command, printing each result as one JSON line:

    python -m emulator --handler app.handler --code DIR --event FILE
"""

from emulator.environment import (
    EnvironmentHooks,
    ExecutionEnvironment,
    FunctionConfig,
    FunctionError,
    InitType,
    InvocationResult,
    Status,
)
from emulator.extensions_api import ExtensionsAPI
from emulator.lambda_emulator import LambdaEmulator, trace_header
from emulator.runtime_api import (
    ConcurrentRuntimeAPIServer,
    Invocation,
    RuntimeAPIServer,
    RuntimeReply,
)
from emulator.telemetry_api import TelemetryAPI

__all__ = [
    "ConcurrentRuntimeAPIServer",
    "EnvironmentHooks",
    "ExecutionEnvironment",
    "ExtensionsAPI",
    "FunctionConfig",
    "FunctionError",
    "InitType",
    "Invocation",
    "InvocationResult",
    "LambdaEmulator",
    "RuntimeAPIServer",
    "RuntimeReply",
    "Status",
    "TelemetryAPI",
    "trace_header",
]
