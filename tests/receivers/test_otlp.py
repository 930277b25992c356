"""The otlp receiver against real peers: the OpenTelemetry SDK's exporters, grpcio and aiohttp
clients, on both transports, with good, bad and hostile requests."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import resource
import socket
import struct
import zlib
from pathlib import Path

import aiohttp
import grpc
import pytest
import yaml
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetrics,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetrics,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from collector.core import client as client_info
from collector.core import otlpjson
from collector.core.consumer import PermanentError, RetryableError
from collector.core.grpc_server import ServerLimits
from collector.core.memory import MemoryPressure
from collector.core.pdata import Encoded, Traces, count_items, get_attr, iter_spans
from collector.core.signals import Signal
from collector.receivers.otlp import Config, KeepaliveConfig, OtlpReceiver, factory
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

TESTDATA = Path(__file__).parent / "testdata"
LOCAL = {"endpoint": "127.0.0.1:0"}
BOTH = {"grpc": LOCAL, "http": LOCAL}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
RESOURCE = Resource({"service.name": "checkout", "cloud.provider": "aws"})


@pytest.fixture
async def serve():
    """Start a receiver on free local ports; every one started is shut down after the test."""
    started: list[OtlpReceiver] = []

    async def _serve(
        next: dict, protocols: dict | None = None, limits: dict | None = None
    ) -> OtlpReceiver:
        config = Config.model_validate({"protocols": protocols or BOTH, "limits": limits or {}})
        receiver = OtlpReceiver(make_settings("receiver", "otlp"), config, next)
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


def trace_stub(receiver: OtlpReceiver) -> tuple[grpc.aio.Channel, TraceServiceStub]:
    channel = grpc.aio.insecure_channel(receiver.grpc_endpoint)
    return channel, TraceServiceStub(channel)


def rpc_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    details = dict(error.trailing_metadata())["grpc-status-details-bin"]
    return status_pb2.Status.FromString(details)


async def post(
    session, receiver, body: bytes, content_type: str = PROTOBUF, path="/v1/traces", **headers
) -> tuple[int, dict, bytes]:
    url = f"http://{receiver.http_endpoint}{path}"
    headers = {"Content-Type": content_type, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


def decode_status(body: bytes, content_type: str) -> status_pb2.Status:
    if content_type == JSON:
        return otlpjson.parse(body, status_pb2.Status)
    return status_pb2.Status.FromString(body)


async def assert_still_serving(receiver: OtlpReceiver, sink: SinkConsumer, http) -> None:
    before = sink.item_count
    status, _, _ = await post(http, receiver, make_traces(1).SerializeToString())
    assert status == 200
    channel, stub = trace_stub(receiver)
    async with channel:
        await stub.Export(make_traces(1))
    assert sink.item_count == before + 2


# --- real SDK exporters ---------------------------------------------------------------------


def sdk_spans() -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.tests", "1.2.3")
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/cart")
        parent.set_attribute("retries", 3)
        parent.set_attribute("ratio", 0.5)
        parent.set_attribute("tags", ["a", "b"])
        with tracer.start_as_current_span(
            "SELECT cart", kind=SpanKind.CLIENT, links=[Link(parent.get_span_context(), {"k": "v"})]
        ) as child:
            child.add_event("cache miss", {"key": "cart:42"})
            child.set_status(StatusCode.ERROR, "timeout")
    return memory.get_finished_spans()


TRACE_EXPORTERS = {
    "grpc": lambda r: GrpcSpans(endpoint=r.grpc_endpoint, insecure=True),
    "grpc-gzip": lambda r: GrpcSpans(
        endpoint=r.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip
    ),
    "http": lambda r: HttpSpans(endpoint=f"http://{r.http_endpoint}/v1/traces"),
    "http-gzip": lambda r: HttpSpans(
        endpoint=f"http://{r.http_endpoint}/v1/traces", compression=HttpCompression.Gzip
    ),
    "http-deflate": lambda r: HttpSpans(
        endpoint=f"http://{r.http_endpoint}/v1/traces", compression=HttpCompression.Deflate
    ),
}


@pytest.mark.parametrize("exporter", TRACE_EXPORTERS)
async def test_sdk_spans_arrive_intact(serve, exporter):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    spans = sdk_spans()
    client = TRACE_EXPORTERS[exporter](receiver)
    try:
        result = await asyncio.to_thread(client.export, spans)
    finally:
        client.shutdown()
    assert result.name == "SUCCESS"
    [batch] = sink.batches
    received = {span.name: (rs, ss, span) for rs, ss, span in iter_spans(batch)}
    sdk_parent = next(s for s in spans if s.name == "GET /cart")
    rs, ss, parent = received["GET /cart"]
    _, _, child = received["SELECT cart"]

    assert get_attr(rs.resource.attributes, "service.name") == "checkout"
    assert get_attr(rs.resource.attributes, "cloud.provider") == "aws"
    assert (ss.scope.name, ss.scope.version) == ("shop.tests", "1.2.3")
    assert parent.trace_id == sdk_parent.context.trace_id.to_bytes(16, "big")
    assert parent.span_id == sdk_parent.context.span_id.to_bytes(8, "big")
    assert child.parent_span_id == parent.span_id
    assert parent.kind == Span.SPAN_KIND_SERVER
    assert get_attr(parent.attributes, "http.route") == "/cart"
    assert get_attr(parent.attributes, "retries") == 3
    assert get_attr(parent.attributes, "ratio") == 0.5
    assert get_attr(parent.attributes, "tags") == ["a", "b"]
    assert parent.start_time_unix_nano == sdk_parent.start_time
    assert parent.end_time_unix_nano == sdk_parent.end_time
    assert [(e.name, get_attr(e.attributes, "key")) for e in child.events] == [
        ("cache miss", "cart:42")
    ]
    [link] = child.links
    assert (link.trace_id, link.span_id) == (parent.trace_id, parent.span_id)
    assert get_attr(link.attributes, "k") == "v"
    assert (child.status.code, child.status.message) == (Status.STATUS_CODE_ERROR, "timeout")


async def test_a_pipeline_that_takes_bytes_gets_each_protobuf_request_as_sent(serve, http):
    sink = SinkConsumer(accepts_encoded=True)
    receiver = await serve({Signal.TRACES: sink})
    sent = [make_traces(2), make_traces(3), make_traces(1)]
    channel, stub = trace_stub(receiver)
    async with channel:
        await stub.Export(sent[0])
    assert (
        await post(
            http, receiver, gzip.compress(sent[1].SerializeToString()), Content_Encoding="gzip"
        )
    )[0] == 200
    assert (await post(http, receiver, otlpjson.dumps(sent[2]).encode(), JSON))[0] == 200

    grpc_batch, http_batch, json_batch = sink.batches
    assert isinstance(grpc_batch, Encoded) and isinstance(http_batch, Encoded)
    assert grpc_batch.data == sent[0].SerializeToString() and count_items(grpc_batch) == 2
    assert http_batch.data == sent[1].SerializeToString() and count_items(http_batch) == 3
    assert json_batch == sent[2]  # decoded from JSON: there are no protobuf bytes to pass


def sdk_metrics():
    reader = InMemoryMetricReader()
    meter = MeterProvider(resource=RESOURCE, metric_readers=[reader]).get_meter("shop.tests")
    meter.create_counter("orders", unit="1").add(5, {"region": "eu"})
    meter.create_histogram("latency", unit="ms").record(12.5, {"route": "/cart"})
    return reader.get_metrics_data()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_sdk_metrics_arrive_intact(serve, transport):
    sink = SinkConsumer()
    receiver = await serve({Signal.METRICS: sink})
    if transport == "grpc":
        client = GrpcMetrics(
            endpoint=receiver.grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip
        )
    else:
        client = HttpMetrics(
            endpoint=f"http://{receiver.http_endpoint}/v1/metrics",
            compression=HttpCompression.Gzip,
        )
    try:
        result = await asyncio.to_thread(client.export, sdk_metrics())
    finally:
        client.shutdown()
    assert result.name == "SUCCESS"
    [batch] = sink.batches
    [rm] = batch.resource_metrics
    assert get_attr(rm.resource.attributes, "service.name") == "checkout"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    [point] = metrics["orders"].sum.data_points
    assert (point.as_int, get_attr(point.attributes, "region")) == (5, "eu")
    assert metrics["orders"].sum.is_monotonic
    [histogram] = metrics["latency"].histogram.data_points
    assert (histogram.count, histogram.sum) == (1, 12.5)
    assert get_attr(histogram.attributes, "route") == "/cart"


def sdk_logs() -> list:
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("shop.tests")
    logger.emit(body="order placed", severity_text="INFO", attributes={"order.id": 42})
    logger.emit(body={"structured": True}, severity_text="WARN")
    return memory.get_finished_logs()


@pytest.mark.parametrize("transport", ["grpc", "http"])
async def test_sdk_logs_arrive_intact(serve, transport):
    sink = SinkConsumer()
    receiver = await serve({Signal.LOGS: sink})
    if transport == "grpc":
        client = GrpcLogs(endpoint=receiver.grpc_endpoint, insecure=True)
    else:
        client = HttpLogs(endpoint=f"http://{receiver.http_endpoint}/v1/logs")
    try:
        result = await asyncio.to_thread(client.export, sdk_logs())
    finally:
        client.shutdown()
    assert result.name == "SUCCESS"
    [batch] = sink.batches
    [rl] = batch.resource_logs
    assert get_attr(rl.resource.attributes, "cloud.provider") == "aws"
    first, second = rl.scope_logs[0].log_records
    assert (first.body.string_value, first.severity_text) == ("order placed", "INFO")
    assert get_attr(first.attributes, "order.id") == 42
    assert get_attr(second.body.kvlist_value.values, "structured") is True


async def test_signal_without_consumer_is_unimplemented_and_404(serve, http):
    receiver = await serve({Signal.TRACES: SinkConsumer()})
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await MetricsServiceStub(channel).Export(make_metrics(1))
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    status, _, _ = await post(http, receiver, b"", path="/v1/metrics")
    assert status == 404


# --- HTTP encodings -------------------------------------------------------------------------


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("content_encoding", ["", "gzip", "deflate"])
async def test_json_roundtrip(serve, http, signal, content_encoding):
    sink = SinkConsumer()
    receiver = await serve({signal: sink}, {"http": LOCAL})
    batch = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}[
        signal
    ](3)
    body = otlpjson.dumps(batch).encode()
    body = {"": body, "gzip": gzip.compress(body), "deflate": zlib.compress(body)}[content_encoding]
    status, headers, response = await post(
        http,
        receiver,
        body,
        "application/json; charset=utf-8",
        path=f"/v1/{signal.value}",
        content_encoding=content_encoding,
    )
    assert status == 200
    assert headers["Content-Type"] == JSON
    assert json.loads(response) == {}
    assert sink.batches == [batch]


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
async def test_a_large_request_goes_down_the_pipeline_in_parts_of_whole_resources(
    serve, http, content_type
):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink}, {"http": LOCAL})
    batch = Traces()
    for i in range(150):  # resources of about 8.5 KiB
        batch.MergeFrom(make_traces(100, resource={"service.name": f"s{i}"}))
    assert batch.ByteSize() > 1 << 20
    body = batch.SerializeToString() if content_type == PROTOBUF else otlpjson.dumps(batch).encode()
    status, _, _ = await post(http, receiver, body, content_type)
    assert status == 200
    assert len(sink.batches) >= batch.ByteSize() // (256 * 1024)
    assert all(part.ByteSize() < 300 * 1024 for part in sink.batches)
    merged = Traces()
    for part in sink.batches:
        merged.MergeFrom(part)
    assert merged == batch  # every resource whole, in order


async def test_json_hex_ids_decode_to_bytes(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink}, {"http": LOCAL})
    trace_id, span_id = "5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174"
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {"spans": [{"traceId": trace_id, "spanId": span_id, "name": "x", "kind": 2}]}
                ]
            }
        ]
    }
    status, _, _ = await post(http, receiver, json.dumps(body).encode(), JSON)
    assert status == 200
    [(_, _, span)] = list(iter_spans(sink.batches[0]))
    assert (span.trace_id.hex(), span.span_id.hex()) == (trace_id.lower(), span_id.lower())
    assert span.kind == Span.SPAN_KIND_SERVER


async def test_protobuf_response_is_protobuf(serve, http):
    receiver = await serve({Signal.TRACES: SinkConsumer()}, {"http": LOCAL})
    status, headers, response = await post(
        http, receiver, gzip.compress(make_traces(2).SerializeToString()), content_encoding="gzip"
    )
    assert (status, headers["Content-Type"], response) == (200, PROTOBUF, b"")


async def test_empty_requests_succeed_without_reaching_the_pipeline(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    assert (await post(http, receiver, b""))[0] == 200
    assert (await post(http, receiver, b"{}", JSON))[0] == 200
    channel, stub = trace_stub(receiver)
    async with channel:
        await stub.Export(Traces())
    assert sink.batches == []


# --- bad requests ---------------------------------------------------------------------------

TRUNCATED = make_traces(2).SerializeToString()[:-7]


def with_id(field: str, size: int) -> bytes:
    """A request of two spans, the second with a `field` of `size` bytes."""
    batch = make_traces(2)
    setattr(batch.resource_spans[0].scope_spans[0].spans[1], field, b"\x01" * size)
    return batch.SerializeToString()


BAD_BODIES = {
    "garbage protobuf": (PROTOBUF, {}, b"\xff\xfe not protobuf \x00\x01"),
    "truncated protobuf": (PROTOBUF, {}, TRUNCATED),
    "invalid json": (JSON, {}, b'{"resourceSpans": [ '),
    "json not an object": (JSON, {}, b"[1, 2]"),
    "json malformed hex id": (
        JSON,
        {},
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
    ),
    "json wrong field type": (JSON, {}, b'{"resourceSpans": 7}'),
    "json nested too deep": (JSON, {}, b"[" * 100_000 + b"]" * 100_000),
    "gzip garbage": (PROTOBUF, {"content_encoding": "gzip"}, b"not gzip at all"),
    "gzip truncated": (
        PROTOBUF,
        {"content_encoding": "gzip"},
        gzip.compress(make_traces(1).SerializeToString())[:-10],
    ),
    "unknown content encoding": (PROTOBUF, {"content_encoding": "br"}, b""),
    "json lone surrogate in a key": (
        JSON,
        {},
        b'{"resourceSpans":[{"resource":{"attributes":[{"key":"\\ud800",'
        b'"value":{"stringValue":"x"}}]}}]}',
    ),
    "json short trace id": (
        JSON,
        {},
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abcd",'
        b'"spanId":"eee19b7ec3c1b174"}]}]}]}',
    ),
    **{
        f"protobuf {field} of {size} bytes": (PROTOBUF, {}, with_id(field, size))
        for field, size in [
            ("trace_id", 0),
            ("trace_id", 5),
            ("trace_id", 33),
            ("span_id", 0),
            ("span_id", 9),
            ("parent_span_id", 5),
        ]
    },
}


@pytest.mark.parametrize("case", BAD_BODIES)
async def test_undecodable_http_body_is_400_with_status(serve, http, case):
    content_type, headers, body = BAD_BODIES[case]
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    status, response_headers, response = await post(http, receiver, body, content_type, **headers)
    assert status == 400
    assert response_headers["Content-Type"] == content_type
    rpc = decode_status(response, content_type)
    assert rpc.code == code_pb2.INVALID_ARGUMENT
    assert rpc.message
    assert sink.batches == []
    await assert_still_serving(receiver, sink, http)


async def test_a_log_record_with_a_wrong_length_span_id_is_400(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.LOGS: sink})
    logs = make_logs(2)
    logs.resource_logs[0].scope_logs[0].log_records[1].span_id = b"12345"
    status, _, response = await post(http, receiver, logs.SerializeToString(), path="/v1/logs")
    assert status == 400
    assert "log record span_id: 5 bytes" in decode_status(response, PROTOBUF).message
    assert sink.batches == []


@pytest.mark.parametrize(
    ("limits", "fragment"),
    [
        ({"max_resources": 2}, "3 resources, above limits::max_resources (2)"),
        ({"max_items": 5}, "6 items, above limits::max_items (5)"),
        ({"max_attributes": 2}, "an item with 3 attributes, above limits::max_attributes (2)"),
    ],
)
async def test_a_request_over_a_limit_is_refused_whole_naming_it(serve, http, limits, fragment):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink}, limits=limits)
    # 3 resources of 2 spans; make_traces gives each span a route besides these attributes.
    batch = make_traces(2, resource={"service.name": "a"}, attributes={"a": 1, "b": 2})
    for _ in range(2):
        batch.MergeFrom(make_traces(2, resource={"service.name": "a"}, attributes={"a": 1, "b": 2}))
    status, _, response = await post(http, receiver, batch.SerializeToString())
    assert status == 400
    assert fragment in decode_status(response, PROTOBUF).message
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await export(batch.SerializeToString())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")
    assert sink.batches == []
    # Within the limits, the same shape passes.
    within = make_traces(2, resource={"service.name": "a"}, attributes={"a": 1})
    status, _, _ = await post(http, receiver, within.SerializeToString())
    assert status == 200


async def test_wrong_content_type_is_415(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    status, _, body = await post(http, receiver, b"{}", "text/plain")
    assert status == 415
    assert b"application/x-protobuf" in body
    await assert_still_serving(receiver, sink, http)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
async def test_wrong_method_is_405_with_allow(serve, http, method):
    receiver = await serve({Signal.TRACES: SinkConsumer()}, {"http": LOCAL})
    async with http.request(method, f"http://{receiver.http_endpoint}/v1/traces") as response:
        assert response.status == 405
        assert response.headers["Allow"] == "POST"


async def test_unknown_path_is_404(serve, http):
    receiver = await serve({Signal.TRACES: SinkConsumer()}, {"http": LOCAL})
    assert (await post(http, receiver, b"", path="/v1/trace"))[0] == 404


async def test_custom_url_path(serve, http):
    sink = SinkConsumer()
    protocols = {"http": {**LOCAL, "traces_url_path": "ingest/spans"}}
    receiver = await serve({Signal.TRACES: sink}, protocols)
    assert (await post(http, receiver, make_traces(1).SerializeToString()))[0] == 404
    body = make_traces(1).SerializeToString()
    assert (await post(http, receiver, body, path="/ingest/spans"))[0] == 200
    assert sink.item_count == 1


async def test_oversized_body_is_413(serve, http):
    sink = SinkConsumer()
    receiver = await serve(
        {Signal.TRACES: sink}, {"http": {**LOCAL, "max_request_body_size": 1000}}
    )
    big = make_traces(50).SerializeToString()
    status, _, response = await post(http, receiver, big)
    assert status == 413
    assert decode_status(response, PROTOBUF).code == code_pb2.RESOURCE_EXHAUSTED

    async def chunked():  # no Content-Length: the limit applies while reading
        yield big[:500]
        yield big[500:]

    status, _, _ = await post(http, receiver, chunked())
    assert status == 413
    small = make_traces(1).SerializeToString()
    assert len(small) < 1000
    assert (await post(http, receiver, small))[0] == 200


def gzip_of_zeros(size: int) -> bytes:
    """A valid gzip stream inflating to `size` zero bytes, built without compressing them all:
    after a full flush, every further MiB of zeros compresses to the same bytes."""
    mib = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    head = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(mib) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()[:-8]  # drop the trailer: it covers only what was fed here
    crc = 0
    for _ in range(size >> 20):
        crc = zlib.crc32(mib, crc)
    return head + block * ((size >> 20) - 2) + end + struct.pack("<II", crc, size & 0xFFFFFFFF)


async def test_gzip_bomb_is_413_without_inflating_it(serve, http):
    bomb = gzip_of_zeros(1 << 30)
    assert len(bomb) < 2 << 20
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    status, _, response = await post(http, receiver, bomb, content_encoding="gzip")
    peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert status == 413
    assert decode_status(response, PROTOBUF).code == code_pb2.RESOURCE_EXHAUSTED
    assert (peak_after - peak_before) * 1024 < 200 << 20
    await assert_still_serving(receiver, sink, http)


async def test_multi_member_gzip_body(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink}, {"http": LOCAL})
    # Concatenated protobuf messages merge, so two gzip members of one span each hold 2 spans.
    body = gzip.compress(make_traces(1).SerializeToString()) + gzip.compress(
        make_traces(1).SerializeToString()
    )
    assert (await post(http, receiver, body, content_encoding="gzip"))[0] == 200
    assert sink.item_count == 2


async def test_grpc_undecodable_is_invalid_argument(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        for garbage in (b"\xff\xfe\xfd", TRUNCATED, with_id("trace_id", 5)):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await export(garbage)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_still_serving(receiver, sink, http)


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
async def test_grpc_oversized_message_is_resource_exhausted(serve, http, compression):
    sink = SinkConsumer()
    receiver = await serve(
        {Signal.TRACES: sink}, {"grpc": {**LOCAL, "max_recv_msg_size_mib": 1}, "http": LOCAL}
    )
    # Highly compressible: gzip puts it on the wire far below the limit, so this also shows
    # the limit holds after decompression.
    big = make_traces(1, attributes={"payload": "x" * (2 << 20)})
    channel, stub = trace_stub(receiver)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Export(big, compression=compression)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert sink.batches == []
    await assert_still_serving(receiver, sink, http)


# --- pipeline errors ------------------------------------------------------------------------


async def test_memory_pressure_refuses_before_parsing(serve, http):
    sink = SinkConsumer()
    receiver = await serve({Signal.TRACES: sink})
    pressure = receiver.settings.shared.get(MemoryPressure)
    small, large = make_traces(1).SerializeToString(), make_traces(2000).SerializeToString()
    pressure.headroom = len(large)  # a quarter of what parsing the large one would take
    assert (await post(http, receiver, small))[0] == 200
    status, headers, body = await post(http, receiver, large)
    assert status == 503 and headers["Retry-After"] == "1"
    assert "left below the soft limit" in decode_status(body, PROTOBUF).message
    pressure.refusing = True
    channel, stub = trace_stub(receiver)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Export(make_traces(1))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert sink.item_count == 1


@pytest.mark.parametrize(("retry_after", "delay_s", "header"), [(2.5, 2.5, "3"), (None, 1.0, "1")])
async def test_retryable_error_is_unavailable_with_retry_info(
    serve, http, retry_after, delay_s, header
):
    receiver = await serve(
        {Signal.TRACES: ErrorConsumer(RetryableError("queue full", retry_after))}
    )
    channel, stub = trace_stub(receiver)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Export(make_traces(2))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details() == "queue full"
    rpc = rpc_status(raised.value)
    assert rpc.code == code_pb2.UNAVAILABLE
    retry_info = error_details_pb2.RetryInfo()
    assert rpc.details[0].Unpack(retry_info)
    assert retry_info.retry_delay.ToNanoseconds() == delay_s * 1e9

    for content_type in (PROTOBUF, JSON):
        codec = {PROTOBUF: Traces.SerializeToString, JSON: otlpjson.dumps}[content_type]
        body = codec(make_traces(2))
        status, headers, response = await post(http, receiver, body, content_type)
        assert (status, headers["Retry-After"]) == (503, header)
        rpc = decode_status(response, content_type)
        assert (rpc.code, rpc.message) == (code_pb2.UNAVAILABLE, "queue full")
        assert rpc.details[0].Unpack(retry_info)


@pytest.mark.parametrize("error", [PermanentError("schema violation"), RuntimeError("bug")])
async def test_permanent_or_unexpected_error_is_internal(serve, http, error, caplog):
    consumer = ErrorConsumer(error)
    receiver = await serve({Signal.TRACES: consumer})
    channel, stub = trace_stub(receiver)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Export(make_traces(1))
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert raised.value.details() == str(error)
        status, _, response = await post(http, receiver, make_traces(1).SerializeToString())
        assert status == 500
        assert decode_status(response, PROTOBUF) == status_pb2.Status(
            code=code_pb2.INTERNAL, message=str(error)
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Export(make_traces(1))
    assert len(consumer.batches) == 3
    unexpected = isinstance(error, RuntimeError)
    assert any(r.exc_info for r in caplog.records) == unexpected


async def test_partial_rejection_is_partial_success(serve, http):
    receiver = await serve(
        {
            Signal.TRACES: ErrorConsumer(PermanentError("2 spans too old", rejected=2)),
            Signal.METRICS: ErrorConsumer(PermanentError("1 point bad", rejected=1)),
            Signal.LOGS: ErrorConsumer(PermanentError("1 record bad", rejected=1)),
        }
    )
    channel, stub = trace_stub(receiver)
    async with channel:
        response = await stub.Export(make_traces(5))
        metrics = await MetricsServiceStub(channel).Export(make_metrics(3))
        logs = await LogsServiceStub(channel).Export(make_logs(3))
    assert response.partial_success.rejected_spans == 2
    assert response.partial_success.error_message == "2 spans too old"
    assert metrics.partial_success.rejected_data_points == 1
    assert logs.partial_success.rejected_log_records == 1

    status, _, body = await post(http, receiver, otlpjson.dumps(make_traces(5)).encode(), JSON)
    assert status == 200
    assert json.loads(body) == {
        "partialSuccess": {"rejectedSpans": "2", "errorMessage": "2 spans too old"}
    }


async def test_own_metrics_count_accepted_and_refused(serve, http):
    sink = SinkConsumer()
    receiver = await serve(
        {Signal.TRACES: sink, Signal.LOGS: ErrorConsumer(RetryableError("full"))}
    )
    channel, stub = trace_stub(receiver)
    async with channel:
        await stub.Export(make_traces(3))
        with pytest.raises(grpc.aio.AioRpcError):
            await LogsServiceStub(channel).Export(make_logs(4))
    await post(http, receiver, make_traces(2).SerializeToString())
    await post(http, receiver, make_logs(5).SerializeToString(), path="/v1/logs")

    exposition = receiver.settings.telemetry.exposition().decode()
    for line in (
        'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"} 3.0',
        'otelcol_receiver_accepted_spans_total{receiver="otlp",transport="http"} 2.0',
        'otelcol_receiver_refused_log_records_total{receiver="otlp",transport="grpc"} 4.0',
        'otelcol_receiver_refused_log_records_total{receiver="otlp",transport="http"} 5.0',
        'otelcol_receiver_refused_spans_total{receiver="otlp",transport="grpc"} 0.0',
    ):
        assert line in exposition


# --- CORS -----------------------------------------------------------------------------------


async def test_cors(serve, http):
    cors = {
        "allowed_origins": ["https://*.example.com"],
        "allowed_headers": ["X-Tenant"],
        "max_age": 600,
    }
    receiver = await serve({Signal.TRACES: SinkConsumer()}, {"http": {**LOCAL, "cors": cors}})
    url = f"http://{receiver.http_endpoint}/v1/traces"

    async def preflight(origin: str, headers: str = "content-type") -> dict:
        request_headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        }
        async with http.options(url, headers=request_headers) as response:
            assert response.status == 204
            return dict(response.headers)

    allowed = await preflight("https://app.example.com", "Content-Type, X-Tenant")
    assert allowed["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert allowed["Access-Control-Allow-Methods"] == "POST"
    assert allowed["Access-Control-Allow-Headers"] == "Content-Type, X-Tenant"
    assert allowed["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Origin" not in await preflight("https://evil.com")
    assert "Access-Control-Allow-Methods" not in await preflight(
        "https://app.example.com", "X-Other"
    )

    status, headers, _ = await post(
        http, receiver, make_traces(1).SerializeToString(), origin="https://app.example.com"
    )
    assert (status, headers["Access-Control-Allow-Origin"]) == (200, "https://app.example.com")
    status, headers, _ = await post(http, receiver, b"\xff", origin="https://evil.com")
    assert status == 400
    assert "Access-Control-Allow-Origin" not in headers


# --- lifecycle ------------------------------------------------------------------------------


async def test_endpoints_only_for_configured_protocols(serve):
    receiver = await serve({Signal.TRACES: SinkConsumer()}, {"grpc": LOCAL})
    assert receiver.grpc_endpoint.startswith("127.0.0.1:")
    assert int(receiver.grpc_endpoint.rpartition(":")[2]) > 0
    assert receiver.http_endpoint is None


async def test_shutdown_is_idempotent_and_safe_without_start():
    config = Config.model_validate({"protocols": BOTH})
    idle = OtlpReceiver(make_settings("receiver", "otlp"), config, {Signal.TRACES: SinkConsumer()})
    await idle.shutdown()
    receiver = OtlpReceiver(
        make_settings("receiver", "otlp"), config, {Signal.TRACES: SinkConsumer()}
    )
    await receiver.start(StaticHost())
    endpoint = receiver.http_endpoint
    await receiver.shutdown()
    await receiver.shutdown()
    with socket.socket() as probe:
        host, _, port = endpoint.rpartition(":")
        assert probe.connect_ex((host, int(port))) != 0


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_port_in_use_fails_start(serve, protocol):
    first = await serve({Signal.TRACES: SinkConsumer()}, {protocol: LOCAL})
    taken = first.grpc_endpoint or first.http_endpoint
    with pytest.raises(OSError):
        await serve({Signal.TRACES: SinkConsumer()}, {"grpc": LOCAL, protocol: {"endpoint": taken}})


async def test_factory():
    assert factory.type == "otlp"
    assert factory.create is OtlpReceiver
    assert all(factory.supports(signal) for signal in Signal)


# --- config ---------------------------------------------------------------------------------

CONFIGS = yaml.safe_load((TESTDATA / "otlp_config.yaml").read_text())


def test_config_defaults_and_null_sections():
    config = Config.model_validate(CONFIGS["valid"]["both_null"])
    grpc_config, http_config = config.protocols.grpc, config.protocols.http
    assert (grpc_config.endpoint, grpc_config.max_recv_msg_size_mib) == ("127.0.0.1:4317", 4)
    assert grpc_config.max_concurrent_streams == 0
    assert (http_config.endpoint, http_config.max_request_body_size) == ("127.0.0.1:4318", 20 << 20)
    assert [http_config.url_path(s) for s in Signal] == ["/v1/traces", "/v1/metrics", "/v1/logs"]
    assert http_config.cors.allowed_origins == []
    only_grpc = Config.model_validate(CONFIGS["valid"]["grpc_only_null"])
    assert only_grpc.protocols.http is None
    full = Config.model_validate(CONFIGS["valid"]["full"])
    assert full.protocols.http.metrics_url_path == "/otlp/metrics"
    zero = Config.model_validate({"protocols": {"http": {"max_request_body_size": 0}}})
    assert zero.protocols.http.max_request_body_size == 20 << 20


def test_every_config_field_is_documented():
    def fields(model):
        for name, info in model.model_fields.items():
            yield model, name, info
            annotation = info.annotation
            for sub in getattr(annotation, "__args__", (annotation,)):
                if isinstance(sub, type) and hasattr(sub, "model_fields"):
                    yield from fields(sub)

    for model, name, info in fields(Config):
        assert info.description, f"{model.__name__}.{name} has no docstring"


async def test_grpc_keepalive_settings_reach_the_server(serve, http):
    """max_connection_age closes a client's connection once it is that old: its channel goes
    back to IDLE. Without keepalive settings the connection stays READY."""
    sink = SinkConsumer()
    aged = await serve(
        {Signal.TRACES: sink},
        {"grpc": {**LOCAL, "keepalive": {"server_parameters": {"max_connection_age": "300ms"}}}},
    )
    plain = await serve({Signal.TRACES: sink}, {"grpc": LOCAL})
    states = []
    for receiver in (aged, plain):
        async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
            stub = TraceServiceStub(channel)
            await stub.Export(make_traces(1))
            assert channel.get_state() == grpc.ChannelConnectivity.READY
            await asyncio.sleep(1.5)
            states.append(channel.get_state())
    assert states == [grpc.ChannelConnectivity.IDLE, grpc.ChannelConnectivity.READY]


def test_keepalive_maps_to_the_servers_limits():
    config = Config.model_validate(
        {
            "protocols": {
                "grpc": {
                    "keepalive": {
                        "server_parameters": {"time": "30s", "timeout": "5s"},
                        "enforcement_policy": {"min_time": "10s", "permit_without_stream": True},
                    }
                }
            }
        }
    )
    keepalive = config.protocols.grpc.keepalive
    assert keepalive is not None
    base = ServerLimits(max_recv_msg_size=1 << 20)
    assert keepalive.limits(base) == dataclasses.replace(
        base,
        keepalive_time=30.0,
        keepalive_timeout=5.0,
        min_ping_interval=10.0,
        permit_pings_without_calls=True,
    )
    # Unset durations keep gRPC's defaults.
    assert KeepaliveConfig().limits(base) == base


class ClientRecorder(SinkConsumer):
    """Records, with each batch, the client metadata current when it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.clients: list = []

    async def consume(self, batch) -> None:
        self.clients.append(client_info.current())
        await super().consume(batch)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
async def test_include_metadata_hands_the_request_headers_down_the_pipeline(serve, protocol):
    sink = ClientRecorder()
    protocols = {
        "grpc": {"endpoint": "127.0.0.1:0", "include_metadata": protocol == "grpc"},
        "http": {"endpoint": "127.0.0.1:0", "include_metadata": protocol == "http"},
    }
    receiver = await serve({Signal.TRACES: sink}, protocols)
    for name in ("grpc", "http"):  # include_metadata is per protocol
        if name == "grpc":  # gRPC metadata keys are lower case
            headers = {"x-tenant": "acme", "x-team": "checkout"}
            exporter = GrpcSpans(endpoint=receiver.grpc_endpoint, insecure=True, headers=headers)
        else:
            url = f"http://{receiver.http_endpoint}/v1/traces"
            exporter = HttpSpans(endpoint=url, headers={"X-Tenant": "acme", "X-Team": "checkout"})
        try:
            assert (await asyncio.to_thread(exporter.export, sdk_spans())).name == "SUCCESS"
        finally:
            exporter.shutdown()
    with_metadata, without = sink.clients if protocol == "grpc" else list(reversed(sink.clients))
    assert with_metadata.get("x-tenant") == ("acme",)
    assert with_metadata.get("X-Team") == ("checkout",)
    assert with_metadata.addr  # the peer's address
    assert without.get("x-tenant") == () and client_info.current().get("x-tenant") == ()
