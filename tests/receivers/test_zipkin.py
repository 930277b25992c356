"""The zipkin receiver with the OpenTelemetry SDK's Zipkin JSON exporter as the client, and raw
Zipkin v2 bodies for what a tracer may send."""

import asyncio
import gzip
import json

import aiohttp
import pytest
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from collector.core.component import Kind
from collector.core.consumer import RetryableError
from collector.core.pdata import Traces, get_attr, iter_spans
from collector.core.signals import Signal
from collector.receivers import zipkin
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer


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


async def post(receiver, body: bytes, **headers) -> tuple[int, str]:
    headers.setdefault("Content-Type", "application/json")
    url = f"http://{receiver.endpoint}/api/v2/spans"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def test_the_sdks_zipkin_exporter_arrives_as_otlp(serve):
    sink = SinkConsumer()
    receiver = await serve(sink)
    exporter = ZipkinExporter(endpoint=f"http://{receiver.endpoint}/api/v2/spans")
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop", "1.2")

    def trace() -> None:  # the exporter posts synchronously: not on the receiver's loop
        with tracer.start_as_current_span("GET /pay", kind=SpanKind.SERVER) as parent:
            parent.set_attribute("http.route", "/pay")
            parent.add_event("retry", {"attempt": 2})
            with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
                child.set_status(StatusCode.ERROR, "card declined")
        provider.shutdown()

    await asyncio.to_thread(trace)
    spans = {span.name: (rs, ss, span) for rs, ss, span in iter_spans(merged(sink))}
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


def merged(sink: SinkConsumer) -> Traces:
    batch = Traces()
    for part in sink.batches:
        batch.MergeFrom(part)
    return batch


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
    assert (await post(receiver, body, **{"Content-Encoding": "gzip"}))[0] == 202
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


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"{not json", "application/json", 400, "not JSON"),
        (b'{"traceId": "1"}', "application/json", 400, "expected a JSON array"),
        (
            json.dumps([{**ZIPKIN_SPAN, "id": "xyz"}]).encode(),
            "application/json",
            400,
            "span 0: id",
        ),
        (json.dumps([{**ZIPKIN_SPAN, "traceId": ""}]).encode(), "application/json", 400, "traceId"),
        (b"\x0a\x01", "application/x-protobuf", 415, "use JSON"),
    ],
)
async def test_bad_requests_get_a_clear_status_and_nothing_reaches_the_pipeline(
    serve, body, content_type, status, fragment
):
    sink = SinkConsumer()
    receiver = await serve(sink)
    got, text = await post(receiver, body, **{"Content-Type": content_type})
    assert (got, fragment in text) == (status, True), text
    assert sink.batches == []
    assert (await post(receiver, json.dumps([ZIPKIN_SPAN]).encode()))[0] == 202


async def test_a_refusing_pipeline_is_503_with_retry_after(serve):
    receiver = await serve(ErrorConsumer(RetryableError("queue full")))
    status, text = await post(receiver, json.dumps([ZIPKIN_SPAN]).encode())
    assert status == 503 and "queue full" in text
