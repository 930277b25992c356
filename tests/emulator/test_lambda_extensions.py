"""The Lambda emulator's Extensions and Telemetry APIs, with a real external extension process
(tests/emulator/lambda_extensions/recorder) beside real awslambdaric runtimes, on loopback only."""

import asyncio
import signal
import time

import aiohttp
import pytest
from aiohttp import web

from emulator import (
    ExtensionsAPI,
    LambdaEmulator,
    RuntimeAPIServer,
    Status,
    TelemetryAPI,
)
from emulator.extensions_api import IDENTIFIER_HEADER
from tests.emulator.recorder import (
    FUNCTIONS,
    RECORDER,
    Environments,
    eventually,
    of_type,
    telemetry,
)


@pytest.fixture
async def function(records):
    """Makes emulators with the recorder layer; closes them all afterwards and checks that no
    process of theirs is left."""
    hooks = Environments()
    emulators: list[LambdaEmulator] = []

    def make(handler: str, env: dict | None = None, **options) -> LambdaEmulator:
        variables = {"RECORDER_FILE": str(records.path), **(env or {})}
        emulator = LambdaEmulator(
            handler, FUNCTIONS, env=variables, layers=[RECORDER], hooks=[hooks], **options
        )
        emulators.append(emulator)
        return emulator

    make.hooks = hooks
    try:
        yield make
    finally:
        for emulator in emulators:
            await emulator.close()
    for environment in hooks.environments:
        for process in [environment.process, *environment.extension_processes.values()]:
            assert process is None or process.returncode is not None


async def test_the_extension_registers_and_gets_invoke_and_shutdown_events(function, records):
    async with function("echo.handler", env={"RECORDER_INIT_DELAY": "0.3"}) as fn:
        first = await fn.invoke({"n": 1})
        second = await fn.invoke({"n": 2})
        shutdown_started = time.time()
        await fn.shutdown()

    assert function.hooks.registered_at_init_end == [["recorder"]]
    assert first.cold and first.init_duration_ms >= 300  # the extension's init counts
    [registration] = records("register")
    assert registration["response"] == {
        "functionName": "coldtail-function",
        "functionVersion": "$LATEST",
        "handler": "echo.handler",
        "accountId": "123456789012",
    }
    [environ] = records("environ")
    assert (
        environ["environ"]["AWS_LAMBDA_RUNTIME_API"]
        == first.payload["environ"]["AWS_LAMBDA_RUNTIME_API"]
        if "environ" in first.payload
        else environ["environ"]["AWS_LAMBDA_RUNTIME_API"]
    )
    assert environ["environ"]["AWS_LAMBDA_FUNCTION_NAME"] == "coldtail-function"
    assert "_HANDLER" not in environ["environ"]
    assert "LAMBDA_TASK_ROOT" not in environ["environ"]

    events = [r["event"] for r in records("event")]
    assert [e["eventType"] for e in events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    for event, result in zip(events, (first, second), strict=False):
        assert event["requestId"] == result.request_id
        assert event["invokedFunctionArn"] == (
            "arn:aws:lambda:us-east-1:123456789012:function:coldtail-function"
        )
        assert event["tracing"] == {"type": "X-Amzn-Trace-Id", "value": result.trace_header}
    invoked_at = records("event")[1]["at"]
    assert 0 < events[1]["deadlineMs"] - invoked_at * 1000 <= 3000
    assert events[2]["shutdownReason"] == "spindown"
    # 2 s from the emulator's start of shutdown, a moment after this test noted the time.
    assert 1900 < events[2]["deadlineMs"] - shutdown_started * 1000 <= 2100


async def test_telemetry_reports_init_and_every_invocation(function, records):
    async with function("outcomes.handler", timeout=1.0) as fn:
        succeeded = await fn.invoke({})
        failed = await fn.invoke({"raise": "no"})
        timed_out = await fn.invoke({"sleep": 30})
        assert fn.environments == []

    results = (succeeded, failed, timed_out)
    assert [r.status for r in results] == [Status.SUCCESS, Status.ERROR, Status.TIMEOUT]
    events = telemetry(records)
    [init_start] = of_type(events, "platform.initStart")
    assert init_start["initializationType"] == "on-demand" and init_start["phase"] == "init"
    [init_done] = of_type(events, "platform.initRuntimeDone")
    assert init_done["status"] == "success"
    [init_report] = of_type(events, "platform.initReport")
    assert init_report["metrics"]["durationMs"] == succeeded.init_duration_ms
    assert of_type(events, "platform.extension") == [
        {"name": "recorder", "state": "Ready", "events": ["INVOKE", "SHUTDOWN"]}
    ]
    [subscription] = of_type(events, "platform.telemetrySubscription")
    assert subscription["types"] == ["extension", "function", "platform"]

    starts = of_type(events, "platform.start")
    assert [s["requestId"] for s in starts] == [r.request_id for r in results]
    runtime_done = of_type(events, "platform.runtimeDone")
    assert [d["status"] for d in runtime_done] == ["success", "error", "timeout"]
    assert runtime_done[0]["metrics"]["producedBytes"] == len(b'{"ok": true}')
    assert [s["name"] for s in runtime_done[0]["spans"]] == ["responseLatency", "responseDuration"]
    assert runtime_done[1]["errorType"] == "ValueError"
    assert runtime_done[2]["errorType"] == "Sandbox.Timedout"
    reports = of_type(events, "platform.report")
    assert [r["requestId"] for r in reports] == [r.request_id for r in results]
    assert [r["status"] for r in reports] == ["success", "error", "timeout"]
    for report, result in zip(reports, results, strict=True):
        metrics = report["metrics"]
        assert metrics["durationMs"] == result.duration_ms
        assert metrics["billedDurationMs"] == result.billed_duration_ms
        assert metrics["memorySizeMB"] == 128
        assert metrics["maxMemoryUsedMB"] == result.max_memory_used_mb > 0
    assert reports[0]["metrics"]["initDurationMs"] == succeeded.init_duration_ms
    assert "initDurationMs" not in reports[1]["metrics"]

    function_lines = [e["record"] for e in events if e["type"] == "function"]
    assert [f"outcome {r.request_id}" for r in results] == [
        line for line in function_lines if line.startswith("outcome ")
    ]
    assert "recorder subscribed" in [e["record"] for e in events if e["type"] == "extension"]
    [shutdown] = [r["event"] for r in records("event") if r["event"]["eventType"] == "SHUTDOWN"]
    assert shutdown["shutdownReason"] == "timeout"


async def test_a_runtime_crash_is_a_failure_for_extensions(function, records):
    async with function("crash.handler") as fn:
        crashed = await fn.invoke({"status": 3})

    assert crashed.status == Status.CRASH
    [runtime_done] = of_type(telemetry(records), "platform.runtimeDone")
    assert runtime_done["status"] == "failure"
    assert runtime_done["errorType"] == "Runtime.ExitError"
    shutdown = records("event")[-1]["event"]
    assert shutdown["eventType"] == "SHUTDOWN" and shutdown["shutdownReason"] == "failure"


async def test_an_extension_that_exits_during_init_fails_the_invocation(function, records):
    async with function("echo.handler", env={"RECORDER_EXIT_AT_INIT": "1"}) as fn:
        result = await fn.invoke({})
        assert fn.environments == []

    assert result.status == Status.CRASH and result.cold
    assert result.error.type == "Extension.Crash"
    assert result.error.message == (
        f"RequestId: {result.request_id} Error: Extension recorder exited with error: exit status 2"
    )


async def test_telemetry_only_of_the_types_subscribed(function, records):
    async with function("outcomes.handler", env={"RECORDER_TYPES": "platform"}) as fn:
        await fn.invoke({})

    types = {event["type"] for event in telemetry(records)}
    assert "platform.report" in types
    assert not types & {"function", "extension"}


async def test_a_slow_extension_holds_the_invocation_but_not_the_response(function, records):
    async with function("outcomes.handler", env={"RECORDER_INVOKE_DELAY": "0.5"}) as fn:
        result = await fn.invoke({})
        again = await fn.invoke({})

    assert result.status == again.status == Status.SUCCESS
    assert result.runtime_duration_ms < result.duration_ms
    assert result.duration_ms >= 500
    assert result.billed_duration_ms >= result.duration_ms + result.init_duration_ms
    assert not again.cold
    # The runtime's response was known (runtimeDone delivered) while the extension still held
    # the invocation: before it asked for the next event.
    kinds = [
        "done" if of_type(r.get("batch", []), "platform.runtimeDone") else r["kind"]
        for r in records()
    ]
    assert kinds.index("done") < [i for i, k in enumerate(kinds) if k == "event"][1]
    events = telemetry(records)
    [done, _] = of_type(events, "platform.runtimeDone")
    [report, _] = of_type(events, "platform.report")
    assert done["metrics"]["durationMs"] == result.runtime_duration_ms
    assert report["metrics"]["durationMs"] == result.duration_ms


async def test_extensions_are_frozen_between_invocations(function, records):
    async with function("echo.handler") as fn:
        await fn.invoke({})
        await asyncio.sleep(1.0)  # 100 ticks if the extension ran
        await fn.invoke({})

    before, after = [r["ticks"] for r in records("event")][:2]
    assert after - before < 25


async def test_an_extension_that_ignores_shutdown_is_killed(function, records):
    async with function("echo.handler", env={"RECORDER_IGNORE_SHUTDOWN": "1"}) as fn:
        await fn.invoke({})
        [environment] = fn.environments
        await fn.shutdown()

    [extension] = environment.extension_processes.values()
    assert extension.returncode == -signal.SIGKILL
    assert records("event")[-1]["event"]["eventType"] == "SHUTDOWN"
    assert environment.process.returncode == -signal.SIGTERM


@pytest.fixture
async def apis():
    """The Extensions and Telemetry APIs on their own server, with no process behind them."""
    telemetry = TelemetryAPI(caller=lambda request: extensions.caller(request))
    function_info = {"functionName": "f", "functionVersion": "$LATEST", "handler": "a.b"}
    extensions = ExtensionsAPI(function_info, ["ext"], telemetry.extension_registered)
    server = RuntimeAPIServer()
    server.add_routes([*extensions.routes(), *telemetry.routes()])
    await server.start()
    try:
        yield extensions, telemetry, f"http://{server.address}"
    finally:
        await telemetry.close()
        await server.stop()


async def test_extensions_and_telemetry_apis_refuse_what_lambda_refuses(apis):
    extensions, _, base = apis
    register = f"{base}/2020-01-01/extension/register"
    subscribe = f"{base}/2022-07-01/telemetry"
    async with aiohttp.ClientSession() as session:

        async def status(method, url, headers=None, body=None) -> int:
            async with session.request(method, url, headers=headers, json=body) as response:
                return response.status

        assert await status("POST", register, body={"events": ["INVOKE"]}) == 400
        name = {"Lambda-Extension-Name": "ext"}
        assert await status("POST", register, name, {"events": ["START"]}) == 400
        internal = {"Lambda-Extension-Name": "in-runtime"}
        assert await status("POST", register, internal, {"events": ["SHUTDOWN"]}) == 400
        async with session.post(register, headers=name, json={"events": ["SHUTDOWN"]}) as reply:
            assert reply.status == 200
            assert await reply.json() == {
                "functionName": "f",
                "functionVersion": "$LATEST",
                "handler": "a.b",
            }
            identifier = {"Lambda-Extension-Identifier": reply.headers[IDENTIFIER_HEADER]}
        assert await status("POST", register, name, {"events": []}) == 400  # registered already
        unknown = {"Lambda-Extension-Identifier": "unknown"}
        assert await status("GET", f"{base}/2020-01-01/extension/event/next", unknown) == 403
        valid = {
            "schemaVersion": "2022-12-13",
            "types": ["platform"],
            "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain:9999"},
        }
        assert await status("PUT", subscribe, unknown, valid) == 403
        invalid = [
            {**valid, "schemaVersion": "2021-01-01"},
            {**valid, "types": ["metrics"]},
            {**valid, "buffering": {"timeoutMs": 10}},
            {**valid, "buffering": {"maxItems": 20_000}},
            {**valid, "destination": {"protocol": "TCP", "URI": "http://127.0.0.1:9999"}},
            {**valid, "destination": {"protocol": "HTTP", "URI": "http://sandbox.localdomain"}},
            # Lambda delivers inside the execution environment only.
            {**valid, "destination": {"protocol": "HTTP", "URI": "http://127.0.0.1:9999"}},
            {**valid, "destination": {"protocol": "HTTP", "URI": "http://localhost:9999"}},
        ]
        for body in invalid:
            assert await status("PUT", subscribe, identifier, body) == 400, body
        extensions.end_init()
        assert await status("POST", register, internal, {"events": ["INVOKE"]}) == 403


async def test_telemetry_is_batched_and_waits_while_frozen(apis):
    _, telemetry, base = apis
    batches: list[list[dict]] = []

    async def receive(request: web.Request) -> web.Response:
        batches.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/telemetry", receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            name = {"Lambda-Extension-Name": "ext"}
            async with session.post(f"{base}/2020-01-01/extension/register", headers=name) as r:
                identifier = {IDENTIFIER_HEADER: r.headers[IDENTIFIER_HEADER]}
            body = {
                "schemaVersion": "2022-12-13",
                "types": ["platform", "function"],
                "buffering": {"timeoutMs": 30_000},
                "destination": {
                    "protocol": "HTTP",
                    "URI": f"http://sandbox.localdomain:{port}/telemetry",
                },
            }
            async with session.put(
                f"{base}/2022-07-01/telemetry", headers=identifier, json=body
            ) as r:
                assert r.status == 200 and await r.json() == "OK"

        telemetry.freeze()
        for n in range(1000):  # maxItems (default 1,000) makes a batch due before timeoutMs
            telemetry.log("function", f"line {n}")
        await asyncio.sleep(0.2)
        assert batches == []
        telemetry.thaw()
        await eventually(lambda: batches)
        [batch] = batches
        assert [e["type"] for e in batch[:2]] == [
            "platform.extension",
            "platform.telemetrySubscription",
        ]
        assert [e["record"] for e in batch[2:]] == [f"line {n}" for n in range(1000)]
        assert all(e["time"].endswith("Z") for e in batch)

        telemetry.log("function", "last")
        await telemetry.flush(timeout=5.0)  # before timeoutMs
        assert batches[1] == [batches[1][0]] and batches[1][0]["record"] == "last"
    finally:
        await runner.cleanup()
