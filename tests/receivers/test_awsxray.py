"""awsxray receiver: the X-Ray SDK for Python (aws-xray-sdk) sends its segments over UDP as to
the X-Ray daemon and they arrive as spans; its sampling requests go through the signing proxy
to an endpoint that checks every SigV4 signature; malformed datagrams are dropped, counted and
logged while good ones keep flowing."""

import asyncio
import json
import logging
import socket
import traceback

import aiohttp
import pytest
from aws_xray_sdk.core import AWSXRayRecorder
from aws_xray_sdk.core.sampling.connector import ServiceConnector
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.consumer import RetryableError
from collector.core.pdata import any_value_to_python, iter_spans
from collector.core.signals import Signal
from collector.receivers.awsxray.receiver import Config, XRayReceiver, factory, parse_datagram
from collector.receivers.awsxray.segments import InvalidSegment, document_spans
from tests.support.aws import isolate
from tests.support.components import StaticHost, make_settings
from tests.support.process import free_port
from tests.support.sigv4 import SigV4Endpoint
from tests.support.sinks import ErrorConsumer, SinkConsumer

HEADER = b'{"format": "json", "version": 1}\n'
TRACE = "1-5759e988-bd862e3fe1be46a994272793"
SAMPLING_RULES = {
    "SamplingRuleRecords": [
        {
            "SamplingRule": {
                "RuleName": "checkout-orders",
                "RuleARN": "arn:aws:xray:us-east-1:123456789012:sampling-rule/checkout-orders",
                "ResourceARN": "*",
                "Priority": 1,
                "FixedRate": 0.25,
                "ReservoirSize": 3,
                "ServiceName": "checkout",
                "ServiceType": "*",
                "Host": "*",
                "HTTPMethod": "GET",
                "URLPath": "/orders/*",
                "Version": 1,
                "Attributes": {},
            },
            "CreatedAt": 1.7e9,
            "ModifiedAt": 1.7e9,
        }
    ]
}


def attributes(kvs) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in kvs}


def spans(receiver: XRayReceiver, outcome: str) -> float | None:
    return receiver.settings.telemetry.registry.get_sample_value(
        f"otelcol_receiver_{outcome}_spans_total", {"receiver": "awsxray", "transport": "udp"}
    )


async def started(config: dict, consumer=None) -> tuple[XRayReceiver, SinkConsumer]:
    sink = consumer or SinkConsumer()
    settings = make_settings("receiver", "awsxray")
    receiver = factory.create(settings, Config.model_validate(config), {Signal.TRACES: sink})
    await receiver.start(StaticHost())
    return receiver, sink


def send(endpoint: str, *datagrams: bytes) -> None:
    host, port = endpoint.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for datagram in datagrams:
            s.sendto(datagram, (host, int(port)))


def recorder(daemon: str) -> AWSXRayRecorder:
    """An X-Ray SDK recorder that samples everything and sends to `daemon` (host:port)."""
    xray = AWSXRayRecorder()
    xray.configure(
        daemon_address=daemon, sampling=False, context_missing="LOG_ERROR", service="checkout"
    )
    return xray


def instrumented_request(xray: AWSXRayRecorder) -> None:
    """What an application instrumented with the SDK records for one failing request."""
    segment = xray.begin_segment("checkout")
    segment.put_annotation("tenant", "acme")
    segment.put_annotation("cold_start", True)
    segment.put_http_meta("method", "GET")
    segment.put_http_meta("url", "https://api.example.com/orders/7")
    segment.put_http_meta("status", 503)
    database = xray.begin_subsegment("orders-db", namespace="remote")
    database.put_metadata("rows", {"matched": 0}, "orders")
    try:
        raise TimeoutError("the orders database did not answer")
    except TimeoutError as e:
        database.add_exception(e, traceback.extract_tb(e.__traceback__))
    xray.end_subsegment()
    with xray.in_subsegment("render"):
        pass
    xray.end_segment()


async def test_the_x_ray_sdk_s_segments_arrive_as_spans():
    receiver, sink = await started({"endpoint": "127.0.0.1:0", "proxy_server": None})
    try:
        await asyncio.to_thread(instrumented_request, recorder(receiver.endpoint))
        await sink.wait_for(3)
    finally:
        await receiver.shutdown()
    [(resource, scope, server), (_, _, database), (_, _, render)] = [
        (attributes(rs.resource.attributes), ss.scope.name, span)
        for batch in sink.batches
        for rs, ss, span in iter_spans(batch)
    ]
    assert resource["service.name"] == "checkout"
    assert resource["telemetry.sdk.name"] == "X-Ray for Python"
    assert resource["telemetry.sdk.language"] == "python"
    assert scope == "coldtail/awsxray"
    assert server.kind == Span.SPAN_KIND_SERVER and not server.parent_span_id
    assert server.status.code == Status.STATUS_CODE_ERROR  # a 503 is the server's fault
    server_attributes = attributes(server.attributes)
    assert server_attributes["http.request.method"] == "GET"
    assert server_attributes["url.full"] == "https://api.example.com/orders/7"
    assert server_attributes["http.response.status_code"] == 503
    assert server_attributes["tenant"] == "acme" and server_attributes["cold_start"] is True
    assert sorted(server_attributes["aws.xray.annotations"]) == ["cold_start", "tenant"]
    assert database.trace_id == server.trace_id == render.trace_id
    assert database.parent_span_id == server.span_id == render.parent_span_id
    assert database.kind == Span.SPAN_KIND_CLIENT and render.kind == Span.SPAN_KIND_INTERNAL
    assert database.status.code == Status.STATUS_CODE_ERROR
    assert database.status.message == "the orders database did not answer"
    assert json.loads(attributes(database.attributes)["aws.xray.metadata.orders"]) == {
        "rows": {"matched": 0}
    }
    [event] = database.events
    exception = attributes(event.attributes)
    assert event.name == "exception" and exception["exception.type"] == "TimeoutError"
    assert "in instrumented_request" in exception["exception.stacktrace"]
    assert server.start_time_unix_nano <= database.start_time_unix_nano
    assert database.end_time_unix_nano <= server.end_time_unix_nano


def test_a_documented_segment_with_an_aws_call_and_sql():
    document = {
        "name": "checkout",
        "id": "70de5b6f19ff9a0a",
        "trace_id": TRACE,
        "start_time": 1.478293361271e9,
        "end_time": 1.478293361449e9,
        "origin": "AWS::ECS::Container",
        "service": {"version": "1.4.2"},
        "user": "alice",
        "error": True,
        "http": {"response": {"status": 404, "content_length": 12}},
        "aws": {
            "account_id": "123456789012",
            "ecs": {"container": "api", "container_id": "abc123"},
            "xray": {"sdk": "X-Ray for Java", "sdk_version": "2.4.0"},
        },
        "subsegments": [
            {
                "name": "DynamoDB",
                "id": "53995c3f42cd8ad8",
                "start_time": 1.478293361272e9,
                "end_time": 1.478293361350e9,
                "namespace": "aws",
                "throttle": True,
                "error": True,
                "http": {"response": {"status": 429}},
                "aws": {"operation": "GetItem", "table_name": "orders", "request_id": "R1"},
                "subsegments": [
                    {
                        "name": "orders-db",
                        "id": "6b55dcc497934f1a",
                        "start_time": 1.478293361360e9,
                        "in_progress": True,
                        "namespace": "remote",
                        "sql": {"sanitized_query": "SELECT 1", "database_type": "PostgreSQL"},
                    }
                ],
            }
        ],
    }
    rs = document_spans(document)
    resource = attributes(rs.resource.attributes)
    assert resource == {
        "service.name": "checkout",
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
        "container.name": "api",
        "container.id": "abc123",
        "telemetry.sdk.name": "X-Ray for Java",
        "telemetry.sdk.version": "2.4.0",
        "telemetry.sdk.language": "java",
        "cloud.account.id": "123456789012",
        "service.version": "1.4.2",
    }
    segment, call, query = rs.scope_spans[0].spans
    assert segment.trace_id.hex() == "5759e988bd862e3fe1be46a994272793"
    assert segment.start_time_unix_nano == 1_478_293_361_271_000_000
    assert segment.end_time_unix_nano == 1_478_293_361_449_000_000
    # A server's 404 is the client's error: the status stays unset.
    assert segment.status.code == Status.STATUS_CODE_UNSET
    assert attributes(segment.attributes) == {
        "enduser.id": "alice",
        "http.response.status_code": 404,
        "http.response.body.size": 12,
    }
    assert call.kind == Span.SPAN_KIND_CLIENT and call.status.code == Status.STATUS_CODE_ERROR
    assert attributes(call.attributes) == {
        "rpc.system": "aws-api",
        "rpc.service": "DynamoDB",
        "http.response.status_code": 429,
        "rpc.method": "GetItem",
        "aws.request_id": "R1",
        "aws.dynamodb.table_names": ["orders"],
    }
    assert query.parent_span_id == call.span_id
    assert query.end_time_unix_nano == query.start_time_unix_nano
    assert attributes(query.attributes) == {
        "aws.xray.inprogress": True,
        "db.query.text": "SELECT 1",
        "db.system": "PostgreSQL",
    }


def test_a_subsegment_sent_on_its_own_keeps_its_parent_and_names_no_service():
    rs = document_spans(
        {
            "name": "s3",
            "id": "6b55dcc497934f1a",
            "trace_id": TRACE,
            "parent_id": "70de5b6f19ff9a0a",
            "type": "subsegment",
            "namespace": "aws",
            "start_time": 1.5e9,
            "end_time": 1.5e9 + 0.25,
        }
    )
    [span] = rs.scope_spans[0].spans
    assert span.parent_span_id.hex() == "70de5b6f19ff9a0a"
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert "service.name" not in attributes(rs.resource.attributes)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"trace_id": "5759e988bd862e3fe1be46a994272793"}, "trace_id must look like"),
        ({"id": "70de5b6f"}, "id must be 16 hexadecimal digits"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"start_time": "yesterday"}, "start_time must be epoch seconds"),
        ({"end_time": None}, "end_time (or in_progress)"),
        ({"type": "subsegment"}, "needs parent_id"),
        ({"subsegments": [{"name": "x"}]}, "id must be 16 hexadecimal digits"),
        ({"subsegments": {"name": "x"}}, "subsegments must be a list"),
    ],
)
def test_documents_x_ray_would_refuse_are_refused_naming_the_field(change, message):
    document = {
        "name": "checkout",
        "id": "70de5b6f19ff9a0a",
        "trace_id": TRACE,
        "start_time": 1.5e9,
        "end_time": 1.5e9 + 1,
        **change,
    }
    with pytest.raises(InvalidSegment, match=message.replace("(", r"\(").replace(")", r"\)")):
        document_spans(document)


@pytest.mark.parametrize(
    "datagram, message",
    [
        (b'{"name": "checkout"}', "must start with the header"),
        (b'{"format": "json", "version": 2}\n{}', "unsupported header"),
        (HEADER + b"{not json", "not JSON"),
    ],
)
def test_datagrams_outside_the_daemon_protocol_are_refused(datagram, message):
    with pytest.raises(InvalidSegment, match=message):
        parse_datagram(datagram)


async def test_bad_datagrams_are_dropped_counted_and_logged_while_good_ones_flow(caplog):
    receiver, sink = await started({"endpoint": "127.0.0.1:0", "proxy_server": None})
    good = {"name": "checkout", "id": "70de5b6f19ff9a0a", "trace_id": TRACE, "start_time": 1.5e9}
    try:
        with caplog.at_level(logging.WARNING):
            send(
                receiver.endpoint,
                b"garbage",
                HEADER + json.dumps({**good, "id": "short"}).encode(),
                HEADER + json.dumps({**good, "end_time": 1.5e9 + 1}).encode(),
            )
            await sink.wait_for(1)
    finally:
        await receiver.shutdown()
    assert sink.item_count == 1
    assert spans(receiver, "refused") == 2  # a datagram counts as at least one span
    assert spans(receiver, "accepted") == 1
    dropped = [r for r in caplog.records if r.getMessage() == "X-Ray segments dropped"]
    assert dropped, caplog.text


async def test_spans_the_pipeline_refuses_are_counted_as_refused():
    receiver, sink = await started(
        {"endpoint": "127.0.0.1:0", "proxy_server": None},
        ErrorConsumer(RetryableError("memory limit reached")),
    )
    document = {
        "name": "checkout",
        "id": "70de5b6f19ff9a0a",
        "trace_id": TRACE,
        "start_time": 1.5e9,
        "end_time": 1.5e9 + 1,
    }
    try:
        send(receiver.endpoint, HEADER + json.dumps(document).encode())
        async with asyncio.timeout(5):
            while not sink.batches:
                await asyncio.sleep(0.01)
    finally:
        await receiver.shutdown()
    assert spans(receiver, "refused") == 1
    assert spans(receiver, "accepted") == 0


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path, credentials=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDPROXY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "proxy-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    return monkeypatch


def sampling_rules(proxy: str) -> list:
    """The SDK's own call for centralized sampling rules, to the daemon address `proxy`."""
    connector = ServiceConnector()
    host, port = proxy.rsplit(":", 1)
    connector.setup_xray_client(host, port, None)
    return connector.fetch_sampling_rules()


async def test_the_sdk_s_sampling_requests_are_signed_and_forwarded_to_x_ray(aws_env):
    async with SigV4Endpoint(
        {"AKIDPROXY": ("proxy-secret", None)}, {"/GetSamplingRules": SAMPLING_RULES}
    ) as xray:
        receiver, _ = await started(
            {
                "endpoint": "127.0.0.1:0",
                "proxy_server": {"endpoint": "127.0.0.1:0", "aws_endpoint": xray.url},
            }
        )
        try:
            rules = await asyncio.to_thread(sampling_rules, receiver.proxy.endpoint)
        finally:
            await receiver.shutdown()
    assert xray.refused == []
    assert [(method, path) for method, path, _, _ in xray.accepted] == [
        ("POST", "/GetSamplingRules")
    ]
    assert xray.scopes == [("xray", "eu-west-1")]
    [rule] = rules
    assert (rule.name, rule.rate) == ("checkout-orders", 0.25)
    request = {"host": "api", "method": "GET", "path": "/orders/7", "service": "checkout"}
    assert rule.match(request)
    assert not rule.match({**request, "path": "/users/7"})


async def test_without_credentials_the_proxy_answers_502_and_segments_still_flow(
    monkeypatch, tmp_path
):
    isolate(monkeypatch, tmp_path, credentials=False)
    receiver, sink = await started(
        {"endpoint": "127.0.0.1:0", "proxy_server": {"endpoint": "127.0.0.1:0"}}
    )
    try:
        url = f"http://{receiver.proxy.endpoint}/GetSamplingRules"
        async with aiohttp.ClientSession() as http, http.post(url) as answer:
            status, text = answer.status, await answer.text()
        await asyncio.to_thread(instrumented_request, recorder(receiver.endpoint))
        await sink.wait_for(3)
    finally:
        await receiver.shutdown()
    assert status == 502 and "no AWS credentials" in text


async def test_a_taken_port_fails_the_start_naming_it():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on udp 127.0.0.1:{port}"):
            await started({"endpoint": f"127.0.0.1:{port}", "proxy_server": None})


async def test_the_proxy_s_taken_port_fails_the_start_and_frees_the_udp_port():
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            await started(
                {"endpoint": f"127.0.0.1:{port}", "proxy_server": {"endpoint": f"127.0.0.1:{port}"}}
            )
    # The UDP socket was closed with the failed start: the same port binds again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", port))
