"""The jaeger receiver with real Jaeger clients: OpenTelemetry's Jaeger Thrift exporter (Thrift
over HTTP and the agent's compact UDP protocol); the Thrift classes that exporter ships, which
the Apache Thrift compiler generated from jaeger-idl, for hand-built batches and the binary UDP
protocol; and, for gRPC, a client that protoc compiles here from testdata/jaeger_api_v2.proto.
"""

import asyncio
import base64
import importlib
import random
import socket
import struct
import sys
import time

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, StatusCode
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TTransport import TMemoryBuffer

from collector.core.component import ComponentID, Kind
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import Traces, get_attr, iter_spans
from collector.core.signals import Signal
from collector.extensions import basicauth, bearertokenauth
from collector.receivers.jaeger import thrift_codec
from collector.receivers.jaeger.config import Config
from collector.receivers.jaeger.receiver import JaegerReceiver
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port
from tests.support.sinks import ErrorConsumer, SinkConsumer


def _import_jaeger_exporter():
    """opentelemetry-exporter-jaeger-thrift 1.21 (the last release) imports the names of its
    environment variables from the SDK, which dropped them in 1.22: they are put back, as
    their own names (their values then), before it is imported."""
    import opentelemetry.sdk.environment_variables as env

    for name in (
        "OTEL_EXPORTER_JAEGER_AGENT_HOST",
        "OTEL_EXPORTER_JAEGER_AGENT_PORT",
        "OTEL_EXPORTER_JAEGER_AGENT_SPLIT_OVERSIZED_BATCHES",
        "OTEL_EXPORTER_JAEGER_ENDPOINT",
        "OTEL_EXPORTER_JAEGER_PASSWORD",
        "OTEL_EXPORTER_JAEGER_TIMEOUT",
        "OTEL_EXPORTER_JAEGER_USER",
    ):
        if not hasattr(env, name):
            setattr(env, name, name)
    exporter = importlib.import_module("opentelemetry.exporter.jaeger.thrift")
    agent = importlib.import_module("opentelemetry.exporter.jaeger.thrift.gen.agent.Agent")
    ttypes = importlib.import_module("opentelemetry.exporter.jaeger.thrift.gen.jaeger.ttypes")
    return exporter.JaegerExporter, agent, ttypes


JaegerExporter, Agent, T = _import_jaeger_exporter()
THRIFT = "application/x-thrift"
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated method:DeprecationWarning")


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
async def serve():
    started = []

    async def _serve(sink, extensions=None, **protocols) -> JaegerReceiver:
        config = Config.model_validate(
            {
                "protocols": {
                    name: {"endpoint": "127.0.0.1:0", **options}
                    for name, options in protocols.items()
                }
            }
        )
        receiver = JaegerReceiver(
            make_settings(Kind.RECEIVER, "jaeger"), config, {Signal.TRACES: sink}
        )
        await receiver.start(StaticHost(extensions=extensions))
        started.append(receiver)
        return receiver

    yield _serve
    for receiver in started:
        await receiver.shutdown()


async def post(receiver, body: bytes, content_type: str | None = THRIFT, **headers):
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = f"http://{receiver.thrift_http_endpoint}/api/traces"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.text(), response.headers


def encode(struct_, compact: bool = False) -> bytes:
    buffer = TMemoryBuffer()
    struct_.write(TCompactProtocol(buffer) if compact else TBinaryProtocol(buffer))
    return buffer.getvalue()


def agent_datagram(batch, compact: bool) -> bytes:
    """What a Jaeger client sends its agent: an `Agent.emitBatch` call."""
    buffer = TMemoryBuffer()
    protocol = TCompactProtocol(buffer) if compact else TBinaryProtocol(buffer)
    Agent.Client(protocol).emitBatch(batch)
    return buffer.getvalue()


def send_udp(endpoint: str, datagram: bytes) -> None:
    host, port = endpoint.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (host, int(port)))


def merged(sink: SinkConsumer) -> Traces:
    batch = Traces()
    for part in sink.batches:
        batch.MergeFrom(part)
    return batch


def by_name(sink: SinkConsumer) -> dict:
    return {span.name: (rs, ss, span) for rs, ss, span in iter_spans(merged(sink))}


def attrs(item) -> dict:
    return {kv.key: get_attr(item.attributes, kv.key) for kv in item.attributes}


def tag(key: str, value):
    """A Jaeger tag of the type of `value`."""
    if isinstance(value, bool):
        return T.Tag(key=key, vType=T.TagType.BOOL, vBool=value)
    if isinstance(value, int):
        return T.Tag(key=key, vType=T.TagType.LONG, vLong=value)
    if isinstance(value, float):
        return T.Tag(key=key, vType=T.TagType.DOUBLE, vDouble=value)
    if isinstance(value, bytes):
        return T.Tag(key=key, vType=T.TagType.BINARY, vBinary=value)
    return T.Tag(key=key, vType=T.TagType.STRING, vStr=value)


START_US = 1_700_000_000_000_000
HIGH, LOW = 0x0102030405060708, -0x0F0E0D0C0B0A0909  # a negative i64: its two's complement
TRACE_ID = struct.pack(">qq", HIGH, LOW)


def jspan(name: str, span_id: int = 1, tags: dict | None = None, **fields):
    """A Thrift span in the trace HIGH/LOW; `tags` by key, typed by value (see `tag`)."""
    values = {
        "traceIdHigh": HIGH,
        "traceIdLow": LOW,
        "spanId": span_id,
        "parentSpanId": 0,
        "operationName": name,
        "flags": 1,
        "startTime": START_US,
        "duration": 1500,
        "tags": [tag(k, v) for k, v in tags.items()] if tags is not None else None,
        **fields,
    }
    return T.Span(**values)


def jbatch(*spans, service: str = "checkout", process_tags=None):
    return T.Batch(process=T.Process(serviceName=service, tags=process_tags), spans=list(spans))


async def translated(serve, *spans, **batch) -> dict:
    """The spans as the receiver hands them on, after a round trip over Thrift HTTP."""
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    status, text, _ = await post(receiver, encode(jbatch(*spans, **batch)))
    assert status == 202, text
    return by_name(sink)


# --- real clients ----------------------------------------------------------------------------


def sdk_spans(exporter, service: str = "checkout") -> None:
    """Five spans of a trace through OpenTelemetry's SDK into `exporter`; synchronous (run it
    on a thread beside the receiver's event loop)."""
    provider = TracerProvider(resource=Resource({"service.name": service, "team": "pay"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop", "1.2")
    with tracer.start_as_current_span("GET /pay", kind=SpanKind.SERVER) as server:
        server.set_attribute("http.route", "/pay")
        server.set_attribute("retried", True)
        server.set_attribute("attempts", 3)
        server.set_attribute("ratio", 0.25)
        server.add_event("retry", {"attempt": 2})
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as client:
            client.set_status(StatusCode.ERROR, "card declined")
        with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER):
            pass
        link = Link(server.get_span_context())
        with tracer.start_as_current_span("consume", kind=SpanKind.CONSUMER, links=[link]):
            pass
        with tracer.start_as_current_span("compute", kind=SpanKind.INTERNAL):
            pass
    provider.shutdown()


async def test_the_sdks_jaeger_exporter_over_thrift_http_arrives_as_otlp(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    endpoint = f"http://{receiver.thrift_http_endpoint}/api/traces"
    await asyncio.to_thread(sdk_spans, JaegerExporter(collector_endpoint=endpoint))

    spans = by_name(sink)
    assert set(spans) == {"GET /pay", "charge", "publish", "consume", "compute"}
    rs, ss, server = spans["GET /pay"]
    assert attrs(rs.resource) == {"service.name": "checkout"}
    # The exporter writes the scope as otel.scope.* (taken as the scope) and as the older
    # otel.library.* (which then stay attributes, as in the OTel Collector).
    assert (ss.scope.name, ss.scope.version) == ("shop", "1.2")
    assert server.kind == server.SPAN_KIND_SERVER
    assert len(server.trace_id) == 16 and any(server.trace_id[:8])  # 128-bit ids
    got = attrs(server)
    assert got["http.route"] == "/pay"
    assert got["retried"] is True
    assert got["attempts"] == 3
    assert got["ratio"] == 0.25
    assert got["otel.library.name"] == "shop"
    assert got["team"] == "pay"  # the exporter sends resource attributes as span tags
    assert not {"span.kind", "otel.scope.name", "otel.status_code"} & got.keys()
    assert server.end_time_unix_nano > server.start_time_unix_nano > 0
    # The exporter names events in a `message` field; the translator takes `event` only.
    ((event),) = server.events
    assert (event.name, attrs(event)) == ("", {"attempt": 2, "message": "retry"})

    kinds = {name: span.kind for name, (_, _, span) in spans.items()}
    assert kinds == {
        "GET /pay": server.SPAN_KIND_SERVER,
        "charge": server.SPAN_KIND_CLIENT,
        "publish": server.SPAN_KIND_PRODUCER,
        "consume": server.SPAN_KIND_CONSUMER,
        "compute": server.SPAN_KIND_INTERNAL,
    }
    _, _, client = spans["charge"]
    assert (client.trace_id, client.parent_span_id) == (server.trace_id, server.span_id)
    assert (client.status.code, client.status.message) == (2, "card declined")
    assert "error" not in attrs(client)
    _, _, consumer = spans["consume"]
    ((link),) = consumer.links
    assert (link.trace_id, link.span_id) == (server.trace_id, server.span_id)
    assert attrs(link) == {"opentracing.ref_type": "follows_from"}
    # A FOLLOWS_FROM reference in the same trace is not the parent when one is given.
    assert consumer.parent_span_id == server.span_id


async def test_the_sdks_jaeger_exporter_over_the_agents_compact_udp(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_compact={})
    host, port = receiver.thrift_compact_endpoint.rsplit(":", 1)
    exporter = JaegerExporter(agent_host_name=host, agent_port=int(port))
    await asyncio.to_thread(sdk_spans, exporter)
    await sink.wait_for(5)
    spans = by_name(sink)
    rs, ss, server = spans["GET /pay"]
    assert attrs(rs.resource) == {"service.name": "checkout"}
    assert ss.scope.name == "shop"
    assert spans["charge"][2].parent_span_id == server.span_id
    assert spans["charge"][2].status.code == 2


async def test_the_agents_binary_udp_protocol(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_binary={})
    batch = jbatch(jspan("a", tags={"span.kind": "server"}), jspan("b", span_id=2))
    send_udp(receiver.thrift_binary_endpoint, agent_datagram(batch, compact=False))
    await sink.wait_for(2)
    spans = by_name(sink)
    assert spans["a"][2].kind == spans["a"][2].SPAN_KIND_SERVER
    assert spans["b"][2].trace_id == TRACE_ID


async def test_basic_auth_with_the_exporters_credentials(serve):
    extension = basicauth.factory.create(
        make_settings(Kind.EXTENSION, "basicauth"),
        basicauth.Config.model_validate({"htpasswd": {"inline": "agent:a-secret"}}),
    )
    await extension.start(None)
    sink = SinkConsumer()
    receiver = await serve(
        sink,
        extensions={ComponentID.parse("basicauth"): extension},
        thrift_http={"auth": {"authenticator": "basicauth"}},
    )
    endpoint = f"http://{receiver.thrift_http_endpoint}/api/traces"
    exporter = JaegerExporter(collector_endpoint=endpoint, username="agent", password="a-secret")
    await asyncio.to_thread(sdk_spans, exporter)
    assert sink.item_count == 5
    wrong = "Basic " + base64.b64encode(b"agent:wrong").decode()
    status, _, _ = await post(receiver, encode(jbatch(jspan("a"))), Authorization=wrong)
    assert status == 401
    assert sink.item_count == 5


# --- the translation ----------------------------------------------------------------------------


async def test_ids_times_and_the_process(serve):
    process_tags = [tag("hostname", "web-1"), tag("jaeger.version", "Python-4.8.0"), tag("n", 4)]
    spans = await translated(
        serve,
        jspan("long", span_id=-2),
        jspan("short", span_id=3, traceIdHigh=0, traceIdLow=0x463AC35C9F6413AD),
        process_tags=process_tags,
    )
    rs, ss, span = spans["long"]
    assert attrs(rs.resource) == {
        "service.name": "checkout",
        "host.name": "web-1",
        "opencensus.exporterversion": "Jaeger-Python-4.8.0",
        "n": 4,
    }
    assert (ss.scope.name, ss.scope.version) == ("", "")
    assert span.trace_id.hex() == "0102030405060708f0f1f2f3f4f5f6f7"  # two's complement
    assert span.span_id == b"\xff" * 7 + b"\xfe"
    assert span.start_time_unix_nano == START_US * 1000
    assert span.end_time_unix_nano - span.start_time_unix_nano == 1_500_000
    assert span.kind == span.SPAN_KIND_UNSPECIFIED  # no span.kind tag
    assert span.parent_span_id == b""
    # A 64-bit trace id (traceIdHigh 0) is left-padded with zeros.
    assert spans["short"][2].trace_id == bytes(8) + bytes.fromhex("463ac35c9f6413ad")


async def test_every_tag_type(serve):
    span = jspan("typed")
    span.tags = [
        tag("s", "text"),
        tag("b", False),
        tag("i", -7),
        tag("d", 1.5),
        tag("raw", b"\x00\xff"),
        tag("dup", "first"),
        tag("dup", "second"),
        T.Tag(key="odd", vType=9),
        T.Tag(key="long-without-value", vType=T.TagType.LONG),
    ]
    _, _, got = (await translated(serve, span))["typed"]
    assert attrs(got) == {
        "s": "text",
        "b": False,
        "i": -7,
        "d": 1.5,
        "raw": b"\x00\xff",
        "dup": "second",  # a later duplicate overwrites, in the first one's place
        "odd": "<Unknown Jaeger TagType 9>",
        "long-without-value": 0,
    }
    assert [kv.key for kv in got.attributes][:6] == ["s", "b", "i", "d", "raw", "dup"]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("client", 3),
        ("server", 2),
        ("producer", 4),
        ("consumer", 5),
        ("internal", 1),
        ("SERVER", 0),  # the values are lower-case
        ("rpc", 0),
        (7, 0),  # not a string
    ],
)
async def test_span_kind(serve, value, kind):
    _, _, span = (await translated(serve, jspan("k", tags={"span.kind": value})))["k"]
    assert span.kind == kind
    assert "span.kind" not in attrs(span)


OK, ERROR, UNSET = 1, 2, 0


@pytest.mark.parametrize(
    ("tags", "status", "left"),
    [
        ({"error": True}, (ERROR, ""), {}),
        (
            {"error": True, "otel.status_description": "boom", "http.status_message": "Bad"},
            (ERROR, "boom"),
            {"http.status_message": "Bad"},
        ),
        (
            {"error": True, "http.status_message": "Bad"},
            (ERROR, "Bad"),
            {"http.status_message": "Bad"},
        ),
        # `error` wins over otel.status_code, which is removed all the same.
        ({"error": True, "otel.status_code": "OK"}, (ERROR, ""), {}),
        ({"error": False, "otel.status_code": "OK"}, (OK, ""), {"error": False}),
        ({"error": "yes"}, None, {"error": "yes"}),  # only a boolean counts
        ({"otel.status_code": "error", "otel.status_description": "d"}, (ERROR, "d"), {}),
        ({"otel.status_code": "UNSET"}, (UNSET, ""), {}),
        ({"http.status_code": 503}, (ERROR, ""), {"http.status_code": 503}),
        ({"http.status_code": "503", "http.status_message": "busy"}, (ERROR, "busy"), None),
        ({"http.status_code": 200}, None, None),
        ({"http.status_code": 404, "span.kind": "client"}, (ERROR, ""), None),
        ({"http.status_code": 404, "span.kind": "server"}, None, None),
        ({"http.status_code": 404}, (ERROR, ""), None),
        ({"http.status_code": 399}, (ERROR, ""), None),  # as the OTel Collector maps it
        ({"http.status_code": "5x"}, None, None),
        ({"http.status_code": 500.0}, None, None),  # neither integer nor numeric string
    ],
)
async def test_status(serve, tags, status, left):
    _, _, span = (await translated(serve, jspan("s", tags=tags)))["s"]
    got = (span.status.code, span.status.message) if span.HasField("status") else None
    assert got == status
    if left is not None:
        assert attrs(span) == left


async def test_scope_trace_state_and_events(serve):
    spans = await translated(
        serve,
        jspan(
            "scoped",
            span_id=1,
            tags={
                "otel.scope.name": "lib",
                "otel.scope.version": "2.0",
                "otel.library.name": "old-lib",
                "w3c.tracestate": "vendor=x",
            },
            logs=[
                T.Log(timestamp=START_US + 5, fields=[tag("event", "retry"), tag("attempt", 2)]),
                T.Log(timestamp=START_US + 6, fields=[]),
            ],
        ),
        jspan("legacy", span_id=2, tags={"otel.library.name": "old-lib", "keep": 1}),
        jspan("plain", span_id=3),
    )
    _, ss, span = spans["scoped"]
    assert (ss.scope.name, ss.scope.version) == ("lib", "2.0")
    assert span.trace_state == "vendor=x"
    assert attrs(span) == {"otel.library.name": "old-lib"}
    assert [(e.name, e.time_unix_nano, attrs(e)) for e in span.events] == [
        ("retry", (START_US + 5) * 1000, {"attempt": 2}),
        ("", (START_US + 6) * 1000, {}),
    ]
    _, legacy_scope, legacy = spans["legacy"]
    assert (legacy_scope.scope.name, legacy_scope.scope.version) == ("old-lib", "")
    assert attrs(legacy) == {"keep": 1}
    assert spans["plain"][1].scope.name == ""
    rs = spans["scoped"][0]  # one resource, a scope per (name, version)
    assert [(ss.scope.name, len(ss.spans)) for ss in rs.scope_spans] == [
        ("lib", 1),
        ("old-lib", 1),
        ("", 1),
    ]


def ref(ref_type, span_id: int, high: int = HIGH, low: int = LOW):
    return T.SpanRef(refType=ref_type, traceIdHigh=high, traceIdLow=low, spanId=span_id)


CHILD_OF, FOLLOWS_FROM = T.SpanRefType.CHILD_OF, T.SpanRefType.FOLLOWS_FROM


async def test_parents_and_links(serve):
    other_trace = {"high": 0, "low": 99}
    spans = await translated(
        serve,
        # parentSpanId is the parent; a CHILD_OF reference to it is not also a link.
        jspan("field", span_id=1, parentSpanId=7, references=[ref(CHILD_OF, 7)]),
        # No parentSpanId: the first CHILD_OF reference in the same trace is the parent; one
        # to another trace and the FOLLOWS_FROM ones are links.
        jspan(
            "refs",
            span_id=2,
            references=[
                ref(FOLLOWS_FROM, 5),
                ref(CHILD_OF, 8, **other_trace),
                ref(CHILD_OF, 9),
                ref(CHILD_OF, 10),
            ],
        ),
        # No CHILD_OF in the trace: the first FOLLOWS_FROM is the parent, and stays a link.
        jspan("follows", span_id=3, references=[ref(FOLLOWS_FROM, 11), ref(FOLLOWS_FROM, 12)]),
        jspan("root", span_id=4),
    )

    def links(span):
        return [
            (
                link.trace_id,
                int.from_bytes(link.span_id, "big"),
                attrs(link)["opentracing.ref_type"],
            )
            for link in span.links
        ]

    field = spans["field"][2]
    assert (field.parent_span_id, links(field)) == (struct.pack(">q", 7), [])
    refs = spans["refs"][2]
    assert refs.parent_span_id == struct.pack(">q", 9)
    assert links(refs) == [
        (TRACE_ID, 5, "follows_from"),
        (struct.pack(">qq", 0, 99), 8, "child_of"),
        (TRACE_ID, 10, "child_of"),
    ]
    follows = spans["follows"][2]
    assert follows.parent_span_id == struct.pack(">q", 11)
    assert links(follows) == [(TRACE_ID, 11, "follows_from"), (TRACE_ID, 12, "follows_from")]
    assert spans["root"][2].parent_span_id == b""


async def test_an_empty_span_is_skipped_and_an_empty_batch_accepted(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    blank = T.Span(
        traceIdLow=0,
        traceIdHigh=0,
        spanId=0,
        parentSpanId=0,
        operationName="",
        flags=0,
        startTime=0,
        duration=0,
    )
    assert (await post(receiver, encode(jbatch(blank, jspan("kept")))))[0] == 202
    assert list(by_name(sink)) == ["kept"]
    assert (await post(receiver, encode(jbatch())))[0] == 202
    assert len(sink.batches) == 1


# --- bad requests -------------------------------------------------------------------------------

GOOD = encode(jbatch(jspan("a", tags={"k": "v"}, logs=[T.Log(timestamp=1, fields=[tag("x", 1)])])))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "malformed Thrift"),
        (b"not thrift at all", "malformed Thrift"),
        (GOOD[: len(GOOD) // 2], "malformed Thrift"),
        (encode(T.Batch(spans=[])), "required field process is missing"),
        (encode(T.Batch(process=T.Process(serviceName="s"))), "required field spans"),
        (encode(jbatch(T.Span(traceIdLow=1))), "Span: required field"),
        # process sent as a string, spans as a list of strings: skipped, then missing.
        (b"\x0b\x00\x01\x00\x00\x00\x01x\x00", "required field process"),
        (
            b"\x0c\x00\x01\x0b\x00\x01\x00\x00\x00\x01s\x00\x0f\x00\x02\x0b\x00\x00\x00\x01\x00",
            "list<Span> sent with elements of wire type 11",
        ),
        # A string claiming 2 GiB.
        (b"\x0c\x00\x01\x0b\x00\x01\x7f\xff\xff\xff", "malformed Thrift"),
        # 100 nested structs in an unknown field: deeper than skip() follows.
        (b"\x0c\x00\x09" * 100, "malformed Thrift"),
        (encode(jbatch(jspan("a")), compact=True), "malformed Thrift"),
    ],
)
async def test_a_bad_body_is_400_and_the_receiver_keeps_serving(serve, body, fragment):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    status, text, _ = await post(receiver, body)
    assert (status, fragment in text) == (400, True), text
    assert sink.batches == []
    assert (await post(receiver, GOOD))[0] == 202
    assert sink.item_count == 1


@pytest.mark.parametrize("compact", [False, True])
def test_every_truncation_and_many_corruptions_are_value_errors(compact):
    """Nothing malformed raises anything but ValueError, which the receivers answer."""
    batch = jbatch(
        jspan(
            "a",
            tags={"s": "x", "b": True, "d": 1.0, "raw": b"r"},
            references=[ref(0, 2)],
            logs=[T.Log(timestamp=1, fields=[tag("event", "e")])],
        ),
        process_tags=[tag("host", "h")],
    )
    bodies = [encode(batch, compact), agent_datagram(batch, compact)]
    rng = random.Random(7)
    for body in bodies:
        cuts = [body[:n] for n in range(len(body))]
        flips = []
        for _ in range(1500):
            corrupt = bytearray(body)
            for _ in range(rng.randint(1, 4)):
                corrupt[rng.randrange(len(corrupt))] = rng.randrange(256)
            flips.append(bytes(corrupt))
        for data in cuts + flips:
            try:
                if body is bodies[0]:
                    thrift_codec.decode_batch(data, compact)
                else:
                    thrift_codec.decode_agent_message(data, compact)
            except ValueError:
                pass


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/x-thrift", 202),
        ("application/vnd.apache.thrift.binary", 202),
        ("application/x-thrift; charset=binary", 202),
        ("application/json", 415),
        ("application/x-protobuf", 415),
        (None, 415),
    ],
)
async def test_content_types(serve, content_type, status):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    got, text, _ = await post(receiver, GOOD, content_type=content_type)
    assert got == status, text
    if status == 415:
        assert "application/x-thrift" in text and sink.batches == []


async def test_gzip_bodies_and_other_paths_and_methods(serve):
    import gzip

    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={})
    status, _, _ = await post(receiver, gzip.compress(GOOD), **{"Content-Encoding": "gzip"})
    assert status == 202
    async with aiohttp.ClientSession() as session:
        base = f"http://{receiver.thrift_http_endpoint}"
        async with session.get(f"{base}/api/traces") as response:
            assert response.status == 405
        async with session.post(f"{base}/api/v2/spans", data=GOOD) as response:
            assert response.status == 404


async def test_a_refusing_pipeline_is_503_with_retry_after_and_other_errors_500(serve):
    receiver = await serve(
        ErrorConsumer(RetryableError("queue full", retry_after=2.5)), thrift_http={}
    )
    status, text, headers = await post(receiver, GOOD)
    assert (status, "queue full" in text, headers["Retry-After"]) == (503, True, "3")
    receiver = await serve(ErrorConsumer(PermanentError("bad data")), thrift_http={})
    status, text, _ = await post(receiver, GOOD)
    assert (status, "bad data" in text) == (500, True)


# --- gRPC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_v2(tmp_path_factory):
    """The protoc-generated messages and stub of testdata/jaeger_api_v2.proto."""
    from pathlib import Path

    import grpc_tools
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("jaeger_api_v2")
    testdata = Path(__file__).parent / "testdata"
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{testdata}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "jaeger_api_v2.proto",
        ]
    )
    assert code == 0
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("jaeger_api_v2_pb2")
        pb2_grpc = importlib.import_module("jaeger_api_v2_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc


def kv(pb2, key: str, value):
    out = pb2.KeyValue(key=key)
    if isinstance(value, bool):
        out.v_type, out.v_bool = pb2.BOOL, value
    elif isinstance(value, int):
        out.v_type, out.v_int64 = pb2.INT64, value
    elif isinstance(value, float):
        out.v_type, out.v_float64 = pb2.FLOAT64, value
    elif isinstance(value, bytes):
        out.v_type, out.v_binary = pb2.BINARY, value
    else:
        out.v_type, out.v_str = pb2.STRING, value
    return out


async def post_spans(pb2_grpc, receiver, request):
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        return await pb2_grpc.CollectorServiceStub(channel).PostSpans(request, timeout=5)


async def test_grpc_post_spans(serve, api_v2):
    pb2, pb2_grpc = api_v2
    sink = SinkConsumer()
    receiver = await serve(sink, grpc={})
    trace_id = bytes(range(1, 17))
    request = pb2.PostSpansRequest(
        batch=pb2.Batch(
            process=pb2.Process(service_name="frontend", tags=[kv(pb2, "hostname", "web-1")]),
            spans=[
                pb2.Span(
                    trace_id=trace_id,
                    span_id=bytes([1] * 8),
                    operation_name="GET /",
                    references=[
                        pb2.SpanRef(
                            trace_id=trace_id, span_id=bytes([9] * 8), ref_type=pb2.CHILD_OF
                        ),
                        pb2.SpanRef(
                            trace_id=trace_id, span_id=bytes([8] * 8), ref_type=pb2.FOLLOWS_FROM
                        ),
                    ],
                    tags=[
                        kv(pb2, "span.kind", "server"),
                        kv(pb2, "s", "x"),
                        kv(pb2, "b", True),
                        kv(pb2, "i", 42),
                        kv(pb2, "d", 0.5),
                        kv(pb2, "raw", b"\x01"),
                        kv(pb2, "otel.scope.name", "lib"),
                        kv(pb2, "otel.scope.version", "3"),
                        kv(pb2, "w3c.tracestate", "a=b"),
                        kv(pb2, "otel.status_code", "OK"),
                    ],
                    logs=[
                        pb2.Log(
                            timestamp={"seconds": 1_700_000_000, "nanos": 7},
                            fields=[kv(pb2, "event", "cache miss"), kv(pb2, "key", "u1")],
                        )
                    ],
                    start_time={"seconds": 1_700_000_000, "nanos": 123},
                    duration={"seconds": 1, "nanos": 5},
                ),
                # Its own process: a resource of its own; a 64-bit (8-byte) trace id.
                pb2.Span(
                    trace_id=bytes.fromhex("463ac35c9f6413ad"),
                    span_id=bytes([2] * 8),
                    operation_name="worker",
                    process=pb2.Process(service_name="worker"),
                ),
                pb2.Span(),  # empty: skipped
            ],
        )
    )
    response = await post_spans(pb2_grpc, receiver, request)
    assert response == pb2.PostSpansResponse()
    spans = by_name(sink)
    assert set(spans) == {"GET /", "worker"}
    rs, ss, span = spans["GET /"]
    assert attrs(rs.resource) == {"service.name": "frontend", "host.name": "web-1"}
    assert (ss.scope.name, ss.scope.version) == ("lib", "3")
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        trace_id,
        bytes([1] * 8),
        bytes([9] * 8),
    )
    assert span.kind == span.SPAN_KIND_SERVER
    assert (span.status.code, span.trace_state) == (OK, "a=b")
    assert attrs(span) == {"s": "x", "b": True, "i": 42, "d": 0.5, "raw": b"\x01"}
    assert span.start_time_unix_nano == 1_700_000_000_000_000_123
    assert span.end_time_unix_nano == 1_700_000_001_000_000_128
    ((event),) = span.events
    assert (event.name, event.time_unix_nano, attrs(event)) == (
        "cache miss",
        1_700_000_000_000_000_007,
        {"key": "u1"},
    )
    assert [(link.span_id, attrs(link)) for link in span.links] == [
        (bytes([8] * 8), {"opentracing.ref_type": "follows_from"})
    ]
    worker_rs, _, worker = spans["worker"]
    assert attrs(worker_rs.resource) == {"service.name": "worker"}
    assert worker.trace_id == bytes(8) + bytes.fromhex("463ac35c9f6413ad")


async def test_grpc_errors(serve, api_v2):
    pb2, pb2_grpc = api_v2
    sink = SinkConsumer()
    receiver = await serve(sink, grpc={})
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        raw = channel.unary_unary("/jaeger.api_v2.CollectorService/PostSpans")
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await raw(b"\xff\xff\xff", timeout=5)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    wrong_id = pb2.PostSpansRequest(
        batch=pb2.Batch(spans=[pb2.Span(trace_id=bytes(16), span_id=b"\x01\x02")])
    )
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await post_spans(pb2_grpc, receiver, wrong_id)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "span 0: invalid span_id: 2 bytes" in bad.value.details()
    good = pb2.PostSpansRequest(
        batch=pb2.Batch(spans=[pb2.Span(trace_id=bytes(16), span_id=bytes(8), operation_name="a")])
    )
    await post_spans(pb2_grpc, receiver, good)
    assert sink.item_count == 1

    refusing = await serve(ErrorConsumer(RetryableError("memory limit")), grpc={})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await post_spans(pb2_grpc, refusing, good)
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "memory limit",
    )


async def test_grpc_bearer_token_auth(serve, api_v2):
    pb2, pb2_grpc = api_v2
    extension = bearertokenauth.factory.create(
        make_settings(Kind.EXTENSION, "bearertokenauth"),
        bearertokenauth.Config.model_validate({"token": "t0ken"}),
    )
    await extension.start(None)
    sink = SinkConsumer()
    receiver = await serve(
        sink,
        extensions={ComponentID.parse("bearertokenauth"): extension},
        grpc={"auth": {"authenticator": "bearertokenauth"}},
    )
    request = pb2.PostSpansRequest(
        batch=pb2.Batch(spans=[pb2.Span(trace_id=bytes(16), span_id=bytes(8), operation_name="a")])
    )
    async with grpc.aio.insecure_channel(receiver.grpc_endpoint) as channel:
        stub = pb2_grpc.CollectorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused_call:
            await stub.PostSpans(request, timeout=5)
        assert refused_call.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stub.PostSpans(request, timeout=5, metadata=(("authorization", "Bearer t0ken"),))
    assert sink.item_count == 1


# --- UDP ----------------------------------------------------------------------------------------


def refused(receiver: JaegerReceiver, transport: str) -> float | None:
    return receiver.settings.telemetry.registry.get_sample_value(
        "otelcol_receiver_refused_spans_total", {"receiver": "jaeger", "transport": transport}
    )


async def test_udp_drops_what_it_cannot_take_and_keeps_serving(serve):
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_compact={"max_packet_size": 2000})
    endpoint = receiver.thrift_compact_endpoint
    zipkin = TMemoryBuffer()
    Agent.Client(TCompactProtocol(zipkin)).emitZipkinBatch([])
    big = jbatch(*[jspan(f"s{i}", span_id=i + 1, tags={"pad": "x" * 100}) for i in range(30)])
    for datagram in (
        b"\x82\x21garbage",
        zipkin.getvalue(),
        agent_datagram(big, compact=True),  # over max_packet_size
        agent_datagram(jbatch(jspan("a")), compact=False),  # binary sent to the compact port
    ):
        send_udp(endpoint, datagram)
    send_udp(endpoint, agent_datagram(jbatch(jspan("kept")), compact=True))
    await sink.wait_for(1)
    assert list(by_name(sink)) == ["kept"]
    assert refused(receiver, "udp_thrift_compact") == 4


async def test_udp_pipeline_refusals_are_counted_and_queued_datagrams_drain_at_shutdown(serve):
    receiver = await serve(ErrorConsumer(RetryableError("full")), thrift_binary={"workers": 1})
    send_udp(
        receiver.thrift_binary_endpoint, agent_datagram(jbatch(jspan("a"), jspan("b", 2)), False)
    )
    async with asyncio.timeout(5):
        while refused(receiver, "udp_thrift_binary") != 2:
            await asyncio.sleep(0.01)

    sink = SinkConsumer()
    receiver = await serve(sink, thrift_binary={"workers": 2, "queue_size": 3})
    agent = receiver._binary
    assert agent is not None
    for i in range(5):  # 2 over queue_size, before any worker ran
        agent.enqueue(agent_datagram(jbatch(jspan(f"q{i}")), compact=False))
    await receiver.shutdown()
    assert sorted(by_name(sink)) == ["q0", "q1", "q2"]
    assert refused(receiver, "udp_thrift_binary") == 2


async def test_a_taken_port_fails_start_and_releases_the_others(serve):
    sink = SinkConsumer()
    first = await serve(sink, thrift_http={})
    config = Config.model_validate(
        {
            "protocols": {
                "grpc": {"endpoint": "127.0.0.1:0"},
                "thrift_http": {"endpoint": first.thrift_http_endpoint},
            }
        }
    )
    receiver = JaegerReceiver(make_settings(Kind.RECEIVER, "jaeger"), config, {Signal.TRACES: sink})
    with pytest.raises(OSError):
        await receiver.start(StaticHost())
    assert receiver._grpc is not None and receiver._grpc._server is None


# --- end to end ---------------------------------------------------------------------------------

E2E_CONFIG = """
receivers:
  jaeger:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{grpc}"}}
      thrift_http: {{endpoint: "127.0.0.1:{http}"}}
      thrift_compact: {{endpoint: "127.0.0.1:{compact}"}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [jaeger], processors: [batch], exporters: [file]}}
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_protocol_through_a_coldtail_process_into_a_file(tmp_path, api_v2):
    pb2, pb2_grpc = api_v2
    ports = {"grpc": free_port(), "http": free_port(), "compact": free_udp_port()}
    out = tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(E2E_CONFIG.format(out=out, **ports))

    def services() -> set:
        if not out.exists():
            return set()
        return {
            get_attr(rs.resource.attributes, "service.name")
            for request in read_requests(out)[Signal.TRACES]
            for rs in request.resource_spans
        }

    with CollectorProcess(config) as collector:
        http = JaegerExporter(collector_endpoint=f"http://127.0.0.1:{ports['http']}/api/traces")
        sdk_spans(http)
        udp = JaegerExporter(agent_host_name="127.0.0.1", agent_port=ports["compact"])
        sdk_spans(udp, service="udp-svc")
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
            span = pb2.Span(trace_id=bytes(range(16)), span_id=bytes(8), operation_name="g")
            request = pb2.PostSpansRequest(
                batch=pb2.Batch(process=pb2.Process(service_name="grpc-svc"), spans=[span])
            )
            pb2_grpc.CollectorServiceStub(channel).PostSpans(request, timeout=5)
        deadline = time.monotonic() + 10
        while services() != {"checkout", "udp-svc", "grpc-svc"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.stop() == 0, collector.log
    assert services() == {"checkout", "udp-svc", "grpc-svc"}
    spans = [
        span for request in read_requests(out)[Signal.TRACES] for _, _, span in iter_spans(request)
    ]
    assert len(spans) == 11


async def test_large_requests_are_decoded_off_the_event_loop_and_arrive_whole(serve, api_v2):
    pb2, pb2_grpc = api_v2
    sink = SinkConsumer()
    receiver = await serve(sink, thrift_http={}, grpc={})
    many = [jspan(f"s{i}", span_id=i + 1, tags={"pad": "x" * 50}) for i in range(3000)]
    body = encode(jbatch(*many))
    assert len(body) > 256 * 1024
    assert (await post(receiver, body))[0] == 202
    spans = [
        pb2.Span(trace_id=bytes(16), span_id=i.to_bytes(8, "big"), operation_name="x" * 100)
        for i in range(1, 3001)
    ]
    request = pb2.PostSpansRequest(batch=pb2.Batch(spans=spans))
    assert request.ByteSize() > 256 * 1024
    await post_spans(pb2_grpc, receiver, request)
    assert sink.item_count == 6000
