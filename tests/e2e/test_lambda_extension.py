"""The Lambda layer end to end: `make layer`'s zip unzipped into an /opt-like folder, its
extension run by the local Lambda (Extensions and Telemetry APIs) beside real awslambdaric
runtimes started through its exec wrapper, exporting to a local OTLP backend."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from collector.core.pdata import get_attr, iter_spans, metric_points
from collector.core.signals import Signal
from emulator import LambdaEmulator, Status
from tests.support.backend import Backend

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.instrumentation.functions.app.handler"
EVENT = json.loads((ROOT / "tests" / "instrumentation" / "events" / "apigw-http.json").read_text())

sys.path.insert(0, str(ROOT / "deploy" / "lambda"))
import build_layer  # noqa: E402


@pytest.fixture(scope="module")
def opt(tmp_path_factory) -> Path:
    """The layer as Lambda unpacks it into /opt."""
    work = tmp_path_factory.mktemp("layer")
    return unpack(build_layer.build(work / "coldtail-layer.zip"), work / "opt")


def unpack(archive: Path, opt: Path) -> Path:
    """A layer zip unpacked as Lambda does into /opt, modes kept."""
    with zipfile.ZipFile(archive) as layer:
        for info in layer.infolist():
            path = Path(layer.extract(info, opt))
            path.chmod(info.external_attr >> 16 & 0o777)
    return opt


def function(opt: Path, backend: Backend, handler=APP, code=ROOT, **kwargs) -> LambdaEmulator:
    env = {
        "COLDTAIL_BACKEND_ENDPOINT": backend.http_endpoint,
        **kwargs.pop("env", {}),
    }
    return LambdaEmulator(
        handler,
        code,
        exec_wrapper=opt / "coldtail-instrument",
        layers=[opt, opt / "python"],
        env=env,
        function_name="orders",
        **kwargs,
    )


def spans(backend: Backend) -> list:
    return [span for batch in backend.accepted(Signal.TRACES) for _, _, span in iter_spans(batch)]


def invocation_span(backend: Backend, request_id: str):
    return next(
        s for s in spans(backend) if get_attr(s.attributes, "faas.invocation_id") == request_id
    )


def metric_total(backend: Backend, name: str) -> float:
    """The highest cumulative value of a sum metric the backend received."""
    values = [
        p.as_int or p.as_double
        for batch in backend.accepted(Signal.METRICS)
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for p in metric_points(m)
    ]
    return max(values, default=0)


@pytest.mark.parametrize("runtime", ["python3.12", "python3.13"])
async def test_the_layer_of_each_runtime_runs_on_that_runtime(runtime, tmp_path):
    """The function and the extension both run on the runtime's own Python (as on Lambda, where
    it is the python3 on PATH), from the layer built for it."""
    python = ROOT / ".venv-lambda" / runtime / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no {runtime} runtime: `make lambda-runtimes` makes one from pyenv")
    archive = build_layer.build(tmp_path / "layer.zip", runtime, "x86_64")
    opt = unpack(archive, tmp_path / "opt")
    async with Backend() as backend:
        async with function(opt, backend, python=python) as fn:
            cold = await fn.invoke(EVENT)
            warm = await fn.invoke(EVENT)
        logs = "\n".join(line for lines in fn.log_streams.values() for line in lines)
    assert (cold.status, warm.status) == (Status.SUCCESS, Status.SUCCESS), logs
    first = invocation_span(backend, cold.request_id)
    assert get_attr(first.attributes, "coldtail.init_duration_ms") == pytest.approx(
        cold.init_duration_ms, abs=1
    )
    assert invocation_span(backend, warm.request_id)
    assert "could not start" not in logs


def test_layer_layout(opt):
    assert (opt / "coldtail-instrument").stat().st_mode & 0o111
    assert (opt / "extensions" / "coldtail").stat().st_mode & 0o111
    assert (opt / "config" / "lambda-extension.yaml").is_file()
    assert (opt / "python" / "instrumentation" / "handler.py").is_file()
    assert (opt / "coldtail" / "collector" / "awslambda" / "extension" / "__main__.py").is_file()
    # Compiled ahead: /opt is read-only in Lambda.
    assert list((opt / "python" / "instrumentation" / "__pycache__").glob("handler.*.pyc"))


async def test_cold_and_warm_invocations_with_init_joined_from_the_telemetry_api(opt):
    async with Backend() as backend, function(opt, backend) as fn:
        cold = await fn.invoke(EVENT)
        await asyncio.sleep(0.3)  # frozen in between
        warm = await fn.invoke(EVENT)
        # SHUTDOWN drains what the background flushes had not sent, metrics included.
    assert (cold.status, warm.status) == (Status.SUCCESS, Status.SUCCESS)
    first = invocation_span(backend, cold.request_id)
    assert get_attr(first.attributes, "coldtail.cold_start") is True
    # Lambda's measure of init (runtime and extension), from platform.initReport.
    assert get_attr(first.attributes, "coldtail.init_duration_ms") == pytest.approx(
        cold.init_duration_ms, abs=1
    )
    assert get_attr(first.attributes, "coldtail.init_type") == "on-demand"
    second = invocation_span(backend, warm.request_id)
    assert get_attr(second.attributes, "coldtail.cold_start") is False
    assert metric_total(backend, "faas.coldstarts") == 1
    assert metric_total(backend, "faas.invocations") == 2


async def test_a_snapstart_restore_is_not_a_cold_start_and_its_restore_is_joined(opt):
    async with Backend() as backend, function(opt, backend, snap_start=True) as fn:
        restored = await fn.invoke(EVENT)
        warm = await fn.invoke(EVENT)
    assert restored.status == Status.SUCCESS and restored.restore_duration_ms is not None
    first = invocation_span(backend, restored.request_id)
    assert get_attr(first.attributes, "coldtail.cold_start") is False
    assert get_attr(first.attributes, "coldtail.init_type") == "snap-start"
    # Lambda's measure of the restore, from platform.restoreReport.
    assert get_attr(first.attributes, "coldtail.init_duration_ms") == pytest.approx(
        restored.restore_duration_ms, abs=1
    )
    assert (
        get_attr(invocation_span(backend, warm.request_id).attributes, "coldtail.cold_start")
        is False
    )


async def test_on_managed_instances_concurrent_invocations_all_arrive_none_cold(opt):
    """Lambda Managed Instances: extensions may register for SHUTDOWN only, the Telemetry API
    takes the 2025-01-29 schema only, and the environment is never frozen."""
    async with (
        Backend() as backend,
        function(opt, backend, managed_instances=True, max_concurrency=3) as fn,
    ):
        # Every worker asks for work once its init is done; one more than are idle is refused.
        [environment] = fn.environments
        async with asyncio.timeout(10):
            while environment.server.idle_workers < 3:
                await asyncio.sleep(0.01)
        results = await asyncio.gather(*(fn.invoke({"sleep": 0.3}) for _ in range(3)))
        results += [await fn.invoke(EVENT) for _ in range(2)]
        logs = "\n".join(line for lines in fn.log_streams.values() for line in lines)
    assert [r.status for r in results] == [Status.SUCCESS] * 5, logs
    assert "carrying on without it" not in logs
    for result in results:
        span = invocation_span(backend, result.request_id)
        assert get_attr(span.attributes, "coldtail.cold_start") is False
        assert get_attr(span.attributes, "faas.coldstart") is False
    # The Telemetry API's own view of each invocation arrived too.
    assert metric_total(backend, "faas.invocations") == 5


async def test_end_of_invocation_exports_each_invocation_before_the_freeze(opt):
    async with Backend() as backend:
        env = {"COLDTAIL_FLUSH": "end-of-invocation"}
        async with function(opt, backend, env=env) as fn:
            cold = await fn.invoke(EVENT)
            assert invocation_span(backend, cold.request_id)
            warm = await fn.invoke(EVENT)
            assert invocation_span(backend, warm.request_id)
    # Held for it: Lambda's report of the invocation, then the export.
    assert held_ms(warm) > 20


async def test_timeout_and_crash_each_give_a_tagged_span_without_one_from_the_function(opt):
    functions = ROOT / "tests" / "emulator" / "lambda_functions"
    async with Backend() as backend:
        async with function(
            opt, backend, timeout=1.5, env={"COLDTAIL_TIMEOUT_WARNING_MS": "0"}
        ) as fn:
            timed_out = await fn.invoke({"sleep": 5})
        async with function(opt, backend, handler="crash.handler", code=functions) as fn:
            crashed = await fn.invoke({"status": 7})
    assert (timed_out.status, crashed.status) == (Status.TIMEOUT, Status.CRASH)
    timeout_span = invocation_span(backend, timed_out.request_id)
    assert get_attr(timeout_span.attributes, "coldtail.timeout") is True
    assert get_attr(timeout_span.attributes, "coldtail.synthetic") is True
    assert timeout_span.status.code == 2
    crash_span = invocation_span(backend, crashed.request_id)
    assert get_attr(crash_span.attributes, "coldtail.synthetic") is True
    assert crash_span.status.code == 2
    assert metric_total(backend, "faas.timeouts") == 1


async def test_backend_down_does_not_hold_the_invocation_and_nothing_is_lost(opt):
    async with Backend() as backend:
        async with function(opt, backend, timeout=2) as fn:
            await fn.invoke(EVENT)
            backend.down()
            during = await fn.invoke(EVENT)
            backend.up()
            after = await fn.invoke(EVENT)
        assert during.status == Status.SUCCESS
        # Exported in the background: neither the response nor the invocation waits for it.
        assert held_ms(during) < 50
        assert invocation_span(backend, during.request_id)
        assert invocation_span(backend, after.request_id)


async def test_no_span_is_lost_across_freeze_timeout_crash_and_shutdown(opt):
    """The default strategy exports in the background: what a freeze or the environment's end
    catches unsent leaves when it thaws, or at SHUTDOWN."""
    functions = ROOT / "tests" / "emulator" / "lambda_functions"
    async with Backend() as backend:
        expected = []
        async with function(opt, backend, timeout=1.5) as fn:
            for _ in range(5):
                expected.append(await fn.invoke(EVENT))
                await asyncio.sleep(0.05)  # frozen
            expected.append(await fn.invoke({"sleep": 5}))  # times out: a new environment
            expected.append(await fn.invoke(EVENT))
        async with function(opt, backend, handler="crash.handler", code=functions) as fn:
            expected.append(await fn.invoke({"status": 7}))
    statuses = [result.status for result in expected]
    assert statuses == [Status.SUCCESS] * 5 + [Status.TIMEOUT, Status.SUCCESS, Status.CRASH]
    for result in expected:
        assert invocation_span(backend, result.request_id), result.status
    # The instrumentation says when it handed an invocation's spans over: the extension asks
    # for the next event then, not after Lambda's report (buffered 25 ms at least) or a flush.
    assert statistics.median(held_ms(result) for result in expected[1:5]) < 10


async def test_a_crash_lambda_reports_nothing_of_still_gives_a_span(opt):
    """Lambda's runtimeDone and report of the invocation lost: the extension knows of it from
    its INVOKE event and of its end from SHUTDOWN."""
    functions = ROOT / "tests" / "emulator" / "lambda_functions"
    withheld = ("platform.runtimeDone", "platform.report")
    async with (
        Backend() as backend,
        function(
            opt, backend, handler="crash.handler", code=functions, telemetry_withheld=withheld
        ) as fn,
    ):
        crashed = await fn.invoke({"status": 7})
    assert crashed.status == Status.CRASH
    span = invocation_span(backend, crashed.request_id)
    assert get_attr(span.attributes, "coldtail.synthetic") is True
    assert (span.status.code, span.status.message) == (2, "failure")
    trace_id = crashed.trace_header.split(";")[0].removeprefix("Root=1-").replace("-", "")
    assert span.trace_id.hex() == trace_id


async def test_lambda_refusing_telemetry_and_a_silent_backend_never_fail_or_hold_the_function(
    opt, tmp_path
):
    """A Telemetry API destination Lambda would refuse is left out (the extension says so), a
    subscription Lambda fails is left out, and a backend that never answers holds nothing."""
    config = yaml.safe_load((ROOT / "config" / "lambda-extension.yaml").read_text())
    config["receivers"]["lambda_telemetry/loopback"] = {"endpoint": "127.0.0.1:4326"}
    for pipeline in config["service"]["pipelines"].values():
        pipeline["receivers"].append("lambda_telemetry/loopback")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    async with SilentServer() as silent, Backend() as backend:
        async with function(
            opt,
            backend,
            timeout=3,
            env={
                "COLDTAIL_CONFIG": str(path),
                "COLDTAIL_BACKEND_ENDPOINT": f"http://{silent.endpoint}",
            },
            telemetry_subscription_status=500,
        ) as fn:
            results = [await fn.invoke(EVENT) for _ in range(6)]
        logs = "\n".join(line for lines in fn.log_streams.values() for line in lines)
    assert [r.status for r in results] == [Status.SUCCESS] * 6
    assert results[0].cold and results[0].payload["statusCode"] == 200
    assert "receivers::lambda_telemetry/loopback::endpoint" in logs
    assert "the Telemetry API refused" in logs
    assert silent.connections  # the extension did try the backend
    for warm in results[1:]:
        assert held_ms(warm) < 50


def held_ms(result) -> float:
    """How long the invocation stayed open after the function's response: billed time."""
    return result.duration_ms - result.runtime_duration_ms


class SilentServer:
    """Accepts connections and reads what comes, and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self.endpoint = ""
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while await reader.read(65536):
            pass
        writer.close()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.endpoint = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
