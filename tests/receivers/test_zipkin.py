"""The zipkin receiver with real Zipkin clients: the OpenTelemetry SDK's Zipkin JSON exporter
(v2 and v1 JSON) and py_zipkin (v1 JSON and v2 protobuf, with its own SimpleHTTPTransport);
v1 Thrift bodies written with the Thrift library's TBinaryProtocol from zipkinCore.thrift; raw
bodies for what a tracer may send; and a collector process that keeps serving bad bodies."""

import asyncio
import base64
import gzip
import ipaddress
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from opentelemetry.exporter.zipkin.json import Protocol, ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from py_zipkin import Encoding
from py_zipkin import Kind as ZipkinKind
from py_zipkin.encoding.protobuf import zipkin_pb2
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.Thrift import TType
from thrift.transport.TTransport import TMemoryBuffer

from collector.core.component import Kind
from collector.core.consumer import RetryableError
from collector.core.pdata import Traces, get_attr, iter_spans
from collector.core.signals import Signal
from collector.receivers import zipkin
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port
from tests.support.sinks import ErrorConsumer, SinkConsumer

V1 = "/api/v1/spans"
V2 = "/api/v2/spans"
JSON = "application/json"
THRIFT = "application/x-thrift"
PROTOBUF = "application/x-protobuf"


@pytest.fixture
async def serve():
    started = []

    async def _serve(sink, **config) -> zipkin.ZipkinReceiver:
        cfg = zipkin.Config.model_validate({"endpoint": "127.0.0.1:0", **config})
        receiver = zipkin.ZipkinReceiver(
            make_settings(Kind.RECEIVER, "zipkin"), cfg, {Signal.TRACES: sink}
        )
        await receiver.start(StaticHost())
        started.append(receiver)
        return receiver

    yield _serve
    for receiver in started:
        await receiver.shutdown()


async def post(
    endpoint: str, body: bytes, path: str = V2, content_type: str = JSON, **headers
) -> tuple[int, str]:
    url = f"http://{endpoint}{path}"
    headers = {"Content-Type": content_type, **headers}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


def merged(sink: SinkConsumer) -> Traces:
    batch = Traces()
    for part in sink.batches:
        batch.MergeFrom(part)
    return batch


def spans_by_name(sink: SinkConsumer) -> dict:
    return {span.name: (rs, ss, span) for rs, ss, span in iter_spans(merged(sink))}


def attributes(item) -> dict:
    return {kv.key: get_attr(item.attributes, kv.key) for kv in item.attributes}


# --- real clients -----------------------------------------------------------------------------


def sdk_trace(endpoint: str, version: Protocol) -> None:
    """A server span with an event and a failed client child, through the SDK's exporter."""
    # The v1 encoder needs a tag length limit: without one it fails on every string tag.
    exporter = ZipkinExporter(endpoint=endpoint, version=version, max_tag_value_length=256)
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop", "1.2")
    with tracer.start_as_current_span("GET /pay", kind=SpanKind.SERVER) as parent:
        parent.set_attribute("http.route", "/pay")
        parent.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
            child.set_status(StatusCode.ERROR, "card declined")
    provider.shutdown()


async def test_the_sdks_zipkin_exporter_arrives_as_otlp(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    # The exporter posts synchronously: not on the receiver's loop.
    await asyncio.to_thread(sdk_trace, f"http://{receiver.endpoint}{V2}", Protocol.V2)
    spans = spans_by_name(sink)
    assert set(spans) == {"GET /pay", "charge"}
    rs, ss, server = spans["GET /pay"]
    assert get_attr(rs.resource.attributes, "service.name") == "checkout"
    assert (ss.scope.name, ss.scope.version) == ("shop", "1.2")
    assert server.kind == server.SPAN_KIND_SERVER
    assert get_attr(server.attributes, "http.route") == "/pay"
    assert [(e.name, get_attr(e.attributes, "attempt")) for e in server.events] == [("retry", 2)]
    assert server.end_time_unix_nano > server.start_time_unix_nano > 0
    _, _, client = spans["charge"]
    assert client.kind == client.SPAN_KIND_CLIENT
    assert (client.trace_id, client.parent_span_id) == (server.trace_id, server.span_id)
    assert (client.status.code, client.status.message) == (2, "card declined")


async def test_the_sdks_v1_json_exporter_arrives_as_otlp(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    await asyncio.to_thread(sdk_trace, f"http://{receiver.endpoint}{V1}", Protocol.V1)
    spans = spans_by_name(sink)
    assert set(spans) == {"GET /pay", "charge"}
    rs, _, server = spans["GET /pay"]
    # v1 has no local endpoint of its own: the binary annotations' endpoint names the service.
    assert get_attr(rs.resource.attributes, "service.name") == "checkout"
    assert get_attr(server.attributes, "http.route") == "/pay"
    assert [(e.name, get_attr(e.attributes, "attempt")) for e in server.events] == [("retry", 2)]
    assert server.kind == server.SPAN_KIND_UNSPECIFIED  # the exporter writes no cs/sr
    assert server.end_time_unix_nano > server.start_time_unix_nano > 0
    _, _, client = spans["charge"]
    assert (client.trace_id, client.parent_span_id) == (server.trace_id, server.span_id)
    assert (client.status.code, client.status.message) == (2, "card declined")
    assert "otel.status_code" not in attributes(client) and "error" not in attributes(client)


def py_zipkin_trace(port: int, encoding: Encoding) -> None:
    """A server span with a client child calling postgres and a local child, sent by
    py_zipkin's own HTTP transport (which picks the path and content type per encoding)."""
    with zipkin_span(
        service_name="checkout",
        span_name="GET /pay",
        transport_handler=SimpleHTTPTransport("127.0.0.1", port),
        sample_rate=100.0,
        encoding=encoding,
        kind=ZipkinKind.SERVER,
        host="10.1.2.3",
        port=8080,
        use_128bit_trace_id=True,
    ) as root:
        root.update_binary_annotations({"http.route": "/pay"})
        root.add_annotation("cache miss")
        with zipkin_span(service_name="checkout", span_name="charge", kind=ZipkinKind.CLIENT) as c:
            c.add_sa_binary_annotation(port=5432, service_name="postgres", host="10.0.0.9")
            c.update_binary_annotations({"db.system": "postgresql"})
        with zipkin_span(service_name="checkout", span_name="render") as local:
            local.update_binary_annotations({"template": "pay.html"})


@pytest.mark.parametrize("encoding", [Encoding.V2_PROTO3, Encoding.V1_JSON])
async def test_py_zipkin_protobuf_and_v1_json_arrive_as_otlp(serve, encoding):
    sink = SinkConsumer()
    receiver = await serve(sink)
    port = int(receiver.endpoint.rsplit(":", 1)[1])
    await asyncio.to_thread(py_zipkin_trace, port, encoding)
    spans = spans_by_name(sink)
    assert set(spans) == {"GET /pay", "charge", "render"}
    rs, _, server = spans["GET /pay"]
    assert get_attr(rs.resource.attributes, "service.name") == "checkout"
    assert server.kind == server.SPAN_KIND_SERVER
    assert len(server.trace_id) == 16 and server.trace_id[:8] != bytes(8)  # 128-bit
    assert get_attr(server.attributes, "http.route") == "/pay"
    assert [e.name for e in server.events] == ["cache miss"]
    assert server.start_time_unix_nano < server.events[0].time_unix_nano
    assert server.end_time_unix_nano > server.start_time_unix_nano
    _, _, client = spans["charge"]
    assert client.kind == client.SPAN_KIND_CLIENT
    assert (client.trace_id, client.parent_span_id) == (server.trace_id, server.span_id)
    assert attributes(client) == {
        "db.system": "postgresql",
        "peer.service": "postgres",
        "network.peer.address": "10.0.0.9",
        "network.peer.port": 5432,
    }
    local_rs, _, local = spans["render"]
    assert get_attr(local_rs.resource.attributes, "service.name") == "checkout"
    assert get_attr(local.attributes, "template") == "pay.html"
    if encoding is Encoding.V1_JSON:  # upstream's v1 resource carries the local address
        assert get_attr(rs.resource.attributes, "ipv4") == "10.1.2.3"
        assert get_attr(rs.resource.attributes, "port") == "8080"


# --- v1 Thrift, written as zipkinCore.thrift defines it ------------------------------------

# struct -> field name -> (id, wire type, element or struct schema)
ENDPOINT = {
    "ipv4": (1, TType.I32, None),
    "port": (2, TType.I16, None),
    "service_name": (3, TType.STRING, None),
    "ipv6": (4, TType.STRING, None),
}
ANNOTATION = {
    "timestamp": (1, TType.I64, None),
    "value": (2, TType.STRING, None),
    "host": (3, TType.STRUCT, ENDPOINT),
}
BINARY_ANNOTATION = {
    "key": (1, TType.STRING, None),
    "value": (2, TType.STRING, None),
    "annotation_type": (3, TType.I32, None),
    "host": (4, TType.STRUCT, ENDPOINT),
}
SPAN = {
    "trace_id": (1, TType.I64, None),
    "name": (3, TType.STRING, None),
    "id": (4, TType.I64, None),
    "parent_id": (5, TType.I64, None),
    "annotations": (6, TType.LIST, ANNOTATION),
    "binary_annotations": (8, TType.LIST, BINARY_ANNOTATION),
    "debug": (9, TType.BOOL, None),
    "timestamp": (10, TType.I64, None),
    "duration": (11, TType.I64, None),
    "trace_id_high": (12, TType.I64, None),
}
# zipkinCore.thrift's AnnotationType.
BOOL, BYTES, I16, I32, I64, DOUBLE, STRING = range(7)


def write_struct(out: TBinaryProtocol, schema: dict, values: dict) -> None:
    out.writeStructBegin("")
    for name, value in values.items():
        field_id, wire_type, of = schema[name]
        out.writeFieldBegin(name, wire_type, field_id)
        if wire_type == TType.STRUCT:
            write_struct(out, of, value)
        elif wire_type == TType.LIST:
            out.writeListBegin(TType.STRUCT, len(value))
            for item in value:
                write_struct(out, of, item)
            out.writeListEnd()
        else:
            writer = {
                TType.I64: out.writeI64,
                TType.I32: out.writeI32,
                TType.I16: out.writeI16,
                TType.BOOL: out.writeBool,
                TType.STRING: lambda v: out.writeBinary(v if isinstance(v, bytes) else v.encode()),
            }[wire_type]
            writer(value)
        out.writeFieldEnd()
    out.writeFieldStop()
    out.writeStructEnd()


def thrift_spans(*spans: dict) -> bytes:
    """The body v1 Thrift reporters send: a `list<Span>` in the binary protocol."""
    buffer = TMemoryBuffer()
    out = TBinaryProtocol(buffer)
    out.writeListBegin(TType.STRUCT, len(spans))
    for span in spans:
        write_struct(out, SPAN, span)
    out.writeListEnd()
    return buffer.getvalue()


def ipv4(text: str) -> int:
    """zipkinCore's i32 ipv4: the address packed big-endian, signed."""
    return struct.unpack(">i", ipaddress.IPv4Address(text).packed)[0]


FRONTEND = {"ipv4": ipv4("172.31.0.2"), "port": 8080, "service_name": "frontend"}
# An upper-half port travels as a negative i16.
BACKEND = {"ipv4": ipv4("192.168.1.20"), "port": 40000 - 65536, "service_name": "backend"}
T0 = 1_700_000_000_000_000


def binary(key: str, value: bytes, kind: int, host: dict | None = FRONTEND) -> dict:
    annotation = {"key": key, "value": value, "annotation_type": kind}
    return annotation if host is None else {**annotation, "host": host}


THRIFT_CLIENT_SPAN = {
    "trace_id": 0x0ED2E63CBE71F5A8,
    "trace_id_high": 0x463AC35C9F6413AD,
    "name": "get /api",
    "id": -0x5D04B5E2E569C2EE,  # i64s are signed: a2fb4a1d1a963d12
    "parent_id": 0x20000000000001,
    "annotations": [
        {"timestamp": T0, "value": "cs", "host": FRONTEND},
        {"timestamp": T0 + 400, "value": "ws", "host": FRONTEND},
        {"timestamp": T0 + 1500, "value": "cr", "host": FRONTEND},
    ],
    "binary_annotations": [
        binary("http.path", b"/api", STRING),
        binary("cache.hit", b"\x01", BOOL),
        binary("retries", struct.pack(">h", -1), I16),
        binary("http.status_code", struct.pack(">i", 503), I32),
        binary("bytes", struct.pack(">q", 1 << 40), I64),
        binary("ratio", struct.pack(">d", 0.25), DOUBLE),
        binary("digest", b"\x00\xff", BYTES),
        binary("short", b"\x01", I64),
        binary("sa", b"\x01", BOOL, host=BACKEND),
    ],
    "debug": True,
}


async def test_a_v1_thrift_body_arrives_as_upstream_translates_it(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    local_span = {  # no core annotation, no time: named by its local component
        "trace_id": 7,
        "name": "compute",
        "id": 8,
        "binary_annotations": [binary("lc", b"pricing", STRING, host=None)],
    }
    body = thrift_spans(THRIFT_CLIENT_SPAN, local_span)
    status, text = await post(receiver.endpoint, body, V1, THRIFT)
    assert status == 202, text
    spans = spans_by_name(sink)
    rs, _, span = spans["get /api"]
    assert attributes(rs.resource) == {
        "service.name": "frontend",
        "ipv4": "172.31.0.2",
        "port": "8080",
    }
    assert span.trace_id == bytes.fromhex("463ac35c9f6413ad0ed2e63cbe71f5a8")
    assert span.span_id == bytes.fromhex("a2fb4a1d1a963d12")
    assert span.parent_span_id == bytes.fromhex("0020000000000001")
    assert span.kind == span.SPAN_KIND_CLIENT
    assert (span.start_time_unix_nano, span.end_time_unix_nano) == (T0 * 1000, (T0 + 1500) * 1000)
    assert [(e.name, e.time_unix_nano) for e in span.events] == [("ws", (T0 + 400) * 1000)]
    assert attributes(span) == {
        "http.path": "/api",
        "cache.hit": True,
        "retries": -1,
        "http.status_code": 503,
        "bytes": 1 << 40,
        "ratio": 0.25,
        "digest": base64.b64encode(b"\x00\xff").decode(),
        "short": "<not enough bytes representing the number>",
        "peer.service": "backend",
        "network.peer.address": "192.168.1.20",
        "network.peer.port": 40000,
    }
    assert span.status.code == span.status.STATUS_CODE_ERROR  # from http.status_code 503
    local_rs, _, local = spans["compute"]
    assert attributes(local_rs.resource) == {"service.name": "pricing"}
    assert local.trace_id == bytes(15) + b"\x07"
    assert get_attr(local.attributes, "component") == "pricing"
    # A span without a time gets its arrival, marked as such.
    assert get_attr(local.attributes, "otel.zipkin.absentField.startTime") is True
    assert local.start_time_unix_nano == local.end_time_unix_nano > T0 * 1000


async def test_a_large_thrift_body_is_read_whole(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    spans = [{**THRIFT_CLIENT_SPAN, "id": i + 1, "name": f"span {i}"} for i in range(2000)]
    body = thrift_spans(*spans)
    assert len(body) > 256 * 1024  # decoded off the event loop
    assert (await post(receiver.endpoint, body, V1, THRIFT))[0] == 202
    assert sink.item_count == 2000


# --- raw bodies -------------------------------------------------------------------------------

ZIPKIN_SPAN = {
    "traceId": "463ac35c9f6413ad",  # 64-bit: left-padded
    "id": "a2fb4a1d1a96d312",
    "parentId": "0020000000000001",
    "name": "get /api",
    "kind": "CLIENT",
    "timestamp": 1_700_000_000_000_000,
    "duration": 1500,
    "localEndpoint": {"serviceName": "frontend"},
    "remoteEndpoint": {"serviceName": "backend", "ipv4": "10.0.0.2", "port": 8080},
    "tags": {"http.status_code": "500", "retried": "true", "error": "boom"},
    "annotations": [{"timestamp": 1_700_000_000_000_500, "value": "ws"}],
}


async def test_a_raw_v2_span_with_gzip_and_typed_tags(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, parse_string_tags=True)
    body = gzip.compress(json.dumps([ZIPKIN_SPAN]).encode())
    assert (await post(receiver.endpoint, body, **{"Content-Encoding": "gzip"}))[0] == 202
    ((rs, _, span),) = list(iter_spans(merged(sink)))
    assert get_attr(rs.resource.attributes, "service.name") == "frontend"
    assert span.trace_id == bytes(8) + bytes.fromhex("463ac35c9f6413ad")
    assert span.start_time_unix_nano == 1_700_000_000_000_000_000
    assert span.end_time_unix_nano - span.start_time_unix_nano == 1_500_000
    assert get_attr(span.attributes, "http.status_code") == 500
    assert get_attr(span.attributes, "retried") is True
    assert get_attr(span.attributes, "peer.service") == "backend"
    assert get_attr(span.attributes, "network.peer.port") == 8080
    assert (span.status.code, span.status.message) == (2, "boom")
    assert [(e.name, e.time_unix_nano) for e in span.events] == [("ws", 1_700_000_000_000_500_000)]


def proto_span(**fields) -> bytes:
    """A ListOfSpans of one span, with py_zipkin's generated zipkin.proto3 classes."""
    span = zipkin_pb2.Span(
        trace_id=bytes.fromhex("463ac35c9f6413ad0ed2e63cbe71f5a8"),
        id=bytes.fromhex("a2fb4a1d1a96d312"),
        name="get /api",
        kind=zipkin_pb2.Span.CLIENT,
        timestamp=1_700_000_000_000_000,
        duration=1500,
        local_endpoint=zipkin_pb2.Endpoint(service_name="frontend"),
        **fields,
    )
    return zipkin_pb2.ListOfSpans(spans=[span]).SerializeToString()


async def test_a_protobuf_span_reads_as_its_json_twin(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    remote = zipkin_pb2.Endpoint(
        service_name="backend", ipv6=ipaddress.IPv6Address("2001:db8::2").packed, port=443
    )
    body = proto_span(
        parent_id=bytes.fromhex("0020000000000001"),
        remote_endpoint=remote,
        annotations=[zipkin_pb2.Annotation(timestamp=1_700_000_000_000_500, value="ws")],
        tags={"otel.status_code": "ERROR", "error": "boom", "http.method": "GET"},
        shared=True,
    )
    assert (await post(receiver.endpoint, body, content_type=PROTOBUF))[0] == 202
    twin = {
        **ZIPKIN_SPAN,
        "traceId": "463ac35c9f6413ad0ed2e63cbe71f5a8",
        "remoteEndpoint": {"serviceName": "backend", "ipv6": "2001:db8::2", "port": 443},
        "tags": {"otel.status_code": "ERROR", "error": "boom", "http.method": "GET"},
    }
    assert (await post(receiver.endpoint, json.dumps([twin]).encode()))[0] == 202
    from_proto, from_json = sink.batches
    assert from_proto == from_json
    ((_, _, span),) = list(iter_spans(from_proto))
    assert get_attr(span.attributes, "network.peer.address") == "2001:db8::2"
    assert (span.status.code, span.status.message) == (2, "boom")


@pytest.mark.parametrize(
    ("binary_annotations", "code", "message"),
    [
        ([("census.status_code", "10"), ("census.status_description", "RPCError")], 2, "RPCError"),
        ([("census.status_code", "0"), ("otel.status_code", "2")], 1, ""),
        ([("otel.status_code", "2"), ("otel.status_description", "Forbidden")], 2, "Forbidden"),
        ([("otel.status_code", "ERROR"), ("error", "card declined")], 2, "card declined"),
        ([("error", True)], 2, ""),
        ([("http.status_code", "404"), ("http.status_message", "NotFound")], 2, "NotFound"),
        ([("http.status_code", 204)], 0, ""),
    ],
)
async def test_v1_status_tags_as_upstream_ranks_them(serve, binary_annotations, code, message):
    sink = SinkConsumer()
    receiver = await serve(sink)
    span = {
        "traceId": "00000000000000010000000000000002",
        "id": "0000000000000001",
        "timestamp": 1,
        "binaryAnnotations": [{"key": k, "value": v} for k, v in binary_annotations],
    }
    status, text = await post(receiver.endpoint, json.dumps([span]).encode(), V1)
    assert status == 202, text
    ((_, _, got),) = list(iter_spans(merged(sink)))
    assert (got.status.code, got.status.message) == (code, message)
    kept = {k for k, _ in binary_annotations if k.startswith("http.")}
    assert set(attributes(got)) == kept


V1_JSON_SPAN = {
    "traceId": "0ed2e63cbe71f5a8",
    "id": "0ed2e63cbe71f5a8",
    "name": "checkAvailability",
    "timestamp": 1_544_805_927_448_081,
    "duration": 12_021,
    "debug": True,
    "annotations": [
        {"timestamp": 1_544_805_927_448_081, "value": "sr", "endpoint": {"serviceName": "svc1"}},
        {"timestamp": 1_544_805_927_450_000, "value": "custom time event"},
        {"timestamp": 1_544_805_927_460_102, "value": "ss", "endpoint": {"serviceName": "svc1"}},
    ],
    "binaryAnnotations": [
        {"key": "ca", "value": True, "endpoint": {"serviceName": "web", "ipv4": "10.0.0.7"}},
        {"key": "sa", "value": True, "endpoint": {"serviceName": "ignored"}},
        {"key": "retries", "value": "2"},
        {"key": "weight", "value": 0.5},
    ],
}

ENCODINGS: list[tuple[str, Callable[[bytes], bytes]]] = [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("zlib", zlib.compress),  # upstream's name for deflate
]


@pytest.mark.parametrize(("coding", "compress"), ENCODINGS)
async def test_compressed_v1_json_with_server_annotations(serve, coding, compress):
    sink = SinkConsumer()
    receiver = await serve(sink, parse_string_tags=True)
    body = compress(json.dumps([V1_JSON_SPAN]).encode())
    status, text = await post(receiver.endpoint, body, V1, **{"Content-Encoding": coding})
    assert status == 202, text
    ((rs, _, span),) = list(iter_spans(merged(sink)))
    assert attributes(rs.resource) == {"service.name": "svc1"}
    assert span.kind == span.SPAN_KIND_SERVER
    assert span.start_time_unix_nano == 1_544_805_927_448_081_000
    assert span.end_time_unix_nano == 1_544_805_927_460_102_000
    assert [e.name for e in span.events] == ["custom time event"]
    # The server's other side is its client: `ca`, not `sa`.
    assert attributes(span) == {
        "peer.service": "web",
        "network.peer.address": "10.0.0.7",
        "retries": 2,
        "weight": 0.5,
    }


GOOD = {
    (V2, JSON): json.dumps([ZIPKIN_SPAN]).encode(),
    (V2, PROTOBUF): proto_span(),
    (V1, JSON): json.dumps([V1_JSON_SPAN]).encode(),
    (V1, THRIFT): thrift_spans(THRIFT_CLIENT_SPAN),
}


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status", "fragment"),
    [
        (V2, JSON, b"{not json", 400, "not JSON"),
        (V2, JSON, b'{"traceId": "1"}', 400, "expected a JSON array of Zipkin v2 spans"),
        (V2, JSON, json.dumps([{**ZIPKIN_SPAN, "id": "xyz"}]).encode(), 400, "span 0: id"),
        (V2, JSON, json.dumps([{**ZIPKIN_SPAN, "traceId": ""}]).encode(), 400, "traceId"),
        (V2, JSON, json.dumps([{**ZIPKIN_SPAN, "id": "0" * 16}]).encode(), 400, "id: is zero"),
        (V2, JSON, json.dumps([{**ZIPKIN_SPAN, "timestamp": -1}]).encode(), 400, "timestamp"),
        (V2, PROTOBUF, b"\x0a\x05\x0a", 400, "not a zipkin.proto3.ListOfSpans"),
        (V2, PROTOBUF, proto_span(parent_id=b"\x01\x02"), 400, "parent_id: 2 bytes"),
        (
            V2,
            PROTOBUF,
            proto_span(remote_endpoint=zipkin_pb2.Endpoint(ipv4=b"\x0a\x00")),
            400,
            "remote_endpoint.ipv4: 2 bytes, expected 4",
        ),
        (V1, JSON, b"[1]", 400, "span 0: span: expected an object"),
        (V1, JSON, json.dumps([{**V1_JSON_SPAN, "debug": "yes"}]).encode(), 400, "debug"),
        (
            V1,
            JSON,
            json.dumps(
                [{**V1_JSON_SPAN, "binaryAnnotations": [{"key": "k", "value": []}]}]
            ).encode(),
            400,
            "binaryAnnotation value",
        ),
        (V1, THRIFT, b"\x0c\x00\x00\x00\x05", 400, "malformed Thrift"),
        (V1, THRIFT, b"\x0b\x00\x00\x00\x01", 400, "expected a list of structs"),
        (V1, THRIFT, thrift_spans({"trace_id": 0, "id": 1}), 400, "span 0: trace_id: is zero"),
        (V1, THRIFT, GOOD[V1, THRIFT][:-9], 400, "malformed Thrift"),
        (V2, JSON, b"\x1f\x8b garbage", 400, "invalid gzip body"),
        (V2, THRIFT, GOOD[V1, THRIFT], 415, "use application/json or application/x-protobuf"),
        (V1, PROTOBUF, GOOD[V2, PROTOBUF], 415, "use application/json or application/x-thrift"),
    ],
)
async def test_bad_requests_get_a_clear_status_and_nothing_reaches_the_pipeline(
    serve, path, content_type, body, status, fragment
):
    sink = SinkConsumer()
    receiver = await serve(sink)
    headers = {"Content-Encoding": "gzip"} if body.startswith(b"\x1f\x8b") else {}
    got, text = await post(receiver.endpoint, body, path, content_type, **headers)
    assert (got, fragment in text) == (status, True), text
    assert sink.batches == []
    assert (await post(receiver.endpoint, GOOD[V2, JSON]))[0] == 202


@pytest.mark.parametrize(("path", "content_type"), list(GOOD))
async def test_a_refusing_pipeline_is_503_with_retry_after(serve, path, content_type):
    receiver = await serve(ErrorConsumer(RetryableError("queue full")))
    url = f"http://{receiver.endpoint}{path}"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url, data=GOOD[path, content_type], headers={"Content-Type": content_type}
        ) as response,
    ):
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        assert "queue full" in await response.text()


async def test_each_format_counts_under_its_upstream_transport(serve):
    settings = make_settings(Kind.RECEIVER, "zipkin")
    cfg = zipkin.Config.model_validate({"endpoint": "127.0.0.1:0"})
    receiver = zipkin.ZipkinReceiver(settings, cfg, {Signal.TRACES: SinkConsumer()})
    await receiver.start(StaticHost())
    assert receiver.endpoint is not None
    try:
        for (path, content_type), body in GOOD.items():
            assert (await post(receiver.endpoint, body, path, content_type))[0] == 202
    finally:
        await receiver.shutdown()
    exposition = settings.telemetry.exposition().decode()
    for transport in ("http_v1_json", "http_v1_thrift", "http_v2_json", "http_v2_proto"):
        assert f'transport="{transport}"' in exposition


PIPELINE = """
receivers:
  zipkin: {{endpoint: "127.0.0.1:{port}"}}
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [zipkin], exporters: [file]}}
"""


async def test_e2e_a_collector_keeps_serving_after_bad_bodies_of_every_format(tmp_path: Path):
    port, out = free_port(), tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(PIPELINE.format(port=port, out=out))
    collector = CollectorProcess(config)
    await asyncio.to_thread(collector.start)
    endpoint = f"127.0.0.1:{port}"
    try:
        for path, content_type in GOOD:
            status, _ = await post(endpoint, b"\x0b\xff\xff\xff\xff{[", path, content_type)
            assert status == 400
        for (path, content_type), body in GOOD.items():
            status, text = await post(endpoint, body, path, content_type)
            assert status == 202, text
    finally:
        code = await asyncio.to_thread(collector.stop)
    assert code == 0, collector.log
    names = [
        span.name
        for request in read_requests(out)[Signal.TRACES]
        for *_, span in iter_spans(request)
    ]
    assert sorted(names) == ["checkAvailability", "get /api", "get /api", "get /api"]
