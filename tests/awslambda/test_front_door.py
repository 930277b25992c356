"""The Lambda extension's front door: immediate answers over real sockets, the bounded FIFO
queue, runtimeDone and hand-over detection, and the forwarder handing the queue, in order, to a
real otlp receiver."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import socket
import time

import pytest

from collector.awslambda.extension.forwarder import Forwarder
from collector.awslambda.extension.front_door import (
    INVOCATION_DONE_HEADER,
    OTLP,
    TELEMETRY,
    Delivery,
    FrontDoor,
)
from collector.awslambda.extension.http11 import request
from collector.awslambda.extension.plan import PRIVATE_ENDPOINT
from collector.core import otlpjson
from collector.core.pdata import get_attr, iter_spans
from collector.core.signals import Signal
from collector.receivers import lambda_telemetry, otlp
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


@pytest.fixture
def front_door():
    door = FrontDoor()
    yield door
    door.close()


def post(endpoint: str, path: str, body: bytes, headers: dict) -> tuple[int, dict, bytes]:
    return request(endpoint, "POST", path, body, headers, timeout=5)


def traces_body(name: str) -> bytes:
    return make_traces(1, name=name).SerializeToString()


def test_otlp_posts_are_answered_at_once_in_their_content_type(front_door):
    endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
    protobuf_body = traces_body("a")
    status, headers, body = post(endpoint, "/v1/traces", protobuf_body, {"Content-Type": PROTOBUF})
    assert (status, headers["content-type"], body) == (200, PROTOBUF, b"")
    json_body = otlpjson.dumps(make_traces(1, name="b")).encode()
    status, headers, body = post(
        endpoint, "/v1/traces", json_body, {"Content-Type": "application/json; charset=utf-8"}
    )
    assert (status, headers["content-type"], json.loads(body)) == (200, JSON, {})
    first, second = front_door.take(1), front_door.take(1)
    assert (first.listener, first.path, first.content_type) == ("otlp", "/v1/traces", PROTOBUF)
    assert first.body == protobuf_body and first.seq == 1
    assert second.body == json_body and second.seq == 2


def test_keep_alive_connection_serves_many_requests_and_refuses_what_the_receiver_would(
    front_door,
):
    endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
    host, port = endpoint.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)

    def answer() -> tuple[int, bytes]:
        response = connection.getresponse()
        return response.status, response.read()

    try:
        for i in range(3):
            connection.request("POST", "/v1/logs", b"x" * i, {"Content-Type": PROTOBUF})
            assert answer() == (200, b"")
        connection.request("POST", "/v1/traces", b"{}", {"Content-Type": "text/plain"})
        assert answer()[0] == 415
        connection.request("POST", "/elsewhere", b"", {"Content-Type": PROTOBUF})
        assert answer()[0] == 404
        connection.request("GET", "/v1/traces")
        response = connection.getresponse()
        response.read()
        assert (response.status, response.getheader("Allow")) == (405, "POST")
        # Chunked bodies too.
        connection.putrequest("POST", "/v1/metrics")
        connection.putheader("Content-Type", PROTOBUF)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        connection.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert answer() == (200, b"")
    finally:
        connection.close()
    assert front_door.last_seq == 4
    assert [front_door.take(1).body for _ in range(4)] == [b"", b"x", b"xx", b"abcde"]


def test_runtime_done_is_noted_from_telemetry_deliveries(front_door):
    endpoint = front_door.listen("lambda_telemetry", TELEMETRY, "127.0.0.1:0")
    events = [
        {"type": "platform.start", "record": {"requestId": "r-1"}},
        {"type": "platform.runtimeDone", "record": {"requestId": "r-1", "status": "success"}},
    ]
    assert not front_door.wait_runtime_done("r-1", 0.05)
    status, _, _ = post(endpoint, "/", json.dumps(events).encode(), {"Content-Type": JSON})
    assert status == 200
    assert front_door.wait_runtime_done("r-1", 1)
    assert not front_door.wait_runtime_done("r-2", 0.05)
    # Not JSON, or not an array: answered and kept for the receiver to judge.
    assert post(endpoint, "/", b"platform.runtimeDone{", {})[0] == 200
    assert post(endpoint, "/", b'{"type": "platform.runtimeDone"}', {})[0] == 200
    assert front_door.last_seq == 3


def test_an_invocation_is_over_once_its_spans_are_handed_over_or_runtime_done_arrived(
    front_door,
):
    otlp_endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
    telemetry_endpoint = front_door.listen("lambda_telemetry", TELEMETRY, "127.0.0.1:0")
    assert not front_door.hands_over
    headers = {"Content-Type": PROTOBUF}
    # A timeout warning's snapshot, say: spans of r-1, but not its last.
    post(otlp_endpoint, "/v1/traces", traces_body("a"), headers)
    assert not front_door.wait_invocation_over("r-1", 0.05)
    post(otlp_endpoint, "/v1/traces", traces_body("b"), {**headers, INVOCATION_DONE_HEADER: "r-1"})
    assert front_door.wait_invocation_over("r-1", 1)
    assert front_door.hands_over
    # Handed over is not Lambda's report of the invocation.
    assert not front_door.wait_runtime_done("r-1", 0.05)
    done = [{"type": "platform.runtimeDone", "record": {"requestId": "r-2", "status": "failure"}}]
    post(telemetry_endpoint, "/", json.dumps(done).encode(), {"Content-Type": JSON})
    assert front_door.wait_invocation_over("r-2", 1)


def test_the_instrumentation_and_the_front_door_name_the_same_header():
    from instrumentation import exporter

    assert exporter.INVOCATION_DONE_HEADER == INVOCATION_DONE_HEADER


def test_unflushed_age_counts_from_the_oldest_delivery_since_the_last_flush(front_door):
    endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
    assert front_door.unflushed_age() == 0.0
    post(endpoint, "/v1/traces", traces_body("a"), {"Content-Type": PROTOBUF})
    time.sleep(0.05)
    post(endpoint, "/v1/traces", traces_body("b"), {"Content-Type": PROTOBUF})
    assert front_door.unflushed_age() >= 0.05
    front_door.flushing()
    assert front_door.unflushed_age() == 0.0


def test_past_the_cap_requests_get_503_with_retry_after_and_nothing_is_queued():
    front_door = FrontDoor(max_queued_bytes=1000)
    try:
        endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
        assert post(endpoint, "/v1/traces", b"x" * 600, {"Content-Type": PROTOBUF})[0] == 200
        status, headers, _ = post(endpoint, "/v1/traces", b"y" * 600, {"Content-Type": PROTOBUF})
        assert (status, headers["retry-after"]) == (503, "1")
        # Bigger than the whole cap: never acceptable.
        assert post(endpoint, "/v1/traces", b"z" * 1001, {"Content-Type": PROTOBUF})[0] == 413
        assert (front_door.last_seq, front_door.queued_bytes) == (1, 600)
        assert front_door.refused == 1
        # Once forwarded, the room is back.
        front_door.forwarded(front_door.take(1))
        assert post(endpoint, "/v1/traces", b"y" * 600, {"Content-Type": PROTOBUF})[0] == 200
    finally:
        front_door.close()


def test_an_address_in_use_cannot_be_served(front_door):
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        with pytest.raises(OSError, match="cannot listen"):
            front_door.listen("otlp", OTLP, f"127.0.0.1:{taken.getsockname()[1]}", PATHS)
    finally:
        taken.close()


async def test_forwarder_replays_the_queue_in_order_into_a_real_otlp_receiver(front_door):
    sink = SinkConsumer()
    config = otlp.Config.model_validate({"protocols": {"http": {"endpoint": PRIVATE_ENDPOINT}}})
    receiver = otlp.OtlpReceiver(make_settings("receiver", "otlp"), config, {Signal.TRACES: sink})
    await receiver.start(StaticHost())
    forwarder = Forwarder(front_door)
    try:
        endpoint = front_door.listen("otlp", OTLP, "127.0.0.1:0", PATHS)
        names = [f"span {i}" for i in range(20)]

        def send_all() -> None:
            for i, name in enumerate(names):
                if i % 3 == 1:
                    body, headers = otlpjson.dumps(make_traces(1, name=name)).encode(), {}
                    headers["Content-Type"] = JSON
                elif i % 3 == 2:
                    body = gzip.compress(traces_body(name))
                    headers = {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}
                else:
                    body, headers = traces_body(name), {"Content-Type": PROTOBUF}
                assert post(endpoint, "/v1/traces", body, headers)[0] == 200

        # Received before the collector runs, then forwarded once it does.
        await asyncio.to_thread(send_all)
        assert sink.batches == []
        forwarder.start({"otlp": receiver.http_endpoint})
        assert await asyncio.to_thread(forwarder.drain, 5)
        await asyncio.to_thread(send_all)
        assert await asyncio.to_thread(forwarder.drain, 5)
        received = [span.name for batch in sink.batches for _, _, span in iter_spans(batch)]
        assert received == names + names
        assert (forwarder.dropped, front_door.queued_bytes) == (0, 0)
    finally:
        forwarder.stop()
        front_door.close()
        await receiver.shutdown()


async def test_forwarder_feeds_the_telemetry_receiver_and_drops_what_it_refuses(front_door):
    sink = SinkConsumer()
    config = lambda_telemetry.Config.model_validate({"endpoint": PRIVATE_ENDPOINT})
    receiver = lambda_telemetry.LambdaTelemetryReceiver(
        make_settings("receiver", "lambda_telemetry"), config, {Signal.TRACES: sink}
    )
    await receiver.start(StaticHost())
    forwarder = Forwarder(front_door)
    try:
        endpoint = front_door.listen("lambda_telemetry", TELEMETRY, "127.0.0.1:0")
        record = {"requestId": "r-1", "status": "timeout", "metrics": {"durationMs": 10}}
        events = [{"type": "platform.runtimeDone", "record": record}]
        assert post(endpoint, "/", b"not json", {"Content-Type": JSON})[0] == 200
        assert post(endpoint, "/", json.dumps(events).encode(), {"Content-Type": JSON})[0] == 200
        forwarder.start({"lambda_telemetry": receiver.endpoint})
        assert await asyncio.to_thread(forwarder.drain, 5)
        assert forwarder.dropped == 1  # the receiver's 400
        (span,) = [span for batch in sink.batches for _, _, span in iter_spans(batch)]
        assert get_attr(span.attributes, "coldtail.timeout") is True
    finally:
        forwarder.stop()
        front_door.close()
        await receiver.shutdown()


def test_without_a_collector_the_forwarder_drops_so_the_queue_stays_bounded(front_door):
    forwarder = Forwarder(front_door)
    for _ in range(3):
        front_door.put(Delivery("otlp", "/v1/traces", PROTOBUF, "", b"x" * 10))
    forwarder.start(None)
    try:
        assert forwarder.drain(5)
        assert (forwarder.dropped, front_door.queued_bytes) == (3, 0)
    finally:
        forwarder.stop()
