"""The OpenTelemetry API served without the SDK (instrumentation.api), with the real
opentelemetry-api package: first coldtail's provider driven in-process without making it the
global one, then test functions in fresh processes through the module bootstrap the runtime uses,
exporting to the collector's OTLP receiver."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from instrumentation import api
from instrumentation.exporter import OtlpHttpExporter
from instrumentation.invocation import Instrumentation, Settings
from instrumentation.otlp import encode_export_request
from instrumentation.spans import STATUS_ERROR, STATUS_OK, STATUS_UNSET, FinishedSpans
from instrumentation.spans import Span as Record
from tests.support.lambda_functions import FUNCTION_ARN, FUNCTIONS, process_env, run_python

ERROR = Status.STATUS_CODE_ERROR
PARENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN = 0xB7AD6B7169203331


@pytest.fixture
def owner(collector) -> Instrumentation:
    """The TracerProvider's owner, exporting to the collector."""
    return Instrumentation(
        Settings(),
        {"service.name": "api-test"},
        OtlpHttpExporter(f"{collector.endpoint}/v1/traces"),
    )


def tracer_of(owner: Instrumentation, **limits: str):
    provider = api.TracerProvider(owner, api.Limits(limits))
    return provider.get_tracer("test.scope", "2.0")


def finished(owner: Instrumentation) -> list[Record]:
    spans, _ = owner.finished.drain()
    return spans


def remote_parent(sampled: bool, state: str = "") -> context_api.Context:
    headers = {"traceparent": f"00-{PARENT_TRACE:032x}-{PARENT_SPAN:016x}-0{int(sampled)}"}
    if state:
        headers["tracestate"] = state
    return TraceContextTextMapPropagator().extract(headers)


def decoded(records: list[Record]) -> list[ProtoSpan]:
    request = ExportTraceServiceRequest.FromString(encode_export_request({}, records))
    return [span for scope in request.resource_spans[0].scope_spans for span in scope.spans]


# --- the API contract, in-process ----------------------------------------------------------


def test_nested_spans_with_kind_attributes_events_links_and_scope(owner):
    tracer = tracer_of(owner)
    linked = trace.SpanContext(1, 2, is_remote=True, trace_flags=trace.TraceFlags(1))
    with tracer.start_as_current_span(
        "outer", kind=trace.SpanKind.SERVER, attributes={"a": 1}, links=[trace.Link(linked)]
    ) as outer:
        assert trace.get_current_span() is outer
        with tracer.start_as_current_span("inner") as inner:
            inner.add_event("step", {"n": 2}, timestamp=123)
            inner.update_name("renamed")
        assert trace.get_current_span() is outer
    assert not outer.is_recording()

    inner_record, outer_record = finished(owner)
    assert (inner_record.name, outer_record.name) == ("renamed", "outer")
    assert outer_record.kind == 2  # OTLP SERVER
    assert inner_record.kind == 1  # OTLP INTERNAL
    assert inner_record.trace_id == outer_record.trace_id
    assert inner_record.parent_span_id == outer_record.span_id
    assert outer_record.parent_span_id == b""
    assert outer_record.attributes == {"a": 1}
    assert [(e.name, e.time_ns, e.attributes) for e in inner_record.events] == [
        ("step", 123, {"n": 2})
    ]
    [link] = outer_record.links
    assert (link.context.trace_id, link.context.span_id) == (
        (1).to_bytes(16, "big"),
        b"\0" * 7 + b"\2",
    )
    assert link.context.remote and link.context.sampled
    assert inner_record.scope == ("test.scope", "2.0")
    context = outer.get_span_context()
    assert context.trace_id == int.from_bytes(outer_record.trace_id, "big")
    assert context.span_id == int.from_bytes(outer_record.span_id, "big")
    assert context.trace_flags.sampled and not context.is_remote
    assert inner_record.start_ns >= outer_record.start_ns
    assert inner_record.end_ns <= outer_record.end_ns


def test_explicit_remote_parent_and_its_trace_state_carry_over(owner):
    tracer = tracer_of(owner)
    span = tracer.start_span("child", context=remote_parent(True, "vendor=x,other=y"))
    assert span.get_span_context().trace_state.to_header() == "vendor=x,other=y"
    span.end()

    [record] = finished(owner)
    assert record.trace_id == PARENT_TRACE.to_bytes(16, "big")
    assert record.parent_span_id == PARENT_SPAN.to_bytes(8, "big")
    assert record.parent_remote
    assert record.trace_state == "vendor=x,other=y"
    [proto] = decoded([record])
    assert proto.trace_state == "vendor=x,other=y"
    assert proto.flags == 0x301  # sampled, remote parent


def test_an_unsampled_parent_makes_a_non_recording_span_that_carries_the_trace(owner):
    tracer = tracer_of(owner)
    with tracer.start_as_current_span("dropped", context=remote_parent(False, "k=v")) as span:
        assert not span.is_recording()
        span.set_attribute("ignored", True)
        carrier: dict = {}
        TraceContextTextMapPropagator().inject(carrier)
    context = span.get_span_context()
    assert context.trace_id == PARENT_TRACE
    assert context.span_id not in (PARENT_SPAN, 0)
    assert not context.trace_flags.sampled
    assert context.trace_state.to_header() == "k=v"
    assert carrier["traceparent"] == f"00-{PARENT_TRACE:032x}-{context.span_id:016x}-00"
    assert finished(owner) == []


def test_parent_falls_back_to_the_invocation_but_not_for_an_explicit_empty_context(
    owner,
):
    tracer = tracer_of(owner)
    invocation = Record("invocation")
    owner.active = invocation
    tracer.start_span("under the invocation").end()
    tracer.start_span("root on purpose", context=context_api.Context()).end()
    owner.active = None
    tracer.start_span("between invocations").end()

    child, root, between = finished(owner)
    assert (child.trace_id, child.parent_span_id) == (invocation.trace_id, invocation.span_id)
    assert root.parent_span_id == b"" and root.trace_id != invocation.trace_id
    assert between.parent_span_id == b""


def test_attribute_values_follow_the_api_types(owner):
    span = tracer_of(owner).start_span("s")
    values = {
        "str": "x",
        "bool": False,
        "int": 7,
        "float": 1.5,
        "bytes": b"\x00",
        "list": [1, 2],
        "tuple": ("a", "b"),
        "map": {"k": [1, "two"], "": "empty keys go"},
        "none": None,
        "object": object(),
        "": "an empty key",
    }
    span.set_attributes(values)
    span.set_attribute(42, "not a str key")
    span.end()

    [record] = finished(owner)
    assert record.attributes == {
        "str": "x",
        "bool": False,
        "int": 7,
        "float": 1.5,
        "bytes": b"\x00",
        "list": (1, 2),
        "tuple": ("a", "b"),
        "map": {"k": (1, "two")},
    }
    assert record.dropped_attributes == 0  # invalid values are not what a limit dropped
    [proto] = decoded([record])
    assert len(proto.attributes) == 8


def test_limits_discard_what_is_past_them_and_count_it(owner):
    tracer = tracer_of(
        owner,
        OTEL_ATTRIBUTE_COUNT_LIMIT="2",
        OTEL_SPAN_EVENT_COUNT_LIMIT="1",
        OTEL_SPAN_LINK_COUNT_LIMIT="1",
        OTEL_LINK_ATTRIBUTE_COUNT_LIMIT="1",
        OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT="3",
        OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="5",
    )
    link = trace.SpanContext(3, 4, is_remote=False)
    span = tracer.start_span("s", links=[trace.Link(link, {"a": 1, "b": 2}), trace.Link(link)])
    span.set_attributes({"first": "abcdef", "second": ["abcdef"], "third": 3})
    span.set_attribute("first", "replaced keeps its place")
    span.add_event("kept", {"x": "abcdefgh", "y": 2, "z": 3})
    span.add_event("dropped")
    span.end()

    [record] = finished(owner)
    assert record.attributes == {"first": "rep", "second": ("abc",)}
    assert record.dropped_attributes == 1
    [event] = record.events
    assert (event.attributes, event.dropped_attributes) == ({"x": "abcde", "y": 2}, 1)
    assert record.dropped_events == 1
    [kept_link] = record.links
    assert (kept_link.attributes, kept_link.dropped_attributes) == ({"a": 1}, 1)
    assert record.dropped_links == 1
    [proto] = decoded([record])
    assert (proto.dropped_attributes_count, proto.dropped_events_count) == (1, 1)
    assert proto.dropped_links_count == 1
    assert proto.events[0].dropped_attributes_count == 1
    assert proto.links[0].dropped_attributes_count == 1


def test_default_limits_are_128():
    limits = api.Limits({})
    assert (limits.attributes, limits.events, limits.links) == (128, 128, 128)
    assert (limits.event_attributes, limits.link_attributes) == (128, 128)
    assert limits.span_attribute_length is None and limits.attribute_length is None


def test_status_unset_is_ignored_ok_is_final_and_only_error_has_a_description(owner):
    tracer = tracer_of(owner)
    error = tracer.start_span("error")
    error.set_status(trace.StatusCode.ERROR, "broken")
    error.set_status(trace.StatusCode.UNSET)
    error.end()
    ok = tracer.start_span("ok")
    ok.set_status(trace.Status(trace.StatusCode.OK, "not kept"))
    ok.set_status(trace.StatusCode.ERROR, "too late")
    ok.end()
    untouched = tracer.start_span("untouched")
    untouched.end()
    untouched.set_status(trace.StatusCode.ERROR)  # after the end: ignored

    error_record, ok_record, untouched_record = finished(owner)
    assert (error_record.status_code, error_record.status_message) == (STATUS_ERROR, "broken")
    assert (ok_record.status_code, ok_record.status_message) == (STATUS_OK, "")
    assert untouched_record.status_code == STATUS_UNSET


class PaymentDeclined(Exception):
    pass


def test_exceptions_are_recorded_as_the_semconv_event_and_propagate(owner):
    tracer = tracer_of(owner)
    with pytest.raises(PaymentDeclined), tracer.start_as_current_span("current"):
        raise PaymentDeclined("card declined")
    with pytest.raises(PaymentDeclined), tracer.start_span("plain"):
        raise PaymentDeclined("again")
    with (
        pytest.raises(PaymentDeclined),
        tracer.start_span("quiet", record_exception=False, set_status_on_exception=False),
    ):
        raise PaymentDeclined("unrecorded")
    with pytest.raises(KeyboardInterrupt), tracer.start_as_current_span("interrupted"):
        raise KeyboardInterrupt
    manual = tracer.start_span("manual")
    manual.record_exception(ValueError("v"), {"extra": 1}, timestamp=5)
    manual.end()

    current, plain, quiet, interrupted, manual_record = finished(owner)
    for record, message in ((current, "card declined"), (plain, "again")):
        [event] = record.events
        assert event.name == "exception"
        assert event.attributes["exception.type"] == f"{__name__}.PaymentDeclined"
        assert event.attributes["exception.message"] == message
        assert "raise PaymentDeclined" in event.attributes["exception.stacktrace"]
        assert record.status_code == STATUS_ERROR
        assert record.status_message == f"PaymentDeclined: {message}"
        assert "exception.type" not in record.attributes
    assert (quiet.events, quiet.status_code) == ([], STATUS_UNSET)
    assert (interrupted.events, interrupted.status_code) == ([], STATUS_UNSET)
    [event] = manual_record.events
    assert (event.time_ns, event.attributes["extra"]) == (5, 1)
    assert event.attributes["exception.type"] == "ValueError"


def test_start_as_current_span_decorates_functions_and_coroutines(owner):
    tracer = tracer_of(owner)

    @tracer.start_as_current_span("sync")
    def work():
        return trace.get_current_span().get_span_context().span_id

    @tracer.start_as_current_span("async")
    async def async_work():
        await asyncio.sleep(0.01)
        return trace.get_current_span().get_span_context().span_id

    first, second = work(), work()
    inside = asyncio.run(async_work())

    sync_one, sync_two, async_record = finished(owner)
    assert first != second
    assert [int.from_bytes(r.span_id, "big") for r in (sync_one, sync_two)] == [first, second]
    assert int.from_bytes(async_record.span_id, "big") == inside
    assert async_record.end_ns - async_record.start_ns >= 10_000_000


def test_a_span_ends_once_and_then_stops_recording(owner):
    span = tracer_of(owner).start_span("once", start_time=100)
    span.end(200)
    span.end(300)
    span.set_attribute("late", 1)
    span.add_event("late")

    [record] = finished(owner)
    assert (record.start_ns, record.end_ns) == (100, 200)
    assert record.attributes == {} and record.events == []


def test_spans_from_many_threads_all_arrive(owner):
    tracer = tracer_of(owner)

    def work(n: int) -> None:
        for i in range(50):
            with tracer.start_as_current_span(f"t{n}") as span:
                span.set_attribute("i", i)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    records = finished(owner)
    assert len(records) == 400
    assert len({r.span_id for r in records}) == 400
    assert all(r.parent_span_id == b"" for r in records)  # threads start with an empty context


def test_the_invocation_view_changes_the_invocation_span_but_never_ends_it(owner):
    invocation = Record("invocation")
    view, token = api.activate(invocation, api.Limits({}))
    try:
        current = trace.get_current_span()
        current.set_attribute("order.id", "o-1")
        current.end()
        assert current.is_recording()
        child = tracer_of(owner).start_span("child")
        child.end()
    finally:
        api.deactivate(view, token)
    view.set_attribute("after", 1)

    assert not trace.get_current_span().get_span_context().is_valid
    assert invocation.attributes == {"order.id": "o-1"}
    assert invocation.end_ns == 0
    [child_record] = finished(owner)
    assert child_record.parent_span_id == invocation.span_id


def test_ended_spans_past_the_cap_drop_the_oldest_counted_and_logged_once(owner, collector, caplog):
    owner.finished = FinishedSpans(3)
    tracer = tracer_of(owner)
    for i in range(5):
        tracer.start_span(f"span {i}").end()

    with caplog.at_level(logging.WARNING, logger="coldtail"):
        assert owner.flush(1000)

    assert [s.name for s in collector.spans()] == ["span 2", "span 3", "span 4"]
    [line] = caplog.messages
    assert "dropped the 2 oldest" in line
    assert owner.finished.drain() == ([], 0)


# --- test functions in fresh processes -----------------------------------------------------

DRIVER = f"""
import json, sys, time
import instrumentation.handler
from awslambdaric.lambda_context import LambdaContext
for n, event in enumerate(json.loads(sys.argv[1])):
    if "pause" in event:
        time.sleep(event["pause"])
        continue
    deadline_ms = int(time.time() * 1000) + 30_000
    context = LambdaContext(f"request-{{n}}", None, None, deadline_ms, {FUNCTION_ARN!r})
    try:
        print(json.dumps(instrumentation.handler.handler(event, context)), flush=True)
    except Exception as e:
        print(json.dumps({{"raised": type(e).__name__, "message": str(e)}}), flush=True)
"""


def run_function(lambda_env: dict, module: str, events: list[dict], **env: str) -> list:
    environment = process_env(lambda_env, ORIG_HANDLER=f"{FUNCTIONS}.{module}.handler", **env)
    result = run_python(DRIVER, environment, json.dumps(events))
    assert result.returncode == 0, result.stderr
    assert "coldtail" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def invocation_of(collector, request_id: str):
    [span] = [s for s in collector.spans() if s.attributes.get("faas.invocation_id") == request_id]
    return span


def test_handler_spans_without_an_sdk_nest_under_the_invocation_in_its_export(
    lambda_env, collector
):
    results = run_function(lambda_env, "api_app", [{}, {}])

    for n, result in enumerate(results):
        invocation = invocation_of(collector, f"request-{n}")
        assert invocation.attributes["order.id"] == "o-1"  # set on trace.get_current_span()
        [request] = [
            r for r in collector.requests if invocation.span_id in _span_ids(r)
        ]  # one export carries the invocation and its spans
        charge = _only(collector, "charge", invocation.span_id)
        ledger = _only(collector, "ledger", charge.span_id)
        assert {charge.span_id, ledger.span_id} <= _span_ids(request)
        assert charge.trace_id == ledger.trace_id == invocation.trace_id
        assert charge.kind == ProtoSpan.SPAN_KIND_CLIENT
        assert charge.attributes == {"amount": 42}
        assert [(e.name, e.attributes[0].value.string_value) for e in charge.events] == [
            ("authorised", "visa")
        ]
        assert charge.scope == ("orders", "1.0")
        assert charge.resource == invocation.resource
        assert invocation.start_time_unix_nano <= charge.start_time_unix_nano
        assert charge.end_time_unix_nano <= invocation.end_time_unix_nano
        # What the function would send on: the trace and the span current at the call.
        traceparent = json.loads(result["body"])["traceparent"]
        assert traceparent == f"00-{ledger.trace_id.hex()}-{ledger.span_id.hex()}-01"


def test_an_exception_in_an_api_span_is_recorded_there_and_on_the_invocation(lambda_env, collector):
    [result] = run_function(lambda_env, "api_app", [{"raise": "card declined"}])

    assert result == {"raised": "HandlerError", "message": "card declined"}
    error_type = f"{FUNCTIONS}.api_app.HandlerError"
    invocation = invocation_of(collector, "request-0")
    charge = _only(collector, "charge", invocation.span_id)
    for span in (charge, invocation):
        assert span.status.code == ERROR
        assert span.status.message == "HandlerError: card declined"
        [event] = [e for e in span.events if e.name == "exception"]
        assert event.attributes[0].value.string_value == error_type
    assert invocation.attributes["error.type"] == error_type


def test_a_handler_that_imports_the_api_when_it_runs_is_served_from_the_next_invocation(
    lambda_env, collector
):
    run_function(lambda_env, "lazy_api_app", [{}, {}, {}])

    # The first one ran with no provider set: its API spans were the API's no-op ones.
    first = invocation_of(collector, "request-0")
    assert not [s for s in collector.named("lazy work") if s.trace_id == first.trace_id]
    assert len(collector.named("lazy work")) == 2
    for invocation in (invocation_of(collector, f"request-{n}") for n in (1, 2)):
        work = _only(collector, "lazy work", invocation.span_id)
        assert work.trace_id == invocation.trace_id
        assert work.attributes == {"lazy": True}


def test_the_functions_own_sdk_provider_is_kept_and_its_spans_join_the_invocation(
    lambda_env, collector
):
    [result] = run_function(lambda_env, "sdk_app", [{}])

    body = json.loads(result["body"])
    assert body["own_provider"] is True
    invocation = invocation_of(collector, "request-0")
    assert body["spans"] == [
        {
            "name": "own work",
            "trace_id": invocation.trace_id.hex(),
            "parent_id": invocation.span_id.hex(),
        }
    ]
    assert not collector.named("own work")  # it went through the function's own SDK


def test_a_span_ending_after_its_invocation_goes_out_with_the_next_export(lambda_env, collector):
    results = run_function(lambda_env, "api_app", [{"background": 0.3}, {"pause": 0.6}, {}])

    assert results[0]["statusCode"] == 202
    first, second = (invocation_of(collector, f"request-{n}") for n in (0, 2))
    background = _only(collector, "background", first.span_id)
    [first_request, second_request] = collector.requests
    assert background.span_id not in _span_ids(first_request)
    assert {background.span_id, second.span_id} <= _span_ids(second_request)


class _RecordingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received: list[dict] = []
        super().__init__(("127.0.0.1", 0), _Recorder)


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.received.append(dict(self.headers))
        body = b"stock: 3"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture
def downstream():
    server = _RecordingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_an_instrumented_outgoing_call_carries_its_client_span_in_traceparent(
    lambda_env, collector, downstream
):
    url = f"http://127.0.0.1:{downstream.server_address[1]}/stock"
    [result] = run_function(
        lambda_env, "api_app", [{"call": url}], OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="requests"
    )

    assert result == {"statusCode": 200, "body": "stock: 3"}
    invocation = invocation_of(collector, "request-0")
    [client] = [s for s in collector.spans() if s.kind == ProtoSpan.SPAN_KIND_CLIENT]
    assert client.parent_span_id == invocation.span_id
    assert client.trace_id == invocation.trace_id
    assert client.scope[0] == "opentelemetry.instrumentation.requests"
    assert client.name == "GET"
    [headers] = downstream.received
    traceparent = {k.lower(): v for k, v in headers.items()}["traceparent"]
    assert traceparent == f"00-{client.trace_id.hex()}-{client.span_id.hex()}-01"


def test_nothing_of_opentelemetry_is_loaded_when_the_function_never_uses_it(lambda_env, collector):
    results = run_function(lambda_env, "modules_app", [{}, {}])

    assert [json.loads(result["body"]) for result in results] == [[], []]
    assert len([s for s in collector.spans() if "faas.invocation_id" in s.attributes]) == 2


def _only(collector, name: str, parent_span_id: bytes):
    [span] = [s for s in collector.named(name) if s.parent_span_id == parent_span_id]
    return span


def _span_ids(request) -> set[bytes]:
    return {
        span.span_id
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }
