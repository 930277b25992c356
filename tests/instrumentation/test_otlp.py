"""The hand-written encoder, decoded by opentelemetry-proto and compared field by field."""

from __future__ import annotations

import math

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.core.pdata import any_value_to_python
from instrumentation.otlp import any_value, encode_export_request
from instrumentation.spans import (
    KIND_CONSUMER,
    KIND_SERVER,
    SCOPE,
    STATUS_ERROR,
    STATUS_OK,
    Span,
    SpanContext,
)
from tests.support.lambda_functions import attributes

VALUES = [
    "",
    "ascii",
    "ünïcødé ✓ 日本語 🚀",
    True,
    False,
    0,
    1,
    127,
    128,
    300,
    -1,
    -128,
    2**31,
    -(2**31),
    2**63 - 1,
    -(2**63),
    0.0,
    -0.0,
    1.5,
    -2.25e-300,
    1e308,
    math.inf,
    -math.inf,
    b"",
    b"\x00\xffbytes",
    [],
    ["a", "b", ""],
    [True, False],
    [1, -1, 2**62],
    [0.5, -0.5],
    ("tuple", "too"),
    {"nested": {"deeper": [1, "x"]}, "empty": ""},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_any_value_round_trips(value):
    decoded = AnyValue.FromString(any_value(value))
    expected = list(value) if isinstance(value, tuple) else value
    assert any_value_to_python(decoded) == expected
    if isinstance(value, float) and value == 0:
        assert math.copysign(1, decoded.double_value) == math.copysign(1, value)


def test_empty_values_keep_their_type():
    """proto3 leaves defaults out, but an AnyValue must say which of its kinds is set."""
    assert AnyValue.FromString(any_value("")).WhichOneof("value") == "string_value"
    assert AnyValue.FromString(any_value(False)).WhichOneof("value") == "bool_value"
    assert AnyValue.FromString(any_value(0)).WhichOneof("value") == "int_value"
    assert AnyValue.FromString(any_value(0.0)).WhichOneof("value") == "double_value"
    assert AnyValue.FromString(any_value([])).WhichOneof("value") == "array_value"
    assert AnyValue.FromString(any_value(b"")).WhichOneof("value") == "bytes_value"


def test_nan_and_ints_beyond_int64():
    assert math.isnan(AnyValue.FromString(any_value(math.nan)).double_value)
    assert AnyValue.FromString(any_value(2**64)).string_value == str(2**64)
    assert AnyValue.FromString(any_value(-(2**63) - 1)).string_value == str(-(2**63) - 1)
    assert AnyValue.FromString(any_value(None)).WhichOneof("value") is None


def test_export_request_round_trips_field_by_field():
    parent = SpanContext(bytes(range(1, 17)), bytes(range(1, 9)), True, "vendor=x")
    server = Span("GET /pets/{id}", KIND_SERVER, parent=parent, start_ns=1_700_000_000_123_456_789)
    server.set_attributes({f"attr.{i}": value for i, value in enumerate(VALUES)})
    server.set_attribute("none", None)
    server.add_event("exception", {"exception.type": "ValueError"}, time_ns=1_700_000_000_2)
    server.add_event("empty event", time_ns=1)
    linked = SpanContext(b"\xaa" * 16, b"\xbb" * 8, sampled=False, trace_state="k=v")
    server.add_link(linked, {"messaging.message.id": "m-1", "n": 3})
    server.set_status(STATUS_ERROR, "HTTP 503 ✗")
    server.end(1_700_000_001_000_000_000)
    child = Span("init", parent=server.context, start_ns=5, scope=("other.scope", ""))
    child.set_status(STATUS_OK, "ignored for OK")
    child.end(2**64 - 1)
    root = Span("root", KIND_CONSUMER, start_ns=10)
    root.end(20)
    resource = {"service.name": "my-function", "faas.max_memory": 536870912, "empty": ""}

    body = encode_export_request(resource, [server, child, root])
    request = ExportTraceServiceRequest.FromString(body)

    [resource_spans] = request.resource_spans
    assert attributes(resource_spans.resource.attributes) == resource
    assert [(s.scope.name, s.scope.version) for s in resource_spans.scope_spans] == [
        SCOPE,
        ("other.scope", ""),
    ]
    first_scope, second_scope = resource_spans.scope_spans
    decoded_server, decoded_root = first_scope.spans
    [decoded_child] = second_scope.spans

    assert decoded_server.trace_id == parent.trace_id
    assert decoded_server.span_id == server.span_id
    assert decoded_server.parent_span_id == parent.span_id
    assert decoded_server.trace_state == "vendor=x"
    assert decoded_server.name == "GET /pets/{id}"
    assert decoded_server.kind == KIND_SERVER
    assert decoded_server.start_time_unix_nano == 1_700_000_000_123_456_789
    assert decoded_server.end_time_unix_nano == 1_700_000_001_000_000_000
    expected = {f"attr.{i}": list(v) if isinstance(v, tuple) else v for i, v in enumerate(VALUES)}
    assert attributes(decoded_server.attributes) == expected
    assert [(e.name, e.time_unix_nano) for e in decoded_server.events] == [
        ("exception", 1_700_000_000_2),
        ("empty event", 1),
    ]
    assert attributes(decoded_server.events[0].attributes) == {"exception.type": "ValueError"}
    [link] = decoded_server.links
    assert (link.trace_id, link.span_id, link.trace_state) == (b"\xaa" * 16, b"\xbb" * 8, "k=v")
    assert attributes(link.attributes) == {"messaging.message.id": "m-1", "n": 3}
    assert link.flags == 0x300  # remote, not sampled
    assert (decoded_server.status.code, decoded_server.status.message) == (2, "HTTP 503 ✗")
    assert decoded_server.flags == 0x301  # sampled, remote parent

    assert decoded_child.parent_span_id == server.span_id
    assert decoded_child.trace_id == server.trace_id
    assert decoded_child.kind == 1
    assert decoded_child.end_time_unix_nano == 2**64 - 1
    assert (decoded_child.status.code, decoded_child.status.message) == (1, "")
    assert decoded_child.flags == 0x101  # sampled, local parent

    assert decoded_root.parent_span_id == b""
    assert len(decoded_root.trace_id) == 16 and decoded_root.trace_id != bytes(16)
    assert decoded_root.kind == KIND_CONSUMER
    assert not decoded_root.HasField("status")


def test_encoding_matches_the_reference_serialisation():
    """Byte for byte what opentelemetry-proto writes for the same message."""
    span = Span("s", KIND_SERVER, start_ns=1, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.set_attributes({"a": "x", "b": -5, "c": [1.5, True]})
    span.end(2)
    body = encode_export_request({"service.name": "f"}, [span])

    assert ExportTraceServiceRequest.FromString(body).SerializeToString() == body


def test_dropped_counts_match_the_reference_serialisation():
    span = Span("s", start_ns=1, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    span.add_event("e", {"k": 1}, time_ns=3)
    span.events[0].dropped_attributes = 4
    span.add_link(SpanContext(b"\x03" * 16, b"\x04" * 8), {"l": True})
    span.links[0].dropped_attributes = 5
    span.dropped_attributes, span.dropped_events, span.dropped_links = 1, 2, 3
    span.end(2)
    body = encode_export_request({}, [span])

    request = ExportTraceServiceRequest.FromString(body)
    assert request.SerializeToString() == body
    decoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert (decoded.dropped_attributes_count, decoded.dropped_events_count) == (1, 2)
    assert decoded.dropped_links_count == 3
    assert decoded.events[0].dropped_attributes_count == 4
    assert decoded.links[0].dropped_attributes_count == 5


def test_empty_batch_and_empty_resource():
    request = ExportTraceServiceRequest.FromString(encode_export_request({}, []))
    [resource_spans] = request.resource_spans
    assert list(resource_spans.resource.attributes) == []
    assert list(resource_spans.scope_spans) == []
