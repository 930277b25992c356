"""The lambda_telemetry receiver fed as Lambda feeds it: JSON arrays of Telemetry API events,
shaped as AWS documents them, POSTed by an aiohttp client."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.awslambda.init_reports import InitReport, InitReports
from collector.core.component import Kind, Shared
from collector.core.consumer import RetryableError
from collector.core.pdata import any_value_to_python, get_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.processors import coldstart
from collector.receivers.lambda_telemetry import Config, LambdaTelemetryReceiver, factory
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

TESTDATA = Path(__file__).parent / "testdata"
ENVIRONMENT = "2022/10/12/[$LATEST]0a1b2c3d4e5f60718293a4b5c6d7e8f9"
MIB = 1024 * 1024
FUNCTION_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "orders",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    "AWS_REGION": "eu-west-1",
}
RESOURCE = {
    "service.name": "orders",
    "cloud.provider": "aws",
    "cloud.platform": "aws_lambda",
    "cloud.region": "eu-west-1",
    "faas.name": "orders",
    "faas.version": "$LATEST",
    "faas.max_memory": 128 * MIB,
    "faas.instance": ENVIRONMENT,
}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TIMEOUT_REQUEST = "79b4f56e-95b1-4643-9700-2807f4e68189"
FAILED_REQUEST = "1f0d2c3b-4a59-4687-9a1b-2c3d4e5f6a7b"


def events(name: str) -> bytes:
    return (TESTDATA / f"lambda_telemetry_{name}.json").read_bytes()


def ns(text: str) -> int:
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(microseconds=1) * 1000


def attrs(repeated) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in repeated}


@pytest.fixture(autouse=True)
def lambda_environment(monkeypatch):
    """The environment variables Lambda gives an extension (no log stream name)."""
    for name in ("AWS_LAMBDA_LOG_STREAM_NAME", "OTEL_SERVICE_NAME", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FUNCTION_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
async def serve():
    """Start a receiver on a free local port; every one started is shut down after the test."""
    started: list[LambdaTelemetryReceiver] = []

    async def _serve(
        next: dict, telemetry: Telemetry | None = None, shared: Shared | None = None, **config
    ) -> LambdaTelemetryReceiver:
        config = Config.model_validate(
            {"endpoint": "127.0.0.1:0", "faas_instance": ENVIRONMENT, **config}
        )
        settings = make_settings(
            Kind.RECEIVER, "lambda_telemetry", telemetry=telemetry, shared=shared
        )
        receiver = factory.create(settings, config, next)
        started.append(receiver)
        await receiver.start(StaticHost())
        return receiver

    yield _serve
    for receiver in started:
        await receiver.shutdown()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(session, receiver, body: bytes) -> tuple[int, str]:
    url = f"http://{receiver.endpoint}/"
    headers = {"Content-Type": "application/json"}
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.text()


def sinks(*signals: Signal) -> dict[Signal, SinkConsumer]:
    return {signal: SinkConsumer() for signal in signals or Signal}


def spans_of(sink: SinkConsumer) -> list[Span]:
    return [
        span
        for batch in sink.batches
        for rs in batch.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]


def accepted(receiver, signal: Signal, outcome: str = "accepted") -> float:
    items = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}
    return receiver.settings.telemetry.registry.get_sample_value(
        f"otelcol_receiver_{outcome}_{items[signal]}_total",
        {"receiver": "lambda_telemetry", "transport": "http"},
    )


# --- init reports and the coldstart processor -------------------------------------------------


async def test_init_report_makes_the_first_entry_span_cold_in_the_coldstart_processor(serve, http):
    shared = Shared()
    receiver = await serve(sinks(), shared=shared)
    processor = coldstart.factory.create(
        make_settings(Kind.PROCESSOR, "coldstart", pipeline="traces", shared=shared),
        coldstart.Config(),
        Signal.TRACES,
        SinkConsumer(),
    )
    assert await post(http, receiver, events("cold_invocation")) == (200, "")
    assert len(shared.get(InitReports)) == 1

    batch = processor.process(make_traces(2, resource=RESOURCE))
    first, second = batch.resource_spans[0].scope_spans[0].spans
    assert attrs(first.attributes) == {
        "test.index": 0,
        "coldtail.cold_start": True,
        "coldtail.cold_start.source": "telemetry_api",
        "faas.coldstart": True,
        "coldtail.init_type": "on-demand",
        "coldtail.init_duration_ms": 812.5,
    }
    assert get_attr(second.attributes, "coldtail.cold_start") is False
    assert len(shared.get(InitReports)) == 0


async def test_unnamed_environment_report_goes_to_the_next_new_environment(serve, http):
    receiver = await serve(sinks(), faas_instance="")
    reports = receiver.settings.shared.get(InitReports)
    await post(http, receiver, events("cold_invocation"))
    assert reports.take("2026/11/29/[$LATEST]any") == InitReport(812.5, "on-demand")
    assert reports.take("2026/11/29/[$LATEST]other") is None
    # Nothing this receiver makes claims an environment it cannot name.
    metrics = receiver.next[Signal.METRICS].batches[-1]
    assert get_attr(metrics.resource_metrics[0].resource.attributes, "faas.instance") is None


async def test_log_stream_name_from_the_environment(serve, http, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "from-env")
    receiver = await serve(sinks(), faas_instance="")
    await post(http, receiver, events("cold_invocation"))
    assert receiver.settings.shared.get(InitReports).take("from-env").init_duration_ms == 812.5


async def test_snapstart_restore_is_an_init_of_type_snap_start(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, events("snapstart"))
    report = receiver.settings.shared.get(InitReports).take(ENVIRONMENT)
    assert report == InitReport(245.19, "snap-start")
    metrics = metric_values(receiver.next[Signal.METRICS].batches[-1])
    assert metrics["faas.coldstarts"] == 0
    assert metrics["faas.init_duration"] == (1, pytest.approx(0.24519))


async def test_provisioned_concurrency_init_is_no_cold_start(serve, http):
    receiver = await serve(sinks())
    batch = json.loads(events("cold_invocation"))
    for event in batch[:3]:
        event["record"]["initializationType"] = "provisioned-concurrency"
    # The init type falls back to platform.initStart's when the report lacks it.
    del batch[2]["record"]["initializationType"]
    await post(http, receiver, json.dumps(batch).encode())
    report = receiver.settings.shared.get(InitReports).take(ENVIRONMENT)
    assert report == InitReport(812.5, "provisioned-concurrency")
    assert metric_values(receiver.next[Signal.METRICS].batches[-1])["faas.coldstarts"] == 0


# --- synthetic spans --------------------------------------------------------------------------


async def test_timeout_becomes_a_synthetic_invocation_span(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, events("timeout"))
    (batch,) = receiver.next[Signal.TRACES].batches
    resource_spans = batch.resource_spans[0]
    assert attrs(resource_spans.resource.attributes) == RESOURCE
    assert resource_spans.scope_spans[0].scope.name == "coldtail/lambda_telemetry"
    (span,) = resource_spans.scope_spans[0].spans
    assert span.span_id == hashlib.sha256(TIMEOUT_REQUEST.encode()).digest()[:8]
    assert span.trace_id.hex() == "5759e988bd862e3fe1be46a994272793"
    assert span.parent_span_id.hex() == "53995c3f42cd8ad8"
    assert (span.name, span.kind) == ("orders", Span.SPAN_KIND_SERVER)
    assert span.start_time_unix_nano == ns("2022-10-12T00:01:00.000Z")
    assert span.end_time_unix_nano == ns("2022-10-12T00:01:03.000Z")
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "timeout")
    assert attrs(span.attributes) == {
        "faas.invocation_id": TIMEOUT_REQUEST,
        "coldtail.synthetic": True,
        "coldtail.timeout": True,
    }


async def test_a_failed_report_without_runtime_done_still_becomes_one_span(serve, http):
    """A runtime that died mid-invocation may get no runtimeDone: its report stands in."""
    receiver = await serve(sinks())
    failed = [e for e in json.loads(events("failure")) if e["type"] != "platform.runtimeDone"]
    await post(http, receiver, json.dumps(failed).encode())
    (span,) = spans_of(receiver.next[Signal.TRACES])
    assert span.span_id == hashlib.sha256(FAILED_REQUEST.encode()).digest()[:8]
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "failure")
    assert span.start_time_unix_nano == ns("2022-10-12T00:02:00.000Z")
    assert span.end_time_unix_nano == ns("2022-10-12T00:02:00.250Z")
    assert attrs(span.attributes)["error.type"] == "Runtime.ExitError"


async def test_failure_becomes_an_error_span_and_a_handler_error_does_not(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, events("failure"))
    (span,) = spans_of(receiver.next[Signal.TRACES])
    assert span.span_id == hashlib.sha256(FAILED_REQUEST.encode()).digest()[:8]
    assert len(span.trace_id) == 16 and span.trace_id != bytes(16)
    assert span.parent_span_id == b""
    assert (span.status.code, span.status.message) == (Status.STATUS_CODE_ERROR, "failure")
    assert span.start_time_unix_nano == ns("2022-10-12T00:02:00.000Z")
    assert span.end_time_unix_nano == ns("2022-10-12T00:02:00.250Z")
    assert attrs(span.attributes) == {
        "faas.invocation_id": FAILED_REQUEST,
        "coldtail.synthetic": True,
        "error.type": "Runtime.ExitError",
    }


async def test_successful_invocation_makes_no_span(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, events("cold_invocation"))
    assert receiver.next[Signal.TRACES].batches == []


async def test_span_without_its_platform_start_ends_at_runtime_done(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, json.dumps(json.loads(events("timeout"))[1:]).encode())
    (span,) = spans_of(receiver.next[Signal.TRACES])
    assert span.end_time_unix_nano == ns("2022-10-12T00:01:03.002Z")
    assert span.end_time_unix_nano - span.start_time_unix_nano == 3_000_000_000


# --- FaaS metrics -----------------------------------------------------------------------------


def metric_values(batch) -> dict:
    """name -> int for sums, (count, sum) for histograms."""
    values = {}
    for metric in batch.resource_metrics[0].scope_metrics[0].metrics:
        if metric.HasField("sum"):
            values[metric.name] = metric.sum.data_points[0].as_int
        else:
            point = metric.histogram.data_points[0]
            values[metric.name] = (point.count, point.sum)
    return values


async def test_faas_metrics_from_reports(serve, http):
    receiver = await serve(sinks())
    sink = receiver.next[Signal.METRICS]
    for name in ("cold_invocation", "timeout", "failure"):
        await post(http, receiver, events(name))
    assert len(sink.batches) == 3  # one per delivery

    batch = sink.batches[-1]
    assert attrs(batch.resource_metrics[0].resource.attributes) == RESOURCE
    assert metric_values(batch) == {
        "faas.invocations": 1,
        "faas.errors": 2,
        "faas.timeouts": 1,
        "faas.coldstarts": 1,
        "faas.invoke_duration": (4, pytest.approx(0.14 + 3.0 + 0.25 + 0.03)),
        "faas.init_duration": (1, pytest.approx(0.8125)),
        "faas.mem_usage": (4, (84 + 90 + 128 + 70) * MIB),
    }
    metrics = {m.name: m for m in batch.resource_metrics[0].scope_metrics[0].metrics}
    units = {name: metric.unit for name, metric in metrics.items()}
    assert units == {
        "faas.invocations": "{invocation}",
        "faas.errors": "{error}",
        "faas.timeouts": "{timeout}",
        "faas.coldstarts": "{coldstart}",
        "faas.invoke_duration": "s",
        "faas.init_duration": "s",
        "faas.mem_usage": "By",
    }
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for metric in metrics.values():
        data = metric.sum if metric.HasField("sum") else metric.histogram
        assert data.aggregation_temporality == cumulative
        assert len(data.data_points[0].attributes) == 0
    assert metrics["faas.coldstarts"].sum.is_monotonic

    invoke = metrics["faas.invoke_duration"].histogram.data_points[0]
    assert list(invoke.explicit_bounds) == [
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10
    ]  # fmt: skip
    # 0.03 in (0.025, 0.05], 0.14 in (0.1, 0.25], 0.25 in (0.1, 0.25], 3.0 in (2.5, 5].
    assert list(invoke.bucket_counts) == [0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0]
    memory = metrics["faas.mem_usage"].histogram.data_points[0]
    assert sum(memory.bucket_counts) == 4
    assert memory.bucket_counts[list(memory.explicit_bounds).index(128 * MIB)] == 4
    starts = {
        m.histogram.data_points[0].start_time_unix_nano
        for b in sink.batches
        for m in b.resource_metrics[0].scope_metrics[0].metrics
        if m.HasField("histogram")
    }
    assert len(starts) == 1


async def test_delivery_without_reports_emits_no_metrics(serve, http):
    receiver = await serve(sinks())
    await post(http, receiver, events("logs"))
    assert receiver.next[Signal.METRICS].batches == []


# --- logs -------------------------------------------------------------------------------------


async def test_function_extension_and_platform_events_become_log_records(serve, http):
    receiver = await serve(sinks(Signal.LOGS))
    await post(http, receiver, events("logs"))
    (batch,) = receiver.next[Signal.LOGS].batches
    assert attrs(batch.resource_logs[0].resource.attributes) == RESOURCE
    records = batch.resource_logs[0].scope_logs[0].log_records
    got = [
        (
            r.time_unix_nano,
            r.event_name,
            SeverityNumber.Name(r.severity_number),
            r.severity_text,
            any_value_to_python(r.body),
            attrs(r.attributes),
        )
        for r in records
    ]
    assert got == [
        (
            ns("2022-10-12T00:02:35.000Z"),
            "platform.telemetrySubscription",
            "SEVERITY_NUMBER_INFO",
            "INFO",
            {"name": "coldtail", "state": "Subscribed", "types": ["platform", "function"]},
            {"event.name": "platform.telemetrySubscription"},
        ),
        (
            ns("2022-10-12T00:03:50.000Z"),
            "",
            "SEVERITY_NUMBER_INFO",
            "INFO",
            "[INFO] Hello world, I am a function!",
            {},
        ),
        (
            ns("2022-10-12T00:03:50.500Z"),
            "",
            "SEVERITY_NUMBER_ERROR",
            "ERROR",
            {
                "timestamp": "2022-10-12T00:03:50.500Z",
                "level": "ERROR",
                "requestId": TIMEOUT_REQUEST,
                "message": "Hello world, I am a function!",
            },
            {"faas.invocation_id": TIMEOUT_REQUEST},
        ),
        (
            ns("2022-10-12T00:03:51.000Z"),
            "",
            "SEVERITY_NUMBER_WARN",
            "WARN",
            "[WARN] Hello world, I am an extension!",
            {},
        ),
        (
            ns("2022-10-12T00:03:52.000Z"),
            "platform.logsDropped",
            "SEVERITY_NUMBER_WARN",
            "WARN",
            {
                "droppedBytes": 12345,
                "droppedRecords": 123,
                "reason": "Some logs were dropped because the downstream consumer is slower "
                "than the logs production rate",
            },
            {"event.name": "platform.logsDropped"},
        ),
    ]


async def test_failed_invocation_platform_events_are_error_logs(serve, http):
    receiver = await serve(sinks(Signal.LOGS))
    await post(http, receiver, events("failure"))
    records = receiver.next[Signal.LOGS].batches[0].resource_logs[0].scope_logs[0].log_records
    got = [
        (r.event_name, r.severity_text, get_attr(r.attributes, "faas.invocation_id"))
        for r in records
    ]
    assert got == [
        ("platform.start", "INFO", FAILED_REQUEST),
        ("platform.runtimeDone", "ERROR", FAILED_REQUEST),
        ("platform.report", "ERROR", FAILED_REQUEST),
        ("platform.start", "INFO", "2a1b0c9d-8e7f-4a6b-9c5d-4e3f2a1b0c9d"),
        ("platform.runtimeDone", "ERROR", "2a1b0c9d-8e7f-4a6b-9c5d-4e3f2a1b0c9d"),
        ("platform.report", "ERROR", "2a1b0c9d-8e7f-4a6b-9c5d-4e3f2a1b0c9d"),
    ]


# --- the listener -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'[{"time": "2022-10-12T00:03:50.000Z", "type": "function"', "invalid JSON"),
        (b"\xff\xfe", "invalid JSON"),
        (b'{"type": "function", "record": "hello"}', "expected a JSON array"),
    ],
    ids=["truncated", "not_utf8", "not_an_array"],
)
async def test_bad_json_is_400_and_the_receiver_keeps_serving(serve, http, body, error):
    receiver = await serve(sinks())
    status, text = await post(http, receiver, body)
    assert status == 400 and error in text
    assert await post(http, receiver, events("timeout")) == (200, "")
    assert len(spans_of(receiver.next[Signal.TRACES])) == 1


async def test_oversized_delivery_is_413(serve, http):
    receiver = await serve(sinks(), max_request_body_size=1024)
    status, _ = await post(http, receiver, events("cold_invocation"))
    assert status == 413
    assert receiver.next[Signal.METRICS].batches == []


async def test_events_of_unknown_shape_are_skipped(serve, http):
    receiver = await serve(sinks())
    body = json.dumps(
        [
            42,
            {"type": "platform.report", "record": "not a map"},
            {"type": "platform.runtimeDone", "record": {"status": "timeout"}},
            {"type": "platform.initReport", "record": {"metrics": {"durationMs": "slow"}}},
            {"type": "platform.future", "time": "later", "record": {}},
        ]
    ).encode()
    assert await post(http, receiver, body) == (200, "")
    assert receiver.next[Signal.TRACES].batches == []
    assert receiver.next[Signal.METRICS].batches == []
    assert len(receiver.settings.shared.get(InitReports)) == 0
    assert receiver.next[Signal.LOGS].item_count == 4


async def test_only_the_signals_of_its_pipelines_are_made(serve, http):
    receiver = await serve(sinks(Signal.METRICS))
    for name in ("timeout", "logs"):
        assert await post(http, receiver, events(name)) == (200, "")
    assert metric_values(receiver.next[Signal.METRICS].batches[-1])["faas.timeouts"] == 1


async def test_own_metrics_count_accepted_and_refused_items(serve, http):
    receiver = await serve(
        {
            Signal.TRACES: SinkConsumer(),
            Signal.METRICS: ErrorConsumer(RetryableError("memory limit")),
            Signal.LOGS: SinkConsumer(),
        }
    )
    # Refusals are not answered: Lambda would deliver events already counted again.
    assert await post(http, receiver, events("timeout")) == (200, "")
    assert accepted(receiver, Signal.TRACES) == 1
    assert accepted(receiver, Signal.LOGS) == 3
    assert accepted(receiver, Signal.METRICS, "refused") == 7
    assert accepted(receiver, Signal.METRICS) == 0


async def test_resource_from_config_over_the_environment(serve, http, monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-api")
    receiver = await serve(
        sinks(), resource={"deployment.environment": "prod", "faas.version": "7"}
    )
    await post(http, receiver, events("timeout"))
    resource = attrs(receiver.next[Signal.TRACES].batches[0].resource_spans[0].resource.attributes)
    assert resource == RESOURCE | {
        "service.name": "orders-api",
        "faas.version": "7",
        "deployment.environment": "prod",
    }


async def test_shutdown_is_idempotent_and_safe_without_start():
    receiver = LambdaTelemetryReceiver(
        make_settings(Kind.RECEIVER, "lambda_telemetry"), Config(), sinks()
    )
    await receiver.shutdown()
    await receiver.shutdown()


# --- config -----------------------------------------------------------------------------------

CONFIGS = yaml.safe_load((TESTDATA / "lambda_telemetry_config.yaml").read_text())


def test_config_defaults(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    config = Config()
    assert config.endpoint == "127.0.0.1:4325"
    assert config.max_request_body_size == 4 * MIB
    assert config.types == ["platform", "function"]
    buffering = config.buffering
    assert (buffering.max_items, buffering.max_bytes, buffering.timeout_ms) == (1000, 262144, 25)
    assert (config.faas_instance, config.resource) == ("", {})


def test_inside_lambda_the_default_endpoint_is_where_lambda_delivers(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    assert Config().endpoint == "sandbox.localdomain:4325"


def test_every_config_field_is_documented():
    for model in (Config, Config.model_fields["buffering"].annotation):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no docstring"
