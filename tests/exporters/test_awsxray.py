"""awsxray: spans to segment documents, sent to moto's X-Ray server and read back with
BatchGetTraces, as X-Ray's console and API would show them."""

import json
import re
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.aws.session import call
from collector.core.component import Kind
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import Traces, set_attr
from collector.core.signals import Signal
from collector.exporters.awsxray import exporter as awsxray
from collector.exporters.awsxray.segments import SegmentWriter, trace_id
from tests.support.aws import aws_client
from tests.support.components import make_settings

TRACE = bytes.fromhex("5f2b3c4d0123456789abcdef01234567")
X_RAY_TRACE_ID = re.compile(r"^1-[0-9a-f]{8}-[0-9a-f]{24}$")
STACK = """Traceback (most recent call last):
  File "/var/task/app.py", line 12, in handler
    return orders.find(event["id"])
  File "/var/task/orders.py", line 40, in find
    raise TimeoutError("db")
TimeoutError: db"""


def lambda_trace(spans: int = 2, trace: bytes = TRACE) -> Traces:
    """One trace of a cold Lambda invocation: a SERVER span, a database CLIENT child that
    failed, and `spans - 2` more children."""
    batch = Traces()
    rs = batch.resource_spans.add()
    for key, value in {
        "service.name": "checkout",
        "service.version": "1.4.2",
        "cloud.platform": "aws_lambda",
        "aws.log.group.names": ["/aws/lambda/checkout"],
    }.items():
        set_attr(rs.resource.attributes, key, value)
    ss = rs.scope_spans.add()
    server = ss.spans.add(trace_id=trace, span_id=bytes.fromhex("1111111111111111"))
    server.name, server.kind = "GET /orders/{id}", Span.SPAN_KIND_SERVER
    server.start_time_unix_nano, server.end_time_unix_nano = (
        1_764_000_000_000_000_000,
        (1_764_000_000_250_000_000),
    )
    for key, value in {
        "http.request.method": "GET",
        "url.full": "https://api.example.com/orders/7",
        "http.response.status_code": 503,
        "coldtail.cold_start": True,
        "faas.coldstart": True,
        "coldtail.latency.tail": "p99",
        "tenant": "acme",
    }.items():
        set_attr(server.attributes, key, value)
    for i in range(spans - 1):
        child = ss.spans.add(trace_id=trace, span_id=(0x2222222222222222 + i).to_bytes(8, "big"))
        child.parent_span_id = server.span_id
        child.name, child.kind = "SELECT orders", Span.SPAN_KIND_CLIENT
        child.start_time_unix_nano = server.start_time_unix_nano + 10_000_000
        child.end_time_unix_nano = server.start_time_unix_nano + 200_000_000
        set_attr(child.attributes, "db.system", "postgresql")
        set_attr(child.attributes, "db.query.text", "SELECT * FROM orders WHERE id = ?")
        set_attr(child.attributes, "server.address", "orders-db")
        if i == 0:
            child.status.code = Status.STATUS_CODE_ERROR
            event = child.events.add(name="exception")
            set_attr(event.attributes, "exception.type", "TimeoutError")
            set_attr(event.attributes, "exception.message", "db")
            set_attr(event.attributes, "exception.stacktrace", STACK)
    return batch


@pytest.fixture
def xray(moto_server, aws_credentials):
    return aws_client("xray", moto_server)


async def export(config: dict, batch) -> None:
    settings = make_settings(Kind.EXPORTER, "awsxray")
    exporter = awsxray.factory.create(
        settings, awsxray.Config.model_validate(config), Signal.TRACES
    )
    await exporter.start(None)
    try:
        await exporter.consume(batch)
    finally:
        await exporter.shutdown()


def stored_documents(xray, ids: list[str]) -> list[dict]:
    traces = xray.batch_get_traces(TraceIds=ids)["Traces"]
    return [json.loads(s["Document"]) for t in traces for s in t["Segments"]]


async def test_a_lambda_trace_reads_back_as_a_segment_and_its_subsegment(moto_server, xray):
    await export({"endpoint": moto_server, "sending_queue": {"enabled": False}}, lambda_trace())
    documents = stored_documents(xray, [trace_id(TRACE)])
    segment = next(d for d in documents if "parent_id" not in d)
    [subsegment] = [d for d in documents if d.get("parent_id") == segment["id"]]

    assert X_RAY_TRACE_ID.match(segment["trace_id"])
    assert segment["trace_id"] == subsegment["trace_id"] == "1-5f2b3c4d-0123456789abcdef01234567"
    assert (segment["name"], segment["id"]) == ("checkout", "1111111111111111")
    assert (segment["start_time"], segment["end_time"]) == (1_764_000_000.0, 1_764_000_000.25)
    assert segment["origin"] == "AWS::Lambda::Function"
    assert segment["service"] == {"version": "1.4.2"}
    assert segment["http"] == {
        "request": {"method": "GET", "url": "https://api.example.com/orders/7"},
        "response": {"status": 503},
    }
    assert segment["fault"] is True
    # Searchable in X-Ray: coldtail's tags are annotations, other attributes metadata.
    assert segment["annotations"] == {
        "coldtail_cold_start": True,
        "faas_coldstart": True,
        "coldtail_latency_tail": "p99",
    }
    assert segment["metadata"] == {"default": {"tenant": "acme"}}
    assert segment["aws"] == {"cloudwatch_logs": [{"log_group": "/aws/lambda/checkout"}]}

    # X-Ray's trace list finds the trace in its time window, as a failed one.
    summaries = xray.get_trace_summaries(
        StartTime=datetime.fromtimestamp(1_763_999_990, UTC),
        EndTime=datetime.fromtimestamp(1_764_000_010, UTC),
    )["TraceSummaries"]
    [summary] = [s for s in summaries if s["Id"] == trace_id(TRACE)]
    assert summary["HasFault"] is True

    assert subsegment["type"] == "subsegment"
    assert (subsegment["name"], subsegment["namespace"]) == ("orders-db", "remote")
    assert subsegment["sql"] == {
        "sanitized_query": "SELECT * FROM orders WHERE id = ?",
        "database_type": "postgresql",
    }
    assert subsegment["fault"] is True
    [exception] = subsegment["cause"]["exceptions"]
    assert (exception["type"], exception["message"]) == ("TimeoutError", "db")
    assert re.match(r"^[0-9a-f]{16}$", exception["id"])
    assert exception["stack"] == [
        {"path": "/var/task/orders.py", "line": 40, "label": "find"},
        {"path": "/var/task/app.py", "line": 12, "label": "handler"},
    ]


async def test_indexed_and_all_attributes_become_annotations_with_valid_keys():
    span_attrs = {"tenant": "acme", "http.route": "/orders/{id}", "retries": 2, "tags": ["a"]}
    batch = lambda_trace(1)
    server = batch.resource_spans[0].scope_spans[0].spans[0]
    for key, value in span_attrs.items():
        set_attr(server.attributes, key, value)
    resource = {"service.name": "checkout"}

    indexed = SegmentWriter(["http.route"], False).document(server, resource)
    assert indexed["annotations"]["http_route"] == "/orders/{id}"
    assert "tenant" in indexed["metadata"]["default"]

    everything = SegmentWriter([], True).document(server, resource)["annotations"]
    assert {"tenant", "http_route", "retries"} <= set(everything)
    assert "tags" not in everything  # lists cannot be annotations
    assert all(re.match(r"^[A-Za-z0-9_]+$", key) for key in everything)


def test_what_came_from_x_ray_returns_to_annotations_and_metadata_namespaces():
    span = lambda_trace(1).resource_spans[0].scope_spans[0].spans[0]
    for key, value in {
        "tenant": "acme",
        "aws.xray.annotations": ["tenant"],
        "aws.xray.metadata.orders": '{"rows":{"matched":0}}',
        "aws.xray.metadata.notes": "not json",
    }.items():
        set_attr(span.attributes, key, value)
    document = SegmentWriter([], False).document(span, {"service.name": "checkout"})
    assert document["annotations"]["tenant"] == "acme"
    assert document["metadata"]["orders"] == {"rows": {"matched": 0}}
    assert document["metadata"]["notes"] == "not json"
    assert "aws.xray.annotations" not in json.dumps(document)


async def test_more_than_50_spans_go_in_several_calls_and_all_arrive(moto_server, xray):
    other = bytes.fromhex("5f2b3c4d" + "fe" * 12)
    batch = lambda_trace(120, other)
    await export({"endpoint": moto_server, "sending_queue": {"enabled": False}}, batch)
    assert len(stored_documents(xray, [trace_id(other)])) == 120


def test_throttling_is_retried_and_bad_requests_are_not():
    def failing(code: str, status: int):
        class Client:
            def put_trace_segments(self, **_):
                error = {"Error": {"Code": code, "Message": "no"}}
                raise ClientError(
                    {**error, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutTraceSegments"
                )

        return Client()

    def put(client):
        return lambda: client.put_trace_segments(TraceSegmentDocuments=["{}"])

    with pytest.raises(RetryableError):
        call(put(failing("ThrottledException", 429)), "PutTraceSegments")
    with pytest.raises(RetryableError):
        call(put(failing("InternalFailure", 500)), "PutTraceSegments")
    with pytest.raises(PermanentError):
        call(put(failing("InvalidRequestException", 400)), "PutTraceSegments")


def test_segment_names_keep_only_what_x_ray_allows():
    batch = lambda_trace(1)
    span = batch.resource_spans[0].scope_spans[0].spans[0]
    document = SegmentWriter([], False).document(span, {"service.name": "checkout<v2>!" * 30})
    assert len(document["name"]) <= 200
    assert re.match(r"^[\w\s.:/%&#=+\\\-@]+$", document["name"])
