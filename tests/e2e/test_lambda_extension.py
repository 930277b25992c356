"""The Lambda layer end to end: `make layer`'s zip unzipped into an /opt-like folder, its
extension run by the local Lambda (Extensions and Telemetry APIs) beside real awslambdaric
runtimes started through its exec wrapper, exporting to a local OTLP backend."""

import asyncio
import json
import sys
import zipfile
from pathlib import Path

import pytest

from collector.component import Signal
from collector.pdata import get_attr, iter_spans, metric_points
from collector.testing.backend import Backend
from collector.testing.lambda_emulator import LambdaEmulator, Status

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.instrumentation.functions.app.handler"
EVENT = json.loads((ROOT / "tests" / "instrumentation" / "events" / "apigw-http.json").read_text())

sys.path.insert(0, str(ROOT / "deploy" / "lambda"))
import build_layer  # noqa: E402


@pytest.fixture(scope="module")
def opt(tmp_path_factory) -> Path:
    """The layer as Lambda unpacks it into /opt."""
    work = tmp_path_factory.mktemp("layer")
    archive = build_layer.build(work / "coldtail-layer.zip")
    opt = work / "opt"
    with zipfile.ZipFile(archive) as layer:
        for info in layer.infolist():
            path = Path(layer.extract(info, opt))
            path.chmod(info.external_attr >> 16 & 0o777)
    return opt


def function(opt: Path, backend: Backend, handler=APP, code=ROOT, **kwargs) -> LambdaEmulator:
    env = {
        "COLDTAIL_BACKEND_ENDPOINT": backend.http_endpoint,
        # sandbox.localdomain in Lambda; any free loopback port here.
        "COLDTAIL_TELEMETRY_ENDPOINT": "127.0.0.1:0",
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


def test_layer_layout(opt):
    assert (opt / "coldtail-instrument").stat().st_mode & 0o111
    assert (opt / "extensions" / "coldtail").stat().st_mode & 0o111
    assert (opt / "config" / "lambda-extension.yaml").is_file()
    assert (opt / "python" / "instrumentation" / "handler.py").is_file()
    assert (opt / "coldtail" / "collector" / "lambda_extension.py").is_file()
    # Compiled ahead: /opt is read-only in Lambda.
    assert list((opt / "python" / "instrumentation" / "__pycache__").glob("handler.*.pyc"))


async def test_cold_and_warm_invocations_with_init_joined_from_the_telemetry_api(opt):
    async with Backend() as backend, function(opt, backend) as fn:
        cold = await fn.invoke(EVENT)
        await asyncio.sleep(0.3)  # frozen in between: nothing may wait there unsent
        warm = await fn.invoke(EVENT)
        # Exported after each response, before the freeze.
        assert invocation_span(backend, cold.request_id)
        assert invocation_span(backend, warm.request_id)
        # SHUTDOWN drained the rest, metrics included.
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


async def test_timeout_and_crash_each_give_a_tagged_span_without_one_from_the_function(opt):
    functions = ROOT / "tests" / "testing" / "lambda_functions"
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


async def test_backend_down_does_not_hold_the_response_and_nothing_is_lost(opt):
    async with Backend() as backend:
        async with function(opt, backend, timeout=2) as fn:
            await fn.invoke(EVENT)
            backend.down()
            during = await fn.invoke(EVENT)
            backend.up()
            after = await fn.invoke(EVENT)
        assert during.status == Status.SUCCESS
        # The function answered at once; the extension held only the invocation's end.
        assert during.runtime_duration_ms < 1000 < during.duration_ms
        assert invocation_span(backend, during.request_id)
        assert invocation_span(backend, after.request_id)
