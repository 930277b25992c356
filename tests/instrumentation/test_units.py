"""Unit tests of the small pieces: propagation, trigger edge cases, resource, spans, import
timing."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

import instrumentation
from instrumentation import propagation, triggers
from instrumentation.imports import ImportRecorder
from instrumentation.resource import lambda_resource, parse_key_values
from instrumentation.spans import STATUS_ERROR, STATUS_OK, Span, SpanContext
from tests.support.lambda_functions import FUNCTIONS, fresh_import, load_event, make_context

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
XRAY = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"


def test_version_matches_the_distribution():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert instrumentation.__version__ == pyproject["project"]["version"]


# --- propagation ---------------------------------------------------------------------------


def test_traceparent():
    context = propagation.parse_traceparent(TRACEPARENT, " a=1,b=2 ")
    assert context == SpanContext(
        bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        bytes.fromhex("b7ad6b7169203331"),
        True,
        "a=1,b=2",
    )
    assert not propagation.parse_traceparent(TRACEPARENT[:-2] + "00").sampled
    # A later version may carry more fields.
    assert propagation.parse_traceparent("01" + TRACEPARENT[2:] + "-extra") is not None


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        "ff" + TRACEPARENT[2:],
        TRACEPARENT + "-extra",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333g-01",
    ],
)
def test_invalid_traceparent(value):
    assert propagation.parse_traceparent(value) is None


def test_xray_header():
    context = propagation.parse_xray(XRAY)
    assert context.trace_id == bytes.fromhex("5759e988bd862e3fe1be46a994272793")
    assert context.span_id == bytes.fromhex("53995c3f42cd8ad8")
    assert context.sampled
    assert not propagation.parse_xray(XRAY.replace("Sampled=1", "Sampled=0")).sampled
    spaced = "Root=1-5759e988-bd862e3fe1be46a994272793; Parent=53995c3f42cd8ad8; Lineage=a:1"
    assert propagation.parse_xray(spaced).span_id == context.span_id


@pytest.mark.parametrize(
    "value",
    [
        None,
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # no parent (as ALB sends)
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "Root=1-5759e98-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a99427279;Parent=53995c3f42cd8ad8",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
    ],
)
def test_invalid_xray_header(value):
    assert propagation.parse_xray(value) is None


def test_extract_is_case_insensitive_and_later_propagators_win():
    headers = {"TraceParent": TRACEPARENT, "X-AMZN-TRACE-ID": XRAY}
    w3c = propagation.extract(headers, ("tracecontext",), {})
    xray = propagation.extract(headers, ("tracecontext", "xray"), {})
    assert w3c.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert xray.trace_id.hex() == "5759e988bd862e3fe1be46a994272793"
    assert propagation.extract(headers, ("xray", "tracecontext"), {}) == w3c
    assert propagation.extract(headers, ("none", "tracecontext"), {}) is None
    assert propagation.extract(None, ("tracecontext",), {}) is None


def test_xray_lambda_uses_the_environment_only_without_an_earlier_parent():
    environ = {"_X_AMZN_TRACE_ID": XRAY}
    from_env = propagation.extract({}, ("tracecontext", "xray-lambda"), environ)
    assert from_env.span_id.hex() == "53995c3f42cd8ad8"
    with_header = propagation.extract(
        {"traceparent": TRACEPARENT}, ("tracecontext", "xray-lambda"), environ
    )
    assert with_header.span_id.hex() == "b7ad6b7169203331"


def test_propagators_from_env():
    assert propagation.propagators_from_env({}) == ("tracecontext", "baggage")
    assert propagation.propagators_from_env({"OTEL_PROPAGATORS": " XRay , tracecontext"}) == (
        "xray",
        "tracecontext",
    )


# --- triggers ------------------------------------------------------------------------------


def test_rest_api_with_multi_value_headers_only():
    event = load_event("apigw-rest")
    del event["headers"]
    trigger = triggers.classify(event, make_context())
    assert trigger.attributes["user_agent.original"] == "okhttp 3.0"
    assert trigger.parent.span_id.hex() == "b7ad6b7169203331"


def test_http_api_default_route_has_no_route():
    event = load_event("apigw-http")
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    trigger = triggers.classify(event, make_context())
    assert trigger.name == "POST"
    assert "http.route" not in trigger.attributes


def test_v2_response_without_status_code_is_a_200_and_v1_has_none():
    v2 = triggers.classify(load_event("apigw-http"), make_context())
    v1 = triggers.classify(load_event("apigw-rest"), make_context())
    assert triggers.response_attributes(v2, "plain body") == (
        {"http.response.status_code": 200},
        False,
    )
    assert triggers.response_attributes(v1, None) == ({}, False)
    assert triggers.response_attributes(v1, {"statusCode": "502"}) == (
        {"http.response.status_code": 502},
        True,
    )


def test_batch_from_several_queues_has_no_destination():
    event = load_event("sqs")
    event["Records"][1]["eventSourceARN"] = "arn:aws:sqs:us-east-2:123456789012:other-queue"
    trigger = triggers.classify(event, make_context())
    assert trigger.name == "process"
    assert "messaging.destination.name" not in trigger.attributes


def test_mixed_dynamodb_operations_have_no_operation():
    event = load_event("dynamodb")
    event["Records"][1]["eventName"] = "REMOVE"
    trigger = triggers.classify(event, make_context())
    assert "faas.document.operation" not in trigger.attributes


@pytest.mark.parametrize("event", [None, [], "text", 42, {}, {"Records": []}, {"Records": [1]}])
def test_unrecognised_events_are_direct_invocations(event):
    trigger = triggers.classify(event, make_context())
    assert trigger.attributes["faas.trigger"] == "other"


def test_context_without_attributes():
    trigger = triggers.classify({}, object(), environ={"AWS_LAMBDA_FUNCTION_NAME": "fn"})
    assert trigger.name == "fn"
    assert "faas.invocation_id" not in trigger.attributes


# --- resource ------------------------------------------------------------------------------


def test_resource_attributes_env_and_service_name_precedence():
    environ = {
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "snap-start",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.name=from-attrs,"
        "team=a%2Cb%3Dc, bad, =novalue",
    }
    resource = lambda_resource(environ)
    assert resource["service.name"] == "from-attrs"
    assert resource["deployment.environment"] == "prod"
    assert resource["team"] == "a,b=c"
    assert resource["faas.max_memory"] == 128 * 1024 * 1024
    assert resource["coldtail.init_type"] == "snap-start"
    assert "bad" not in resource and "" not in resource
    assert lambda_resource({**environ, "OTEL_SERVICE_NAME": "svc"})["service.name"] == "svc"
    assert lambda_resource({})["service.name"] == "unknown_service"


def test_parse_key_values():
    assert parse_key_values("") == {}
    assert parse_key_values(" a = 1 ,b=x%20y") == {"a": "1", "b": "x y"}


# --- spans ---------------------------------------------------------------------------------


def test_span_ids_and_status():
    span = Span("s")
    assert len(span.trace_id) == 16 and len(span.span_id) == 8
    assert span.trace_id != Span("t").trace_id
    span.set_status(STATUS_OK, "not kept for OK")
    assert span.status_message == ""
    span.set_status(STATUS_ERROR, "kept")
    assert span.status_message == "kept"
    span.end(5)
    span.end(9)
    assert span.end_ns == 5


def test_record_exception_names_the_qualified_type():
    span = Span("s")
    try:
        raise KeyError("missing")
    except KeyError as e:
        span.record_exception(e)
    assert span.attributes["exception.type"] == "KeyError"
    assert span.attributes["exception.message"] == "'missing'"
    assert "raise KeyError" in span.attributes["exception.stacktrace"]
    assert span.events[0].name == "exception"
    assert span.status_code == STATUS_ERROR


def test_snapshot_is_a_copy_with_its_own_id():
    span = Span("s", parent=SpanContext(b"\x01" * 16, b"\x02" * 8))
    span.set_attribute("a", 1)
    copy = span.snapshot()
    copy.set_attribute("b", 2)
    assert copy.span_id != span.span_id
    assert (copy.trace_id, copy.parent_span_id) == (span.trace_id, span.parent_span_id)
    assert span.attributes == {"a": 1}


# --- import timing -------------------------------------------------------------------------


def test_import_recorder_times_nested_imports_and_leaves_real_loaders():
    fresh_import("slow_dependency", "slower_dependency")
    recorder = ImportRecorder()
    recorder.start()
    try:
        __import__(f"{FUNCTIONS}.slow_dependency")
    finally:
        recorder.stop()

    assert recorder not in sys.meta_path
    by_name = {r.module: r for r in recorder.slow(10_000_000)}
    slow = by_name[f"{FUNCTIONS}.slow_dependency"]
    slower = by_name[f"{FUNCTIONS}.slower_dependency"]
    assert slower.parent is slow
    assert slow.duration_ns >= slower.duration_ns >= 30_000_000
    module = sys.modules[f"{FUNCTIONS}.slower_dependency"]
    assert type(module.__loader__).__name__ == "SourceFileLoader"
    assert module.__spec__.loader is module.__loader__


def test_import_recorder_ignores_other_threads():
    import threading

    fresh_import("slower_dependency")
    recorder = ImportRecorder()
    recorder.start()
    try:
        thread = threading.Thread(target=__import__, args=(f"{FUNCTIONS}.slower_dependency",))
        thread.start()
        thread.join()
    finally:
        recorder.stop()
    assert recorder.records == []
