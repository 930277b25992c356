"""Lambda Managed Instances in the Lambda emulator: real awslambdaric runtimes with their
workers, and the recorder extension (tests/emulator/lambda_extensions/recorder) beside them, on
loopback only."""

import asyncio
import json
import signal
import time
import uuid

import aiohttp
import psutil
import pytest

from emulator import (
    ConcurrentRuntimeAPIServer,
    ExtensionsAPI,
    Invocation,
    LambdaEmulator,
    RuntimeAPIServer,
    Status,
    TelemetryAPI,
)
from tests.emulator.recorder import (
    FUNCTIONS,
    RECORDER,
    Environments,
    eventually,
    of_type,
    telemetry,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:coldtail-function"
# The recorder as these environments allow it: SHUTDOWN only, the schema they require.
MANAGED_RECORDER = {"RECORDER_EVENTS": "SHUTDOWN", "RECORDER_SCHEMA": "2025-01-29"}


@pytest.fixture
async def function(records):
    """Makes managed-instances emulators (with the recorder layer when `recorder`); closes them
    all afterwards and checks that no process of theirs, workers included, is left."""
    hooks = Environments()
    emulators: list[LambdaEmulator] = []
    workers: list[psutil.Process] = []

    def make(handler: str, *, recorder: bool = False, env=None, **options) -> LambdaEmulator:
        variables = {"RECORDER_FILE": str(records.path), **(env or {})}
        emulator = LambdaEmulator(
            handler,
            FUNCTIONS,
            env=variables,
            layers=[RECORDER] if recorder else [],
            hooks=[hooks],
            managed_instances=True,
            **options,
        )
        emulators.append(emulator)
        return emulator

    async def all_idle(emulator: LambdaEmulator) -> None:
        """Wait until every worker of the emulator's environment waits for an invocation."""
        [environment] = emulator.environments
        await eventually(lambda: environment.server.idle_workers == emulator.max_concurrency)
        workers.extend(psutil.Process(environment.process.pid).children())

    make.all_idle = all_idle
    make.hooks = hooks
    try:
        yield make
    finally:
        for emulator in emulators:
            await emulator.close()
    for environment in hooks.environments:
        for process in [environment.process, *environment.extension_processes.values()]:
            assert process is None or process.returncode is not None
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_managed_instances_refuse_snap_start_provisioned_and_no_concurrency():
    for options in ({"snap_start": True}, {"provisioned": 1}, {"max_concurrency": 0}):
        with pytest.raises(ValueError):
            LambdaEmulator("echo.handler", FUNCTIONS, managed_instances=True, **options)


async def test_concurrent_invocations_run_at_once_in_one_environment(function):
    async with function("concurrent.handler", max_concurrency=3) as fn:
        await function.all_idle(fn)
        results = await asyncio.gather(*(fn.invoke({"seconds": 0.5}) for _ in range(3)))
        again = await fn.invoke({})

    assert [r.status for r in results] == [Status.SUCCESS] * 3
    payloads = [r.payload for r in results]
    # Each started before any other ended: all three ran at the same time.
    assert max(p["started"] for p in payloads) < min(p["ended"] for p in payloads)
    assert len({p["pid"] for p in payloads}) == 3  # a worker process each
    assert len({p["ppid"] for p in payloads}) == 1  # of one runtime process
    assert {r.environment_id for r in [*results, again]} == {results[0].environment_id}
    for result in results:
        assert result.payload["init_type"] == "lambda-managed-instances"
        assert result.payload["max_concurrency"] == "3"
        # Initialised at start, ahead of any invocation, and not billed by duration.
        assert not result.cold and result.init_duration_ms is None
        assert result.billed_duration_ms is None
        assert result.duration_ms >= 500


async def test_an_invocation_beyond_the_free_workers_is_refused_at_once(function):
    async with function("concurrent.handler", max_concurrency=2) as fn:
        await function.all_idle(fn)
        tasks = [asyncio.create_task(fn.invoke({"seconds": 1.0})) for _ in range(3)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        # Answered while the other two still run: not queued behind them.
        [refused] = [task.result() for task in done]
        assert len(pending) == 2
        served = await asyncio.gather(*pending)

    assert refused.status == Status.UNAVAILABLE
    assert refused.error.type == "Runtime.Unavailable"
    assert refused.payload["errorType"] == "Runtime.Unavailable"
    assert [r.status for r in served] == [Status.SUCCESS] * 2


async def test_a_timeout_fails_its_invocation_only(function):
    async with function("concurrent.handler", max_concurrency=2, timeout=1.0) as fn:
        await function.all_idle(fn)
        [environment] = fn.environments
        workers = {p.pid for p in psutil.Process(environment.process.pid).children()}
        slow = asyncio.create_task(fn.invoke({"seconds": 2.0}))
        quick = await fn.invoke({"seconds": 0.2})
        timed_out = await slow
        assert fn.environments == [environment] and environment.alive
        # The timed-out worker finishes its handler, has its late response refused, and asks
        # for its next invocation.
        await function.all_idle(fn)
        after = await asyncio.gather(*(fn.invoke({"seconds": 0.3}) for _ in range(2)))

    assert quick.status == Status.SUCCESS
    assert timed_out.status == Status.TIMEOUT
    assert timed_out.error.type == "Sandbox.Timedout"
    assert timed_out.error.message.endswith("Task timed out after 1.00 seconds")
    assert {r.payload["pid"] for r in after} == workers  # no worker was killed or replaced
    assert [r.status for r in after] == [Status.SUCCESS] * 2
    assert any("Runtime.InvokeTimeout" in line for line in environment.logs)


async def test_the_environment_is_never_frozen(function):
    async with function("ticker.handler", max_concurrency=1) as fn:
        before = await fn.invoke({})
        await asyncio.sleep(1.0)  # 100 ticks when the background thread runs
        after = await fn.invoke({})

    assert after.payload["ticks"] - before.payload["ticks"] >= 60


async def test_the_runtime_and_extensions_get_their_variables(function, records):
    async with function("env_vars.handler", recorder=True, env=MANAGED_RECORDER) as fn:
        await function.all_idle(fn)
        result = await fn.invoke({})

    runtime = result.payload["environ"]
    assert runtime["AWS_LAMBDA_INITIALIZATION_TYPE"] == "lambda-managed-instances"
    assert runtime["AWS_LAMBDA_MAX_CONCURRENCY"] == "4"
    assert "AWS_LAMBDA_LOG_STREAM_NAME" in runtime
    assert "_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET" not in runtime  # optional to awslambdaric
    [environ] = records("environ")
    extension = environ["environ"]
    assert extension["AWS_LAMBDA_INITIALIZATION_TYPE"] == "lambda-managed-instances"
    for name in (
        "AWS_LAMBDA_MAX_CONCURRENCY",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "_HANDLER",
    ):
        assert name not in extension, name


async def test_an_extension_registering_for_invoke_fails_init(function, records):
    emulator = function("concurrent.handler", recorder=True)  # registers for INVOKE, SHUTDOWN
    with pytest.raises(RuntimeError, match=r"Extension\.Crash"):
        await emulator.start()

    [refused] = records("refused")
    assert refused["path"] == "/2020-01-01/extension/register"
    assert refused["status"] == 403
    assert refused["body"]["errorType"] == "Extension.InvalidEventType"


async def test_a_subscription_of_another_schema_is_refused(function, records):
    env = {**MANAGED_RECORDER, "RECORDER_SCHEMA": "2022-12-13"}
    async with function("concurrent.handler", recorder=True, env=env) as fn:
        result = await fn.invoke({})

    assert result.status == Status.SUCCESS  # the extension carries on without telemetry
    [refused] = records("refused")
    assert refused["path"] == "/2022-07-01/telemetry"
    assert refused["status"] == 400
    assert "2025-01-29" in refused["body"]["errorMessage"]
    assert records("telemetry") == []


async def test_telemetry_reports_invocations_as_managed_instances_do(function, records):
    options = {"recorder": True, "env": MANAGED_RECORDER, "max_concurrency": 2, "timeout": 1.0}
    async with function("outcomes.handler", **options) as fn:
        await function.all_idle(fn)
        succeeded, timed_out = await asyncio.gather(fn.invoke({}), fn.invoke({"sleep": 1.5}))
        failed = await fn.invoke({"raise": "no"})

    results = (succeeded, timed_out, failed)
    assert [r.status for r in results] == [Status.SUCCESS, Status.TIMEOUT, Status.ERROR]
    events = telemetry(records)
    for event_type in ("platform.initStart", "platform.initRuntimeDone", "platform.initReport"):
        [init] = of_type(events, event_type)
        assert init["initializationType"] == "lambda-managed-instances", event_type
    assert of_type(events, "platform.extension") == [
        {"name": "recorder", "state": "Ready", "events": ["SHUTDOWN"]}
    ]
    assert of_type(events, "platform.runtimeDone") == []

    starts = {s["requestId"]: s for s in of_type(events, "platform.start")}
    reports = {r["requestId"]: r for r in of_type(events, "platform.report")}
    assert starts.keys() == reports.keys() == {r.request_id for r in results}
    for result in results:
        assert starts[result.request_id]["functionArn"] == ARN
        report = reports[result.request_id]
        assert report["status"] == result.status.telemetry
        assert report["metrics"] == {"durationMs": round(result.duration_ms, 3)}
    assert [s["name"] for s in reports[succeeded.request_id]["spans"]] == [
        "responseLatency",
        "responseDuration",
    ]
    assert "spans" not in reports[timed_out.request_id]  # no response
    assert reports[timed_out.request_id]["errorType"] == "Sandbox.Timedout"
    assert reports[failed.request_id]["errorType"] == "ValueError"
    # Only SHUTDOWN reaches the extension.
    assert [r["event"]["eventType"] for r in records("event")] == ["SHUTDOWN"]


async def test_shutdown_stops_the_runtime_then_flushes_then_tells_extensions(
    function, records, tmp_path
):
    # The runtime ignores SIGTERM (an ignored signal stays ignored across exec), so that it
    # lasts until the SIGKILL.
    wrapper = tmp_path / "ignore-sigterm"
    wrapper.write_text("#!/bin/sh\ntrap '' TERM\nexec \"$@\"\n")
    wrapper.chmod(0o755)
    options = {"recorder": True, "env": MANAGED_RECORDER, "exec_wrapper": wrapper}
    async with function("concurrent.handler", **options) as fn:
        result = await fn.invoke({})
        [environment] = fn.environments
        exits: list[float] = []
        exited = asyncio.create_task(environment.process.wait())
        exited.add_done_callback(lambda _: exits.append(time.time()))
        await fn.shutdown()

    assert environment.process.returncode == -signal.SIGKILL
    [started] = function.hooks.shutdowns
    assert 0.6 <= exits[0] - started < 1.5  # SIGTERM, then SIGKILL 600 ms later
    [shutdown] = records("event")
    event = shutdown["event"]
    assert exits[0] < shutdown["at"]  # the extension is told once the runtime is gone
    assert event == {"eventType": "SHUTDOWN", "shutdownReason": "spindown", **event}
    assert 1800 < event["deadlineMs"] - shutdown["at"] * 1000 <= 2000
    # The last invocation's report was delivered (flushed) before SHUTDOWN.
    kinds = [
        "report" if of_type(r.get("batch", []), "platform.report") else r["kind"] for r in records()
    ]
    assert kinds.index("report") < kinds.index("event")
    assert of_type(telemetry(records), "platform.report")[0]["requestId"] == result.request_id
    [extension] = environment.extension_processes.values()
    assert extension.returncode == 0  # it exited on SHUTDOWN


async def test_without_extensions_the_runtime_is_killed_at_once(function):
    async with function("concurrent.handler") as fn:
        await fn.invoke({})
        [environment] = fn.environments

    assert environment.process.returncode == -signal.SIGKILL  # no SIGTERM first


async def test_an_extension_crash_fails_the_environment(function, records):
    async with function("concurrent.handler", recorder=True, env=MANAGED_RECORDER) as fn:
        first = await fn.invoke({})
        [environment] = fn.environments
        [extension] = environment.extension_processes.values()
        extension.kill()  # between invocations
        await eventually(lambda: not environment.alive and environment.process.returncode)
        replaced = await fn.invoke({})

    assert first.status == replaced.status == Status.SUCCESS
    assert replaced.environment_id != first.environment_id
    assert replaced.cold and replaced.init_duration_ms > 0


async def test_the_runtime_api_routes_concurrent_workers_by_request_id():
    server = ConcurrentRuntimeAPIServer()
    await server.start()
    base = f"http://{server.address}/2018-06-01/runtime"

    def invocation(n: int) -> Invocation:
        return Invocation(str(uuid.uuid4()), json.dumps({"n": n}).encode(), ARN, "Root=1-a")

    try:
        async with aiohttp.ClientSession() as session:

            async def next_event() -> tuple[str, dict]:
                async with session.get(f"{base}/invocation/next") as reply:
                    return reply.headers["Lambda-Runtime-Aws-Request-Id"], await reply.json()

            async def post(request_id: str, body: dict) -> tuple[int, dict]:
                url = f"{base}/invocation/{request_id}/response"
                async with session.post(url, json=body) as reply:
                    return reply.status, await reply.json()

            assert not server.dispatch(invocation(0))  # no worker waits
            workers = [asyncio.create_task(next_event()) for _ in range(2)]
            await eventually(lambda: server.idle_workers == 2)
            assert server.ready.done()
            first, second, third = invocation(1), invocation(2), invocation(3)
            assert server.dispatch(first) and server.dispatch(second)
            assert not server.dispatch(third)
            got = dict(await asyncio.gather(*workers))
            assert got == {first.request_id: {"n": 1}, second.request_id: {"n": 2}}

            server.expire(first.request_id)
            assert await post(second.request_id, {"r": 2}) == (202, {"status": "OK"})
            assert second.reply.result().body == b'{"r": 2}'
            status, refusal = await post(first.request_id, {"r": 1})
            assert (status, refusal["errorType"]) == (400, "Runtime.InvokeTimeout")
            assert not first.reply.done()
            status, refusal = await post(second.request_id, {"r": 2})  # answered already
            assert (status, refusal["errorType"]) == (400, "InvalidRequestID")
            async with session.get(f"{base}/restore/next") as reply:
                assert reply.status == 404  # no SnapStart here
    finally:
        await server.stop()


async def test_registration_rules_of_managed_instances():
    telemetry = TelemetryAPI(caller=lambda request: extensions.caller(request))
    info = {"functionName": "f", "functionVersion": "$LATEST", "handler": "a.b"}
    extensions = ExtensionsAPI(
        info, ["ext"], telemetry.extension_registered, managed_instances=True
    )
    server = RuntimeAPIServer()
    server.add_routes(extensions.routes())
    await server.start()
    register = f"http://{server.address}/2020-01-01/extension/register"
    try:
        async with aiohttp.ClientSession() as session:

            async def status(name: str, events: list[str]) -> tuple[int, str | None]:
                headers = {"Lambda-Extension-Name": name}
                body = {"events": events}
                async with session.post(register, headers=headers, json=body) as reply:
                    answer = await reply.json()
                    return reply.status, answer.get("errorType")

            refused = (403, "Extension.InvalidEventType")
            assert await status("ext", ["INVOKE", "SHUTDOWN"]) == refused
            assert await status("ext", ["INVOKE"]) == refused
            assert await status("in-runtime", ["INVOKE"]) == refused
            assert await status("ext", ["SHUTDOWN"]) == (200, None)
            assert await status("in-runtime", []) == (200, None)
        assert [e.events for e in extensions.extensions.values()] == [
            frozenset({"SHUTDOWN"}),
            frozenset(),
        ]
    finally:
        await telemetry.close()
        await server.stop()
