"""The wrapped handler driven in-process with the runtime's LambdaContext, exporting to the
collector's OTLP receiver: triggers, cold starts, init and import spans, errors, timeouts,
export failures and pass-through."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from instrumentation import handler as handler_module
from instrumentation.resource import process_start_ns
from tests.support.lambda_functions import (
    FUNCTION_ARN,
    FUNCTION_NAME,
    FUNCTIONS,
    Receiver,
    fresh_import,
    load_event,
    make_context,
)
from tests.support.process import free_port

SERVER, CONSUMER, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER, Span.SPAN_KIND_INTERNAL
ERROR = Status.STATUS_CODE_ERROR
W3C_TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
W3C_SPAN = bytes.fromhex("b7ad6b7169203331")
HTTP_API_TRACE = bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")
HTTP_API_SPAN = bytes.fromhex("00f067aa0ba902b7")
XRAY_TRACE = bytes.fromhex("5759e988bd862e3fe1be46a994272793")
XRAY_SPAN = bytes.fromhex("53995c3f42cd8ad8")
# The invoked ARN's alias replaced by the version the environment runs.
RESOURCE_ID = FUNCTION_ARN.rpartition(":")[0] + ":$LATEST"
SLOW_MODULES = ("app", "slow_dependency", "slower_dependency")


def load_app(module: str = "app"):
    """The wrapped handler of a test function, as a new execution environment would load it."""
    fresh_import(module, "slow_dependency", "slower_dependency")
    return handler_module.load(f"{FUNCTIONS}.{module}.handler")


def invocation_spans(collector) -> list:
    return [s for s in collector.spans() if s.kind != INTERNAL]


# --- triggers ------------------------------------------------------------------------------

HTTP_COMMON = {"faas.trigger": "http"}
TRIGGERS = {
    "apigw-rest": (
        "GET /pets/{petId}",
        SERVER,
        {
            **HTTP_COMMON,
            "http.request.method": "GET",
            "http.route": "/pets/{petId}",
            "url.path": "/pets/10",
            "url.scheme": "https",
            "server.address": "1234567890.execute-api.us-east-1.amazonaws.com",
            "server.port": 443,
            "user_agent.original": "okhttp 3.0",
            "client.address": "127.0.0.1",
            "network.protocol.version": "1.1",
            "url.query": "verbose=true",
            "http.response.status_code": 200,
        },
        (W3C_TRACE, W3C_SPAN),
    ),
    "apigw-http": (
        "POST /orders/{orderId}/items",
        SERVER,
        {
            **HTTP_COMMON,
            "http.request.method": "POST",
            "http.route": "/orders/{orderId}/items",
            "url.path": "/orders/42/items",
            "url.scheme": "https",
            "server.address": "r3pmxmplak.execute-api.us-east-2.amazonaws.com",
            "server.port": 443,
            "user_agent.original": "curl/8.4.0",
            "client.address": "205.255.255.176",
            "url.query": "expand=true",
            "http.response.status_code": 200,
        },
        (HTTP_API_TRACE, HTTP_API_SPAN),
    ),
    "function-url": (
        "POST",
        SERVER,
        {
            **HTTP_COMMON,
            "http.request.method": "POST",
            "url.path": "/my/path",
            "url.scheme": "https",
            "server.address": "a1b2c3d4e5f6g7h8i9j0k1l2m3n4o5p6.lambda-url.us-west-2.on.aws",
            "user_agent.original": "agent",
            "client.address": "123.123.123.123",
            "url.query": "parameter1=value1&parameter1=value2&parameter2=value",
            "http.response.status_code": 200,
        },
        None,
    ),
    "alb": (
        "GET",
        SERVER,
        {
            **HTTP_COMMON,
            "http.request.method": "GET",
            "url.path": "/lambda",
            "url.scheme": "http",
            "server.address": "lambda-alb-123578498.us-east-1.elb.amazonaws.com",
            "server.port": 80,
            "client.address": "72.12.164.125",
            "url.query": "query=1234ABCD",
            "http.response.status_code": 200,
        },
        None,
    ),
    "sqs": (
        "process my-queue",
        CONSUMER,
        {
            "faas.trigger": "pubsub",
            "messaging.system": "aws_sqs",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.batch.message_count": 3,
            "messaging.destination.name": "my-queue",
        },
        None,
    ),
    "sns": (
        "process sns-lambda",
        CONSUMER,
        {
            "faas.trigger": "pubsub",
            "messaging.system": "aws.sns",
            "messaging.operation.type": "process",
            "messaging.destination.name": "sns-lambda",
            "messaging.message.id": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
        },
        None,
    ),
    "kinesis": (
        "process lambda-stream",
        CONSUMER,
        {
            "faas.trigger": "pubsub",
            "messaging.system": "aws.kinesis",
            "messaging.batch.message_count": 2,
            "messaging.destination.name": "lambda-stream",
        },
        None,
    ),
    "dynamodb": (
        FUNCTION_NAME,
        SERVER,
        {
            "faas.trigger": "datasource",
            "faas.document.collection": "ExampleTableWithStream",
            "faas.document.operation": "insert",
        },
        None,
    ),
    "s3": (
        FUNCTION_NAME,
        SERVER,
        {
            "faas.trigger": "datasource",
            "faas.document.collection": "amzn-s3-demo-bucket",
            "faas.document.name": "photos/happy face!.jpg",
            "faas.document.operation": "insert",
            "faas.document.time": "2019-09-03T19:37:27.192Z",
        },
        None,
    ),
    "eventbridge": (
        FUNCTION_NAME,
        CONSUMER,
        {
            "faas.trigger": "pubsub",
            "messaging.system": "aws.eventbridge",
            "messaging.operation.name": "process",
            "messaging.message.id": "7bf73129-1428-4cd3-a780-95db273d1602",
            "coldtail.eventbridge.source": "aws.ec2",
            "coldtail.eventbridge.detail_type": "EC2 Instance State-change Notification",
        },
        None,
    ),
    "eventbridge-scheduled": (
        FUNCTION_NAME,
        SERVER,
        {
            "faas.trigger": "timer",
            "faas.time": "2015-10-08T16:53:06Z",
            "coldtail.eventbridge.source": "aws.events",
            "coldtail.eventbridge.detail_type": "Scheduled Event",
        },
        None,
    ),
    "direct": (FUNCTION_NAME, SERVER, {"faas.trigger": "other"}, None),
}


@pytest.mark.parametrize("fixture", sorted(TRIGGERS))
def test_every_trigger_gives_its_invocation_span(lambda_env, collector, fixture):
    name, kind, expected, parent = TRIGGERS[fixture]
    handler = load_app()
    context = make_context()

    result = handler(load_event(fixture), context)

    assert result == {"statusCode": 200, "body": "ok"}
    [span] = invocation_spans(collector)
    assert (span.name, span.kind) == (name, kind)
    for key, value in expected.items():
        assert span.attributes.get(key) == value, key
    assert span.attributes["faas.invocation_id"] == context.aws_request_id
    assert span.attributes["cloud.resource_id"] == RESOURCE_ID
    assert span.attributes["aws.lambda.invoked_arn"] == FUNCTION_ARN
    assert span.attributes["cloud.account.id"] == "123456789012"
    if "http.route" not in expected:
        assert "http.route" not in span.attributes
    if parent is None:
        assert span.parent_span_id == b""
    else:
        assert (span.trace_id, span.parent_span_id) == parent
    assert span.status.code != ERROR
    assert span.end_time_unix_nano >= span.start_time_unix_nano > 0


def test_sqs_records_become_links_from_aws_trace_header_else_traceparent(lambda_env, collector):
    load_app()(load_event("sqs"), make_context())

    [span] = invocation_spans(collector)
    # The first record carries an AWSTraceHeader, the second a traceparent message attribute
    # only, the third neither.
    xray, w3c = span.links
    assert (xray.trace_id, xray.span_id) == (XRAY_TRACE, XRAY_SPAN)
    assert xray.attributes[0].value.string_value == "059f36b4-87a3-44ab-83d2-661975830a7d"
    assert xray.flags & 0x1  # Sampled=1
    assert w3c.trace_id == bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def test_sns_link_keeps_the_unsampled_flag(lambda_env, collector):
    load_app()(load_event("sns"), make_context())

    [span] = invocation_spans(collector)
    [link] = span.links
    assert (link.trace_id, link.span_id) == (W3C_TRACE, W3C_SPAN)
    assert not link.flags & 0x1


def test_xray_propagator_takes_the_parent_from_the_xray_header(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("OTEL_PROPAGATORS", "xray")
    load_app()(load_event("apigw-rest"), make_context())

    [span] = invocation_spans(collector)
    assert (span.trace_id, span.parent_span_id) == (XRAY_TRACE, XRAY_SPAN)


def test_xray_lambda_propagator_reads_the_environment(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("OTEL_PROPAGATORS", "tracecontext,baggage,xray-lambda")
    monkeypatch.setenv(
        "_X_AMZN_TRACE_ID",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
    )
    load_app()(load_event("sqs"), make_context())

    [span] = invocation_spans(collector)
    assert (span.trace_id, span.parent_span_id) == (XRAY_TRACE, XRAY_SPAN)


def test_direct_invoke_takes_the_parent_from_the_client_context(lambda_env, collector):
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = make_context(client_context={"w3c": {"traceparent": traceparent}})
    load_app()(load_event("direct"), context)

    [span] = invocation_spans(collector)
    assert (span.trace_id, span.parent_span_id) == (W3C_TRACE, W3C_SPAN)


@pytest.mark.parametrize("status", [500, 503])
def test_http_5xx_response_is_an_error(lambda_env, collector, status):
    event = load_event("apigw-http")
    handler = load_app()
    event_with_status = {**event, "status": status}

    assert handler(event_with_status, make_context())["statusCode"] == status

    [span] = invocation_spans(collector)
    assert span.attributes["http.response.status_code"] == status
    assert span.status.code == ERROR
    # The HTTP conventions: the status code says why, in error.type and not in a description.
    assert span.attributes["error.type"] == str(status)
    assert span.status.message == ""


def test_http_4xx_response_is_not_a_server_error(lambda_env, collector):
    load_app()({**load_event("apigw-rest"), "status": 404}, make_context())

    [span] = invocation_spans(collector)
    assert span.attributes["http.response.status_code"] == 404
    assert span.status.code != ERROR
    assert "error.type" not in span.attributes


# --- cold starts ---------------------------------------------------------------------------


def test_first_invocation_is_cold_with_init_and_import_spans_then_warm(lambda_env, collector):
    handler = load_app()
    handler(load_event("direct"), make_context())

    spans = collector.spans()
    [invocation] = invocation_spans(collector)
    assert invocation.attributes["faas.coldstart"] is True
    assert invocation.attributes["coldtail.cold_start"] is True
    assert invocation.attributes["coldtail.cold_start.source"] == "instrumentation"
    assert invocation.attributes["coldtail.init_type"] == "on-demand"
    [init] = [s for s in spans if s.name == "init"]
    assert init.kind == INTERNAL
    assert init.parent_span_id == invocation.span_id
    assert init.trace_id == invocation.trace_id
    assert init.attributes["coldtail.init_type"] == "on-demand"
    assert init.start_time_unix_nano < init.end_time_unix_nano <= invocation.start_time_unix_nano
    init_ms = (init.end_time_unix_nano - init.start_time_unix_nano) / 1e6
    assert invocation.attributes["coldtail.init_duration_ms"] == pytest.approx(init_ms)

    imports = {
        s.attributes["coldtail.import.module"]: s for s in collector.named("coldtail.import")
    }
    app = imports[f"{FUNCTIONS}.app"]
    slow = imports[f"{FUNCTIONS}.slow_dependency"]
    slower = imports[f"{FUNCTIONS}.slower_dependency"]
    assert app.parent_span_id == init.span_id
    assert slow.parent_span_id == app.span_id
    assert slower.parent_span_id == slow.span_id
    assert app.start_time_unix_nano <= slow.start_time_unix_nano <= slower.start_time_unix_nano
    assert slower.end_time_unix_nano <= slow.end_time_unix_nano <= app.end_time_unix_nano
    assert slow.end_time_unix_nano - slow.start_time_unix_nano >= 50_000_000  # 20 + 30 ms
    assert init.start_time_unix_nano <= app.start_time_unix_nano
    assert app.end_time_unix_nano <= init.end_time_unix_nano

    collector.reset()
    handler(load_event("direct"), make_context())

    [warm] = collector.spans()
    assert warm.attributes["faas.coldstart"] is False
    assert warm.attributes["coldtail.cold_start"] is False
    assert warm.attributes["coldtail.cold_start.source"] == "instrumentation"
    assert "coldtail.init_duration_ms" not in warm.attributes


def test_fast_imports_under_the_threshold_get_no_span(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("COLDTAIL_IMPORT_THRESHOLD_MS", "1000")
    load_app()(load_event("direct"), make_context())

    assert collector.named("init")
    assert not collector.named("coldtail.import")


def test_import_hook_is_removed_after_init(lambda_env):
    import sys

    from instrumentation.imports import ImportRecorder

    load_app()
    assert not any(isinstance(finder, ImportRecorder) for finder in sys.meta_path)
    assert sys.modules[f"{FUNCTIONS}.app"].__loader__.__class__.__name__ == "SourceFileLoader"
    assert sys.modules[f"{FUNCTIONS}.app"].__spec__.loader.__class__.__name__ == (
        "SourceFileLoader"
    )


@pytest.mark.parametrize(
    "init_type", ["provisioned-concurrency", "snap-start", "lambda-managed-instances"]
)
def test_init_ahead_of_requests_is_not_a_cold_start(lambda_env, collector, monkeypatch, init_type):
    monkeypatch.setenv("AWS_LAMBDA_INITIALIZATION_TYPE", init_type)
    load_app()(load_event("direct"), make_context())

    [invocation] = invocation_spans(collector)
    assert invocation.attributes["faas.coldstart"] is False
    assert invocation.attributes["coldtail.cold_start"] is False
    assert invocation.attributes["coldtail.init_type"] == init_type
    assert invocation.resource["coldtail.init_type"] == init_type
    if init_type != "snap-start":
        [init] = collector.named("init")
        assert init.attributes["coldtail.init_type"] == init_type
    else:
        # Restored from a snapshot: its init ran elsewhere, before; no init span in this trace.
        assert collector.named("init") == []
        assert "coldtail.init_duration_ms" not in invocation.attributes


def test_resource_describes_the_function(lambda_env, collector):
    load_app()(load_event("direct"), make_context())

    resource = collector.spans()[0].resource
    assert resource["service.name"] == FUNCTION_NAME
    assert resource["cloud.provider"] == "aws"
    assert resource["cloud.platform"] == "aws_lambda"
    assert resource["cloud.region"] == "us-east-1"
    assert resource["faas.name"] == FUNCTION_NAME
    assert resource["faas.max_memory"] == 512 * 1048576
    assert resource["telemetry.sdk.name"] == "coldtail"


def test_init_span_starts_at_process_start_in_lambda(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    load_app()(load_event("direct"), make_context())

    [init] = collector.named("init")
    # This test process started before the test; the init span reaches back to it.
    assert init.start_time_unix_nano <= handler_module._IMPORT_START_NS
    assert abs(init.start_time_unix_nano - process_start_ns()) < 100_000_000


def test_failed_user_import_is_reported_and_reraised(lambda_env, collector):
    with pytest.raises(ImportError, match="broken_app cannot be imported"):
        load_app("broken_app")

    [init] = collector.spans()
    assert init.name == "init"
    assert init.status.code == ERROR
    assert init.attributes["exception.type"] == "ImportError"


# --- errors and timeouts -------------------------------------------------------------------


def test_exception_is_recorded_and_the_same_object_reraised(lambda_env, collector):
    handler = load_app()
    with pytest.raises(Exception) as raised:
        handler({"raise": "boom"}, make_context())

    error = raised.value
    assert type(error).__name__ == "HandlerError"
    assert error.__traceback__ is not None
    # The innermost frame is still the user's raise.
    tb = error.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    assert tb.tb_frame.f_code.co_name == "handler"
    assert tb.tb_frame.f_code.co_filename.endswith("functions/app.py")

    [span] = invocation_spans(collector)
    assert span.status.code == ERROR
    assert "boom" in span.status.message
    [event] = [e for e in span.events if e.name == "exception"]
    event_attributes = {kv.key: kv.value.string_value for kv in event.attributes}
    error_type = f"{FUNCTIONS}.app.HandlerError"
    assert event_attributes["exception.type"] == error_type
    assert event_attributes["exception.message"] == "boom"
    assert 'raise HandlerError(event["raise"])' in event_attributes["exception.stacktrace"]
    assert span.attributes["exception.type"] == error_type
    assert span.attributes["error.type"] == error_type
    assert span.attributes["exception.stacktrace"] == event_attributes["exception.stacktrace"]


def test_timeout_warning_snapshot_is_exported_while_the_handler_runs(
    lambda_env, collector, monkeypatch
):
    monkeypatch.setenv("COLDTAIL_TIMEOUT_WARNING_MS", "400")
    handler = load_app()
    handler(load_event("direct"), make_context())  # the cold start, out of the way
    collector.reset()
    seen_while_running = []

    def watch():
        # Runs in the handler: the snapshot must reach the collector before it returns.
        seen_while_running.extend(collector.wait_for(1, timeout=1.0))

    context = make_context(remaining_ms=600)
    watcher = threading.Thread(target=watch)
    watcher.start()
    handler({"sleep": 0.45}, context)
    watcher.join()

    assert [s.name for s in seen_while_running] == [FUNCTION_NAME]
    snapshot = seen_while_running[0]
    assert snapshot.attributes["coldtail.timeout"] is True
    assert snapshot.status.code == ERROR
    spans = collector.spans()
    [real] = [s for s in spans if "coldtail.timeout" not in s.attributes]
    assert real.span_id != snapshot.span_id
    assert real.trace_id == snapshot.trace_id
    assert real.parent_span_id == snapshot.parent_span_id
    assert [(link.trace_id, link.span_id) for link in snapshot.links] == [
        (real.trace_id, real.span_id)
    ]
    assert snapshot.end_time_unix_nano < real.end_time_unix_nano


def test_no_timeout_warning_when_the_handler_returns_in_time(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("COLDTAIL_TIMEOUT_WARNING_MS", "400")
    handler = load_app()
    handler(load_event("direct"), make_context(remaining_ms=1000))
    time.sleep(0.8)

    assert not [s for s in collector.spans() if "coldtail.timeout" in s.attributes]


def test_timeout_warning_off(lambda_env, collector, monkeypatch):
    monkeypatch.setenv("COLDTAIL_TIMEOUT_WARNING_MS", "0")
    handler = load_app()
    handler({"sleep": 0.3}, make_context(remaining_ms=400))

    assert not [s for s in collector.spans() if "coldtail.timeout" in s.attributes]


# --- export failures -----------------------------------------------------------------------


def test_export_failure_does_not_break_the_function_and_spans_are_retried(
    lambda_env, monkeypatch, caplog
):
    port = free_port()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    handler = load_app()
    first_context = make_context()
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        assert handler(load_event("direct"), first_context)["statusCode"] == 200
    assert "export of 5 spans failed (kept for the next export)" in caplog.text

    # The collector comes up: the next invocation sends the kept spans with its own.
    collector = Receiver(port)
    try:
        handler(load_event("direct"), make_context())
        spans = collector.spans()
    finally:
        collector.close()

    invocations = [s.attributes["faas.invocation_id"] for s in spans if s.kind != INTERNAL]
    assert first_context.aws_request_id in invocations
    assert len(invocations) == 2
    assert len(spans) == 6  # two invocations, init, three imports
    assert len(collector.requests) == 1


def test_no_export_time_left_keeps_the_spans(lambda_env, collector):
    handler = load_app()
    handler(load_event("direct"), make_context(remaining_ms=30))
    assert collector.spans() == []

    handler(load_event("direct"), make_context())
    assert len(invocation_spans(collector)) == 2


def test_sdk_disabled_is_a_pure_pass_through(lambda_env, collector, monkeypatch):
    import sys

    from tests.instrumentation.functions import app

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    handler = handler_module.load(f"{FUNCTIONS}.app.handler")

    assert handler is sys.modules[f"{FUNCTIONS}.app"].handler is app.handler
    handler(load_event("direct"), make_context())
    assert collector.spans() == []


def test_broken_instrumentation_falls_back_to_the_user_handler(
    lambda_env, collector, monkeypatch, caplog
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://nowhere")
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        handler = load_app()

    assert "instrumentation disabled" in caplog.text
    assert handler(load_event("direct"), make_context()) == {"statusCode": 200, "body": "ok"}


def test_broken_trigger_classification_still_runs_the_handler(lambda_env, collector, monkeypatch):
    from instrumentation import triggers

    def explode(*args, **kwargs):
        raise RuntimeError("classification bug")

    handler = load_app()
    monkeypatch.setattr(triggers, "classify", explode)

    assert handler(load_event("direct"), make_context()) == {"statusCode": 200, "body": "ok"}


def test_sdk_disabled_decorator_returns_the_function(lambda_env, monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "TRUE")

    def function(event, context):
        return None

    assert handler_module.instrument_handler(function) is function


def test_decorator_instruments_the_same_way(lambda_env, collector):
    fresh_import("decorated_app")
    handler_module._instrumentation = None
    from tests.instrumentation.functions import decorated_app

    assert decorated_app.handler(load_event("apigw-rest"), make_context())["statusCode"] == 201

    [span] = invocation_spans(collector)
    assert span.name == "GET /pets/{petId}"
    assert span.attributes["http.response.status_code"] == 201
    assert span.attributes["faas.coldstart"] is True
    assert collector.named("init")


def test_decorated_function_behind_the_exec_wrapper_gets_one_span(lambda_env, collector):
    fresh_import("decorated_app")
    handler = handler_module.load(f"{FUNCTIONS}.decorated_app.handler")
    handler(load_event("direct"), make_context())

    assert len(invocation_spans(collector)) == 1
    assert len(collector.named("init")) == 1
