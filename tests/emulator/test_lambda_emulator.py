"""The Lambda emulator with real awslambdaric runtime processes, on loopback only."""

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from emulator import (
    EnvironmentHooks,
    ExecutionEnvironment,
    LambdaEmulator,
    Status,
)
from tests.emulator.recorder import FUNCTIONS, eventually

TRACE_HEADER = re.compile(r"^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=1$")


class Started(EnvironmentHooks):
    """Remembers every environment whose runtime was started."""

    def __init__(self) -> None:
        self.environments: list[ExecutionEnvironment] = []

    async def on_init_start(self, environment: ExecutionEnvironment) -> None:
        self.environments.append(environment)


@pytest.fixture
async def function():
    """Makes emulators over tests/emulator/lambda_functions; closes them all afterwards and
    checks that no runtime process is left."""
    started = Started()
    emulators: list[LambdaEmulator] = []

    def make(handler: str, **options) -> LambdaEmulator:
        hooks = [started, *options.pop("hooks", ())]
        emulator = LambdaEmulator(handler, FUNCTIONS, hooks=hooks, **options)
        emulators.append(emulator)
        return emulator

    try:
        yield make
    finally:
        for emulator in emulators:
            await emulator.close()
    for environment in started.environments:
        assert environment.process is None or environment.process.returncode is not None


def group_exists(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_cold_then_warm_in_the_same_process(function):
    async with function("echo.handler") as fn:
        first = await fn.invoke({"n": 1})
        second = await fn.invoke({"n": 2})

        assert first.status == second.status == Status.SUCCESS
        assert (first.cold, second.cold) == (True, False)
        assert first.init_duration_ms > 0 and second.init_duration_ms is None
        assert first.billed_duration_ms == math.ceil(first.duration_ms + first.init_duration_ms)
        assert second.billed_duration_ms == math.ceil(second.duration_ms)
        assert first.payload["pid"] == second.payload["pid"]
        assert first.environment_id == second.environment_id
        assert first.log_stream_name == second.log_stream_name == second.payload["log_stream_name"]
        logs = fn.log_streams[first.log_stream_name]
        expected = [f"echo {first.request_id}", f"echo {second.request_id}"]
        await eventually(lambda: all(line in logs for line in expected))


async def test_event_and_context_reach_the_handler(function):
    async with function("echo.handler", function_name="orders", memory_mb=256) as fn:
        result = await fn.invoke(
            {"order_id": 42},
            client_context={"custom": {"tenant": "t1"}},
            cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
        )

    payload = result.payload
    assert payload["event"] == {"order_id": 42}
    assert payload["request_id"] == result.request_id
    assert payload["function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:orders"
    assert payload["function_name"] == "orders"
    assert payload["memory_limit_in_mb"] == "256"
    assert 0 < payload["remaining_ms"] <= 3000
    assert payload["client_custom"] == {"tenant": "t1"}
    assert payload["cognito_identity_id"] == "id-1"


async def test_lambda_environment_variables(function, tmp_path):
    layer = tmp_path / "python"
    layer.mkdir()
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    async with function("env_vars.handler", env={"GREETING": "hi"}, layers=[layer]) as fn:
        traced = await fn.invoke({}, trace=trace)
        untraced = await fn.invoke({})
        runtime_dir = Path(traced.payload["environ"]["LAMBDA_RUNTIME_DIR"])
        assert (runtime_dir / "bootstrap.py").is_file()

    environ = traced.payload["environ"]
    assert environ["GREETING"] == "hi"
    assert environ["_HANDLER"] == "env_vars.handler"
    assert re.fullmatch(r"127\.0\.0\.1:\d+", environ["AWS_LAMBDA_RUNTIME_API"])
    assert environ["AWS_LAMBDA_FUNCTION_NAME"] == "coldtail-function"
    assert environ["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert environ["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/coldtail-function"
    assert environ["AWS_LAMBDA_LOG_STREAM_NAME"] == traced.log_stream_name
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", traced.log_stream_name)
    assert environ["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert environ["AWS_REGION"] == environ["AWS_DEFAULT_REGION"] == "us-east-1"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert environ["AWS_EXECUTION_ENV"] == f"AWS_Lambda_python{version}"
    assert environ["LAMBDA_TASK_ROOT"] == str(FUNCTIONS)
    assert environ["TZ"] == ":UTC"
    assert environ["LANG"] == "en_US.UTF-8"
    # awslambdaric sets _X_AMZN_TRACE_ID from Lambda-Runtime-Trace-Id for every invocation.
    assert environ["_X_AMZN_TRACE_ID"] == trace
    assert untraced.payload["environ"]["_X_AMZN_TRACE_ID"] == untraced.trace_header
    assert TRACE_HEADER.match(untraced.trace_header)
    sys_path = traced.payload["sys_path"]
    assert sys_path.index(str(FUNCTIONS)) < sys_path.index(str(layer))


def test_reserved_variables_cannot_be_configured():
    with pytest.raises(ValueError, match="AWS_REGION"):
        LambdaEmulator("echo.handler", FUNCTIONS, env={"AWS_REGION": "eu-west-1"})


async def test_an_exception_is_an_error_result_and_the_environment_stays(function):
    async with function("failing.handler") as fn:
        result = await fn.invoke({"order_id": 7})
        after = await fn.invoke({"order_id": 8})

    assert result.status == Status.ERROR
    assert result.error.type == "OrderNotFound"
    assert result.error.message == "order 7 not found"
    assert any("failing.py" in frame and "lookup" in frame for frame in result.error.stack_trace)
    assert result.payload["errorType"] == "OrderNotFound"
    assert result.payload["requestId"] == result.request_id
    assert not after.cold and after.environment_id == result.environment_id


async def test_a_timeout_kills_the_environment_and_the_next_invocation_is_cold(function):
    async with function("sleep.handler", timeout=0.5) as fn:
        warm = await fn.invoke({"seconds": 0})
        timed_out = await fn.invoke({"seconds": 30})
        after = await fn.invoke({"seconds": 0})

    assert timed_out.status == Status.TIMEOUT
    assert timed_out.error.type == "Sandbox.Timedout"
    assert timed_out.error.message.endswith("Task timed out after 0.50 seconds")
    assert timed_out.duration_ms >= 500
    assert not group_exists(warm.payload["pid"])
    assert after.status == Status.SUCCESS and after.cold
    assert after.environment_id != timed_out.environment_id
    assert after.payload["pid"] != warm.payload["pid"]


async def test_a_crash_is_reported_as_a_runtime_exit(function):
    async with function("crash.handler") as fn:
        crashed = await fn.invoke({"status": 3})
        again = await fn.invoke({"status": 4})

    assert crashed.status == Status.CRASH
    assert crashed.error.type == "Runtime.ExitError"
    assert crashed.error.message == (
        f"RequestId: {crashed.request_id} Error: Runtime exited with error: exit status 3"
    )
    assert again.cold and again.environment_id != crashed.environment_id
    assert "about to exit" in fn.log_streams[crashed.log_stream_name]


async def test_an_init_error_fails_the_invocation_and_init_is_retried(function, tmp_path):
    marker = tmp_path / "init-failed-once"
    async with function("flaky_init.handler", env={"INIT_MARKER": str(marker)}) as fn:
        failed = await fn.invoke({})
        retried = await fn.invoke({})

    assert failed.status == Status.ERROR and failed.cold
    assert failed.error.type == "Runtime.ImportModuleError"
    assert "No module named 'module_that_does_not_exist'" in failed.error.message
    assert failed.init_duration_ms > 0
    assert retried.status == Status.SUCCESS and retried.cold
    assert retried.environment_id != failed.environment_id


async def test_an_init_beyond_the_init_timeout_fails_the_invocation(function):
    async with function("slow_import.handler", init_timeout=0.1) as fn:
        result = await fn.invoke({})
        assert fn.environments == []

    assert result.status == Status.TIMEOUT and result.cold
    assert result.error.type == "Sandbox.Timedout"
    assert result.error.message.endswith("Init timed out after 0.10 seconds")


async def test_idle_environments_are_frozen(function):
    async with function("ticker.handler") as fn:
        before = await fn.invoke({})
        await asyncio.sleep(1.0)  # 100 ticks if the background thread ran
        after = await fn.invoke({})

    assert after.environment_id == before.environment_id
    assert after.payload["ticks"] - before.payload["ticks"] < 25


async def test_the_exec_wrapper_starts_the_runtime(function, tmp_path):
    wrapper = tmp_path / "wrapper"
    wrapper.write_text(
        "#!/bin/sh\n"
        'export WRAPPER_ARGS="$*"\n'
        'export ORIGINAL_HANDLER="$_HANDLER"\n'
        "export _HANDLER=env_vars.handler\n"
        'exec "$@"\n'
    )
    wrapper.chmod(0o755)
    async with function("echo.handler", exec_wrapper=wrapper) as fn:
        result = await fn.invoke({})

    environ = result.payload["environ"]
    assert environ["AWS_LAMBDA_EXEC_WRAPPER"] == str(wrapper)
    assert environ["ORIGINAL_HANDLER"] == "echo.handler"
    assert environ["_HANDLER"] == "env_vars.handler"
    # The wrapper gets the interpreter's path and the runtime's arguments, as on Lambda.
    assert environ["WRAPPER_ARGS"].split()[0] == sys.executable


async def test_a_missing_exec_wrapper_fails_the_invocation(function, tmp_path):
    async with function("echo.handler", exec_wrapper=tmp_path / "missing") as fn:
        result = await fn.invoke({})

    assert result.status == Status.CRASH
    assert result.error.type == "Runtime.InvalidEntrypoint"


async def test_provisioned_environments_are_initialised_before_the_first_invocation(function):
    async with function("slow_import.handler", provisioned=1) as fn:
        [environment] = fn.environments
        assert environment.init_duration_ms >= 300
        result = await fn.invoke({})

    assert result.status == Status.SUCCESS
    assert not result.cold and result.init_duration_ms is None
    assert result.environment_id == environment.id
    assert result.payload["init_type"] == "provisioned-concurrency"


async def test_an_on_demand_cold_start_includes_init(function):
    async with function("slow_import.handler") as fn:
        result = await fn.invoke({})

    assert result.cold and result.init_duration_ms >= 300
    assert result.billed_duration_ms >= 300
    assert result.payload["init_type"] == "on-demand"


async def test_concurrent_invocations_use_separate_environments(function):
    async with function("sleep.handler") as fn:
        first, second = await asyncio.gather(
            fn.invoke({"seconds": 0.3}), fn.invoke({"seconds": 0.3})
        )
        third = await fn.invoke({"seconds": 0})

    assert first.cold and second.cold
    assert first.environment_id != second.environment_id
    assert first.payload["pid"] != second.payload["pid"]
    assert not third.cold and third.environment_id in (first.environment_id, second.environment_id)


async def test_shutdown_terminates_the_runtime(function):
    async with function("echo.handler") as fn:
        result = await fn.invoke({})
        [environment] = fn.environments
        await fn.shutdown()
        assert environment.process.returncode == -signal.SIGTERM
        assert not group_exists(result.payload["pid"])
        assert fn.environments == []
        assert (await fn.invoke({})).cold


async def test_shutdown_kills_a_runtime_that_ignores_sigterm(function):
    async with function("ignore_sigterm.handler") as fn:
        await fn.invoke({})
        [environment] = fn.environments
        await fn.shutdown()

    assert environment.process.returncode == -signal.SIGKILL


async def test_an_oversized_response_is_refused(function):
    async with function("big_response.handler") as fn:
        result = await fn.invoke({})
        # awslambdaric raises on the 413 and exits, which discards the environment.
        assert fn.environments == []

    assert result.status == Status.ERROR
    assert result.error.type == "Function.ResponseSizeTooLarge"


async def test_runtime_api_answers_as_documented(function):
    async with function("echo.handler") as fn:
        await fn.invoke({})
        [environment] = fn.environments
        base = f"http://{environment.server.address}/2018-06-01/runtime"
        async with aiohttp.ClientSession() as session:
            response = await session.post(f"{base}/invocation/unknown/response", data=b"{}")
            assert response.status == 400
            assert (await response.json())["errorType"] == "InvalidRequestID"
            response = await session.post(f"{base}/invocation/unknown/error", data=b"{}")
            assert response.status == 400
            response = await session.post(f"{base}/init/error", data=b"{}")
            assert response.status == 403
            assert (await response.json())["errorType"] == "InvalidStateTransition"


class Recording(EnvironmentHooks):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def routes(self, environment):
        async def ping(request: web.Request) -> web.Response:
            return web.Response(text="pong")

        return [web.get("/2020-01-01/extension/ping", ping)]

    async def on_init_start(self, environment):
        self.calls.append("init_start")

    async def on_init_end(self, environment, error):
        self.calls.append(f"init_end:{error}")

    async def on_invoke_start(self, environment, invocation):
        self.calls.append("invoke_start")

    async def on_invoke_end(self, environment, result):
        self.calls.append(f"invoke_end:{result.status}")

    async def on_freeze(self, environment):
        self.calls.append("freeze")

    async def on_shutdown(self, environment, reason):
        self.calls.append(f"shutdown:{reason}")


async def test_hooks_follow_the_lifecycle_and_mount_routes(function):
    hooks = Recording()
    async with function("sleep.handler", timeout=0.5, hooks=[hooks]) as fn:
        await fn.invoke({"seconds": 0})
        address = fn.environments[0].server.address
        async with aiohttp.ClientSession() as session:
            response = await session.get(f"http://{address}/2020-01-01/extension/ping")
            assert await response.text() == "pong"
        await fn.invoke({"seconds": 30})

    assert hooks.calls == [
        "init_start",
        "init_end:None",
        "invoke_start",
        "invoke_end:success",
        "freeze",
        "invoke_start",
        "invoke_end:timeout",
        "shutdown:timeout",
    ]


def test_command_line_prints_one_json_result_per_invocation(tmp_path):
    event = tmp_path / "event.json"
    event.write_text('{"hello": "world"}')
    command = [sys.executable, "-m", "emulator"]
    options = ["--handler", "echo.handler", "--code", str(FUNCTIONS), "--event", str(event)]
    completed = subprocess.run(
        [*command, *options, "--invocations", "2"], capture_output=True, text=True, timeout=60
    )

    assert completed.returncode == 0, completed.stderr
    results = [json.loads(line) for line in completed.stdout.splitlines()]
    assert [r["cold"] for r in results] == [True, False]
    assert results[0]["payload"]["event"] == {"hello": "world"}
    assert f"echo {results[1]['request_id']}" in completed.stderr.splitlines()
