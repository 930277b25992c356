"""SnapStart in the Lambda emulator: real awslambdaric runtimes restored from their snapshot
init, their snapshot_restore_py hooks, and the Telemetry API events a real external extension
(tests/emulator/lambda_extensions/recorder) receives, on loopback only."""

import json
import math
import subprocess
import sys

import aiohttp
import pytest

from emulator import LambdaEmulator, Status
from tests.emulator.recorder import FUNCTIONS, RECORDER, Environments, of_type, telemetry

LIFECYCLE = (
    "platform.initStart",
    "platform.initRuntimeDone",
    "platform.initReport",
    "platform.restoreStart",
    "platform.restoreRuntimeDone",
    "platform.restoreReport",
    "platform.start",
    "platform.runtimeDone",
    "platform.report",
)


@pytest.fixture
async def function(records):
    """Makes SnapStart emulators with the recorder layer; closes them all afterwards and checks
    that no process of theirs is left."""
    hooks = Environments()
    emulators: list[LambdaEmulator] = []

    def make(env: dict | None = None, **options) -> LambdaEmulator:
        variables = {"RECORDER_FILE": str(records.path), **(env or {})}
        emulator = LambdaEmulator(
            "snapstart.handler",
            FUNCTIONS,
            env=variables,
            layers=[RECORDER],
            hooks=[hooks],
            snap_start=True,
            **options,
        )
        emulators.append(emulator)
        return emulator

    try:
        yield make
    finally:
        for emulator in emulators:
            await emulator.close()
    assert hooks.environments
    for environment in hooks.environments:
        for process in [environment.process, *environment.extension_processes.values()]:
            assert process is None or process.returncode is not None


async def test_the_runtime_is_restored_and_runs_its_hooks_in_order(function):
    async with function(env={"SNAPSTART_RESTORE_DELAY": "0.2"}) as fn:
        restored = await fn.invoke({})
        warm = await fn.invoke({})

    assert restored.status == warm.status == Status.SUCCESS
    # before-snapshot hooks run in the reverse order of their registration, after-restore
    # hooks in that order; the init ran in the process that serves the invocations.
    assert restored.payload["calls"] == [
        "init",
        "before snapshot 2",
        "before snapshot 1",
        "after restore 1",
        "after restore 2",
        "handler",
    ]
    assert warm.payload["calls"] == [*restored.payload["calls"], "handler"]
    assert restored.payload["init_pid"] == restored.payload["pid"] == warm.payload["pid"]
    assert restored.payload["initialization_type"] == "snap-start"
    assert restored.payload["log_stream_name"] is None  # not set for SnapStart functions

    assert restored.cold and restored.init_duration_ms is None
    assert restored.restore_duration_ms >= 200  # the after-restore hook's sleep
    assert 200 <= restored.billed_restore_duration_ms <= math.ceil(restored.restore_duration_ms)
    assert restored.billed_duration_ms == math.ceil(restored.duration_ms)  # init not billed
    assert restored.duration_ms < 200  # the restore is not part of the invocation

    assert not warm.cold
    assert warm.init_duration_ms is warm.restore_duration_ms is None
    assert warm.billed_restore_duration_ms is None


async def test_telemetry_tells_the_snapshot_init_the_restore_and_each_invocation(function, records):
    async with function() as fn:
        restored = await fn.invoke({})
        warm = await fn.invoke({})
        await fn.shutdown()

    assert len(records("register")) == 1  # once: the extension is part of the snapshot
    events = [r["event"] for r in records("event")]
    assert [e["eventType"] for e in events] == ["INVOKE", "INVOKE", "SHUTDOWN"]
    assert [e["requestId"] for e in events[:2]] == [restored.request_id, warm.request_id]

    events = telemetry(records)
    lifecycle = [e["type"] for e in events if e["type"] in LIFECYCLE]
    assert lifecycle == [*LIFECYCLE, *LIFECYCLE[-3:]]
    [init_start] = of_type(events, "platform.initStart")
    assert init_start["initializationType"] == "snap-start"
    [init_done] = of_type(events, "platform.initRuntimeDone")
    assert (init_done["initializationType"], init_done["status"]) == ("snap-start", "success")
    [restore_start] = of_type(events, "platform.restoreStart")
    assert restore_start == {"functionName": "coldtail-function", "functionVersion": "$LATEST"}
    [restore_done] = of_type(events, "platform.restoreRuntimeDone")
    assert restore_done == {"status": "success"}
    [restore_report] = of_type(events, "platform.restoreReport")
    assert restore_report == {
        "status": "success",
        "metrics": {"durationMs": restored.restore_duration_ms},
    }

    first, second = of_type(events, "platform.report")
    assert first["requestId"] == restored.request_id
    assert first["metrics"]["restoreDurationMs"] == restored.restore_duration_ms
    assert first["metrics"]["billedRestoreDurationMs"] == restored.billed_restore_duration_ms
    assert first["metrics"]["billedDurationMs"] == restored.billed_duration_ms
    assert "initDurationMs" not in first["metrics"]
    assert second["requestId"] == warm.request_id
    assert second["metrics"].keys() == {
        "durationMs",
        "billedDurationMs",
        "memorySizeMB",
        "maxMemoryUsedMB",
    }


async def test_an_after_restore_hook_failure_fails_the_invocation(function, records):
    async with function(env={"SNAPSTART_FAIL": "after-restore"}) as fn:
        failed = await fn.invoke({})
        assert fn.environments == []
        again = await fn.invoke({})
        assert fn.environments == []

    for result in (failed, again):
        assert result.status == Status.ERROR
        assert result.error.type == "Runtime.AfterRestoreError"
        assert result.error.message == "after restore 1 failed"
        assert result.restore_duration_ms is not None
    assert failed.environment_id != again.environment_id
    events = telemetry(records)
    assert of_type(events, "platform.restoreRuntimeDone")[0] == {
        "status": "error",
        "errorType": "Runtime.AfterRestoreError",
    }
    assert of_type(events, "platform.start") == []
    assert of_type(events, "platform.restoreReport")[0]["status"] == "error"


async def test_a_before_snapshot_hook_failure_is_an_init_error(function, records):
    async with function(env={"SNAPSTART_FAIL": "before-snapshot"}) as fn:
        failed = await fn.invoke({})
        assert fn.environments == []

    assert failed.status == Status.ERROR
    assert failed.error.message == "before snapshot 1 failed"
    assert failed.restore_duration_ms is None
    events = telemetry(records)
    [init_done] = of_type(events, "platform.initRuntimeDone")
    assert (init_done["status"], init_done["errorType"]) == ("error", failed.error.type)
    assert of_type(events, "platform.restoreStart") == []


async def test_the_restore_step_is_served_only_during_a_restore(function):
    async with function() as fn:
        await fn.invoke({})
        [environment] = fn.environments
        base = f"http://{environment.server.address}/2018-06-01/runtime"
        async with aiohttp.ClientSession() as session:
            for method, path in (("GET", "restore/next"), ("POST", "restore/error")):
                async with session.request(method, f"{base}/{path}", data=b"{}") as response:
                    assert response.status == 403
                    assert (await response.json())["errorType"] == "InvalidStateTransition"
    async with LambdaEmulator("echo.handler", FUNCTIONS) as on_demand:
        await on_demand.invoke({})
        address = on_demand.environments[0].server.address
        async with aiohttp.ClientSession() as session:
            url = f"http://{address}/2018-06-01/runtime/restore/next"
            async with session.get(url) as response:
                assert response.status == 403


def test_snap_start_cannot_be_provisioned():
    with pytest.raises(ValueError, match="SnapStart"):
        LambdaEmulator("snapstart.handler", FUNCTIONS, snap_start=True, provisioned=1)


def test_command_line_restores_from_a_snapshot():
    command = [sys.executable, "-m", "emulator", "--snap-start"]
    options = ["--handler", "snapstart.handler", "--code", str(FUNCTIONS), "--invocations", "2"]
    completed = subprocess.run([*command, *options], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    restored, warm = (json.loads(line) for line in completed.stdout.splitlines())
    assert restored["restore_duration_ms"] > 0 and restored["init_duration_ms"] is None
    assert warm["restore_duration_ms"] is None
    assert "after restore 2" in completed.stderr.splitlines()
