"""collector.core.grpc_server against real clients: grpcio for what callers see, and a raw
HTTP/2 client on the `h2` library (with hand-written frames where h2 would refuse to misbehave)
for the protocol's rules. References: RFC 9113 (HTTP/2) and gRPC's PROTOCOL-HTTP2.md."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import logging
import random
import re
import struct
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from collector.core import grpc_server
from collector.core.grpc_server import Call, GrpcServer, Listener, RpcError, ServerLimits

ECHO = "/test.Echo/Echo"
SLOW = "/test.Echo/Slow"
FAIL = "/test.Echo/Fail"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CLIENT_MAX_FRAME = 16_384  # SETTINGS_MAX_FRAME_SIZE's initial value, which h2 keeps


async def echo(call: Call) -> bytes:
    return call.message


@dataclass
class Running:
    server: GrpcServer
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def serve():
    """Starts servers on loopback (handlers, then ServerLimits' fields); stops them after."""
    servers: list[GrpcServer] = []

    async def start(handlers: dict | None = None, **limits) -> Running:
        server = GrpcServer(
            handlers or {ECHO: echo},
            ServerLimits(**limits),
            logging.getLogger("tests.grpc"),
            Listener("127.0.0.1:0"),
        )
        endpoint = await server.start()
        servers.append(server)
        return Running(server, int(endpoint.rpartition(":")[2]))

    yield start
    for server in servers:
        await asyncio.wait_for(server.stop(0), 5)


# --- the raw client ------------------------------------------------------------------------


def grpc_message(message: bytes, compressed: bool = False) -> bytes:
    """A length-prefixed message (PROTOCOL-HTTP2: Length-Prefixed-Message)."""
    return bytes((compressed,)) + len(message).to_bytes(4, "big") + message


def request_headers(
    path: str = ECHO, method: bytes = b"POST", content_type: bytes = b"application/grpc", *extra
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":path", path.encode()),
        (b":authority", b"127.0.0.1"),
        (b"content-type", content_type),
        (b"te", b"trailers"),
        *extra,
    ]


def parse_frames(data: bytes) -> tuple[list[tuple[Frame, int]], bytes]:
    """Complete frames in `data` with their payload lengths, and the incomplete rest."""
    frames, view = [], memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append((frame, length))
        view = view[9 + length :]
    return frames, bytes(view)


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes, length: int = -1) -> bytes:
    """A frame as bytes, its length field free to lie."""
    n = len(payload) if length < 0 else length
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


@dataclass
class Reply:
    """What came back on one stream: the response headers and trailers together."""

    fields: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    reset: int | None = None

    @property
    def grpc_status(self) -> int | None:
        value = self.fields.get(b"grpc-status")
        return None if value is None else int(value)

    @property
    def message(self) -> bytes:
        """The one response message, without its prefix."""
        assert (
            self.data[:1] == b"\0" and int.from_bytes(self.data[1:5], "big") == len(self.data) - 5
        )
        return self.data[5:]


class H2Client:
    """HTTP/2 over a plain socket, framed by h2; raw bytes may be written in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.eof = False
        self.give_window = True  # acknowledge received DATA, so that windows reopen

    async def flush(self) -> None:
        await self.write(self.conn.data_to_send())

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read(self) -> bytes:
        """Bytes from the server; b"" once it has closed (or reset) the connection."""
        try:
            data = await self.reader.read(1 << 16)
        except ConnectionResetError:
            data = b""
        self.eof = not data
        return data

    async def until(self, done: Callable[[h2.events.Event], bool], timeout: float = 5) -> None:
        """Feed the server's bytes to h2 until an event is `done` or the connection ends."""
        async with asyncio.timeout(timeout):
            while not self.eof:
                data = await self.read()
                events = self.conn.receive_data(data) if data else []
                for event in events:
                    if isinstance(event, h2.events.DataReceived) and self.give_window:
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                self.events += events
                await self.flush()
                if any(map(done, events)):
                    return

    async def settle(self) -> None:
        """Wait for the server's SETTINGS, so that h2 knows its windows and frame size."""
        await self.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))

    def request(
        self, stream_id: int, body: bytes, headers: list | None = None, **data_args
    ) -> None:
        self.conn.send_headers(stream_id, headers or request_headers())
        self.conn.send_data(stream_id, body, end_stream=True, **data_args)

    async def reply(self, stream_id: int, timeout: float = 5) -> Reply:
        """Wait until `stream_id` ends (or the connection does); what it carried."""

        def ends(e: h2.events.Event) -> bool:
            return isinstance(e, h2.events.ConnectionTerminated) or (
                isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                and e.stream_id == stream_id
            )

        if not any(map(ends, self.events)):
            await self.until(ends, timeout)
        reply = Reply()
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                reply.fields.update(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                reply.data += event.data
            elif isinstance(event, h2.events.StreamReset):
                reply.reset = event.error_code
        return reply

    async def call(self, stream_id: int, body: bytes, headers: list | None = None) -> Reply:
        self.request(stream_id, body, headers)
        await self.flush()
        return await self.reply(stream_id)

    async def goaway(self, timeout: float = 5) -> h2.events.ConnectionTerminated:
        await self.until(lambda e: isinstance(e, h2.events.ConnectionTerminated), timeout)
        ended = [e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)]
        assert ended, "the connection ended without a GOAWAY"
        return ended[0]

    async def closed(self, timeout: float = 5) -> bytes:
        """Everything the server still sends until it closes the connection."""
        received = b""
        async with asyncio.timeout(timeout):
            while data := await self.read():
                received += data
        return received


@pytest.fixture
async def h2c():
    """Opens raw clients to a port, by default with the preface sent and the server's
    SETTINGS received; closes them after the test."""
    clients: list[H2Client] = []

    async def connect(port: int, start: bool = True) -> H2Client:
        client = H2Client(*await asyncio.open_connection("127.0.0.1", port))
        clients.append(client)
        if start:
            await client.flush()
            await client.settle()
        return client

    yield connect
    for client in clients:
        client.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(client.writer.wait_closed(), 1)


async def assert_serves(connect, port: int) -> None:
    """A new connection is served: the server survived what came before."""
    client = await connect(port)
    reply = await client.call(1, grpc_message(b"still here"))
    assert reply.grpc_status == 0 and reply.message == b"still here"


async def wait_for_state(channel: grpc.aio.Channel, state: grpc.ChannelConnectivity, s: float):
    async with asyncio.timeout(s):
        while (now := channel.get_state()) != state:
            await channel.wait_for_state_change(now)


class Sleeper:
    """A handler that sleeps (`delay`), noting starts, cancellations and how many run at once."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.running = self.most = 0

    async def __call__(self, call: Call) -> bytes:
        self.started.set()
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.running -= 1
        return b"slept:" + call.message


# --- grpcio clients ------------------------------------------------------------------------


async def test_handler_response_reaches_the_client(serve):
    """The handler gets the request message and method; its bytes are the response."""
    calls: list[Call] = []

    async def handler(call: Call) -> bytes:
        calls.append(call)
        return b"re:" + call.message

    running = await serve({ECHO: handler})
    async with grpc.aio.insecure_channel(running.target) as channel:
        assert await channel.unary_unary(ECHO)(b"\x00hello\xff", timeout=5) == b"re:\x00hello\xff"
        assert await channel.unary_unary(ECHO)(b"", timeout=5) == b"re:"
    assert [c.method for c in calls] == [ECHO, ECHO]
    assert [c.message for c in calls] == [b"\x00hello\xff", b""]


async def test_rpc_error_arrives_as_its_status_message_and_details(serve):
    """RpcError becomes grpc-status, a percent-encoded grpc-message (non-ASCII, '%' and a
    literal "%41" must come back as they were) and grpc-status-details-bin, base64 without
    padding (PROTOCOL-HTTP2: Status-Message, Binary-Header); details of every length mod 3."""
    message = 'bad 100% value %41 — ünïcødé ✓ "quoted"\ttab'
    details = [
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message="x" * n).SerializeToString()
        for n in (10, 11, 12)
    ]
    assert sorted(len(d) % 3 for d in details) == [0, 1, 2]
    errors = iter(details)

    async def fail(call: Call) -> bytes:
        raise RpcError(code_pb2.INVALID_ARGUMENT, message, next(errors))

    running = await serve({FAIL: fail})
    async with grpc.aio.insecure_channel(running.target) as channel:
        for expected in details:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(FAIL)(b"x", timeout=5)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert raised.value.details() == message
            trailers = dict(raised.value.trailing_metadata())
            assert trailers["grpc-status-details-bin"] == expected


async def test_rich_error_details_decode(serve):
    """A google.rpc.Status with a BadRequest detail decodes on the client as sent."""
    violation = error_details_pb2.BadRequest.FieldViolation(field="spans", description="empty")
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    status = status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message="no", details=[detail])

    async def fail(call: Call) -> bytes:
        raise RpcError(status.code, status.message, status.SerializeToString())

    running = await serve({FAIL: fail})
    async with grpc.aio.insecure_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(FAIL)(b"x", timeout=5)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    sent = dict(raised.value.trailing_metadata())["grpc-status-details-bin"]
    got = status_pb2.Status.FromString(sent)
    assert got == status
    unpacked = error_details_pb2.BadRequest()
    assert got.details[0].Unpack(unpacked) and unpacked.field_violations[0].field == "spans"


async def test_unexpected_exception_is_internal_and_the_server_goes_on(serve, caplog):
    """An exception that is not RpcError is INTERNAL (and logged); the same connection then
    serves the next call."""

    async def broken(call: Call) -> bytes:
        raise ValueError("boom")

    running = await serve({FAIL: broken, ECHO: echo})
    async with grpc.aio.insecure_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(FAIL)(b"x", timeout=5)
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert await channel.unary_unary(ECHO)(b"next", timeout=5) == b"next"
    assert any(r.levelno == logging.ERROR and FAIL in r.getMessage() for r in caplog.records)


async def test_unknown_method_is_unimplemented(serve):
    running = await serve()
    async with grpc.aio.insecure_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary("/test.Echo/Missing")(b"x", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_gzip_request_is_decompressed(serve):
    """grpc-encoding gzip with the compressed flag: the handler sees the inflated message."""
    message = b"compressible " * 10_000
    running = await serve()
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = channel.unary_unary(ECHO)
        assert await stub(message, timeout=5, compression=grpc.Compression.Gzip) == message


async def test_max_recv_msg_size_uncompressed(serve):
    """A message of exactly max_recv_msg_size passes; one byte more is RESOURCE_EXHAUSTED,
    and the connection goes on."""
    running = await serve(max_recv_msg_size=1000)
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = channel.unary_unary(ECHO)
        assert await stub(b"a" * 1000, timeout=5) == b"a" * 1000
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(b"a" * 1001, timeout=5)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await stub(b"ok", timeout=5) == b"ok"


async def test_max_recv_msg_size_applies_to_the_inflated_message(serve):
    """The limit is on the decompressed size: 1000 zeros inflate to the limit and pass, 100 000
    zeros (about a hundred bytes compressed) are RESOURCE_EXHAUSTED."""
    assert len(gzip.compress(bytes(100_000))) < 1000
    running = await serve(max_recv_msg_size=1000)
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = channel.unary_unary(ECHO)
        assert await stub(bytes(1000), timeout=5, compression=grpc.Compression.Gzip) == bytes(1000)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(bytes(100_000), timeout=5, compression=grpc.Compression.Gzip)
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_client_deadline_cancels_the_handler(serve):
    """A client timeout is DEADLINE_EXCEEDED and the handler's task is cancelled, not left to
    run its 5 s."""
    sleeper = Sleeper(5)
    running = await serve({SLOW: sleeper})
    async with grpc.aio.insecure_channel(running.target) as channel:
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(SLOW)(b"x", timeout=0.2)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - began < 2
        await asyncio.wait_for(sleeper.cancelled.wait(), 2)


async def test_client_cancel_cancels_the_handler(serve):
    """Cancelling a call (RST_STREAM CANCEL) cancels the handler's task."""
    sleeper = Sleeper(5)
    running = await serve({SLOW: sleeper, ECHO: echo})
    async with grpc.aio.insecure_channel(running.target) as channel:
        call = channel.unary_unary(SLOW)(b"x", timeout=10)
        await asyncio.wait_for(sleeper.started.wait(), 2)
        assert call.cancel()
        await asyncio.wait_for(sleeper.cancelled.wait(), 2)
        assert await channel.unary_unary(ECHO)(b"after", timeout=5) == b"after"


async def test_metadata_and_peer_reach_the_handler(serve):
    """Custom metadata arrives with lower-case keys, -bin values base64-decoded to bytes (of
    every length mod 3, so padded or not); transport headers are not metadata; the peer is
    named as gRPC names it."""
    calls: list[Call] = []

    async def record(call: Call) -> bytes:
        calls.append(call)
        return b""

    running = await serve({ECHO: record})
    sent = [
        ("x-text", "Hello, World"),
        ("x-one-bin", b"\x07"),
        ("x-two-bin", b"\x00\xff"),
        ("x-three-bin", b"\xfe\x00\x01"),
        ("x-bytes-bin", bytes(range(256))),
    ]
    async with grpc.aio.insecure_channel(running.target) as channel:
        await channel.unary_unary(ECHO)(b"x", timeout=5, metadata=sent)
    (call,) = calls
    for pair in sent:
        assert pair in call.metadata
    keys = {key for key, _ in call.metadata}
    assert not keys & {"content-type", "te", "grpc-timeout", "grpc-encoding", ":path"}
    assert not any(key.startswith("grpc-accept-encoding") for key in keys)
    peer = re.fullmatch(r"ipv4:127\.0\.0\.1:(\d+)", call.peer)
    assert peer and int(peer[1]) not in (0, running.port)


async def test_many_concurrent_calls_on_one_channel(serve):
    """200 calls at once on one connection are multiplexed and each gets its own answer."""
    sleeper = Sleeper(0.05)
    running = await serve({SLOW: sleeper})
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = channel.unary_unary(SLOW)
        requests = [i.to_bytes(2, "big") * (i % 7 + 1) for i in range(200)]
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(stub(r, timeout=10) for r in requests))
    assert answers == [b"slept:" + r for r in requests]
    assert sleeper.most > 1


async def test_large_responses_respect_the_clients_flow_control(serve):
    """3 MB answers, three times on one channel, arrive intact; the client's BDP pings
    meanwhile do not count as abuse. (grpcio opens its windows wide and early, so the window
    itself is checked with h2 below.)"""
    payload = random.Random(7).randbytes(3_000_000)

    async def big(call: Call) -> bytes:
        return payload

    running = await serve({ECHO: big})
    async with grpc.aio.insecure_channel(running.target) as channel:
        for _ in range(3):
            assert await channel.unary_unary(ECHO)(b"", timeout=10) == payload


async def test_max_concurrent_streams_queues_grpc_calls(serve):
    """SETTINGS_MAX_CONCURRENT_STREAMS=1: five concurrent slow calls all succeed, one at a
    time (RFC 9113, 5.1.2)."""
    sleeper = Sleeper(0.1)
    running = await serve({SLOW: sleeper}, max_concurrent_streams=1)
    async with grpc.aio.insecure_channel(running.target) as channel:
        stub = channel.unary_unary(SLOW)
        answers = await asyncio.gather(*(stub(bytes([i]), timeout=5) for i in range(5)))
    assert answers == [b"slept:" + bytes([i]) for i in range(5)]
    assert sleeper.most == 1


async def test_streams_over_max_concurrent_streams_are_refused(serve, h2c):
    """RFC 9113, 5.1.2: a client opening more streams than SETTINGS_MAX_CONCURRENT_STREAMS
    allows (here before it has seen the setting) has the extra ones reset REFUSED_STREAM,
    which tells it they were not processed; the stream within the limit is answered."""
    sleeper = Sleeper(0.1)
    running = await serve({SLOW: sleeper}, max_concurrent_streams=1)
    client = await h2c(running.port, start=False)
    client.request(1, grpc_message(b"first"), request_headers(SLOW))
    client.request(3, grpc_message(b"second"), request_headers(SLOW))
    await client.flush()
    assert (await client.reply(3)).reset == ErrorCodes.REFUSED_STREAM
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == b"slept:first"
    assert sleeper.most == 1


async def test_max_connection_idle_closes_an_idle_connection(serve):
    """max_connection_idle: with no call for 0.3 s the server sends GOAWAY and the channel goes
    back to IDLE; the next call reconnects."""
    running = await serve(max_connection_idle=0.3)
    async with grpc.aio.insecure_channel(running.target) as channel:
        assert await channel.unary_unary(ECHO)(b"x", timeout=5) == b"x"
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        began = time.monotonic()
        await wait_for_state(channel, grpc.ChannelConnectivity.IDLE, 3)
        assert time.monotonic() - began > 0.2
        assert await channel.unary_unary(ECHO)(b"y", timeout=5) == b"y"


async def test_max_connection_idle_does_not_count_time_in_calls(serve):
    """A connection is idle only without calls: a call of 0.6 s on a 0.3 s idle limit leaves the
    connection READY when it ends."""
    running = await serve({SLOW: Sleeper(0.6)}, max_connection_idle=0.3)
    async with grpc.aio.insecure_channel(running.target) as channel:
        assert await channel.unary_unary(SLOW)(b"x", timeout=5) == b"slept:x"
        assert channel.get_state() == grpc.ChannelConnectivity.READY


async def test_max_connection_age_closes_a_connection(serve):
    """max_connection_age: after 0.3 s (+-10%) the server sends GOAWAY however busy or idle the
    connection; the channel goes back to IDLE and the next call reconnects."""
    running = await serve(max_connection_age=0.3)
    async with grpc.aio.insecure_channel(running.target) as channel:
        assert await channel.unary_unary(ECHO)(b"x", timeout=5) == b"x"
        await wait_for_state(channel, grpc.ChannelConnectivity.IDLE, 3)
        assert await channel.unary_unary(ECHO)(b"y", timeout=5) == b"y"


async def test_max_connection_age_lets_a_call_in_progress_finish(serve):
    """Ageing is a graceful GOAWAY: a call under way when the age passes still completes."""
    running = await serve({SLOW: Sleeper(0.5)}, max_connection_age=0.2)
    async with grpc.aio.insecure_channel(running.target) as channel:
        assert await channel.unary_unary(SLOW)(b"x", timeout=5) == b"slept:x"


async def test_keepalive_closes_a_connection_that_does_not_answer_pings(serve):
    """keepalive_time / keepalive_timeout: a peer silent after its preface and SETTINGS gets a
    PING after 0.2 s of quiet, and is disconnected when no ACK comes 0.2 s later."""
    running = await serve(keepalive_time=0.2, keepalive_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        began = time.monotonic()
        writer.write(PREFACE + SettingsFrame(0).serialize())
        received = b""
        async with asyncio.timeout(3):
            while data := await reader.read(1 << 16):
                received += data
        elapsed = time.monotonic() - began
    finally:
        writer.close()
    frames, _ = parse_frames(received)
    assert any(isinstance(f, PingFrame) and "ACK" not in f.flags for f, _ in frames)
    assert 0.3 < elapsed < 3


async def test_keepalive_keeps_a_connection_that_answers_pings(serve, h2c):
    """The other side of keepalive: a client that ACKs the pings (h2 does) stays connected
    through several keepalive periods and is served."""
    running = await serve(keepalive_time=0.2, keepalive_timeout=0.2)
    client = await h2c(running.port)
    with pytest.raises(TimeoutError):
        await client.until(lambda e: False, timeout=1)
    assert not client.eof
    assert sum(isinstance(e, h2.events.PingReceived) for e in client.events) >= 2
    reply = await client.call(1, grpc_message(b"alive"))
    assert reply.grpc_status == 0 and reply.message == b"alive"


async def test_too_many_pings_without_calls_are_told_off(serve, h2c):
    """Ping policing as gRPC's: without calls, pings are allowed every 2 hours; each early one
    is a strike and after more than 2 strikes the server answers GOAWAY ENHANCE_YOUR_CALM with
    debug data "too_many_pings"."""
    running = await serve()
    client = await h2c(running.port)
    for sent in range(1, 11):
        client.conn.ping(sent.to_bytes(8, "big"))
        await client.flush()
        await client.until(
            lambda e: isinstance(e, (h2.events.PingAckReceived, h2.events.ConnectionTerminated))
        )
        if any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events):
            break
    acked = sum(isinstance(e, h2.events.PingAckReceived) for e in client.events)
    goaway = await client.goaway()
    # The first ping is fine, two strikes are tolerated, the third is one too many.
    assert (sent, acked) == (4, 3)
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == b"too_many_pings"
    await client.closed()


async def test_pings_permitted_without_calls(serve, h2c):
    """permit_pings_without_calls with min_ping_interval 0: any number of pings is fine."""
    running = await serve(permit_pings_without_calls=True, min_ping_interval=0)
    client = await h2c(running.port)
    for i in range(10):
        client.conn.ping(i.to_bytes(8, "big"))
    await client.flush()
    await client.until(
        lambda e: isinstance(e, h2.events.PingAckReceived) and e.ping_data == (9).to_bytes(8)
    )
    assert sum(isinstance(e, h2.events.PingAckReceived) for e in client.events) == 10
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
    reply = await client.call(1, grpc_message(b"x"))
    assert reply.grpc_status == 0


# --- the raw client: gRPC's rules ----------------------------------------------------------


async def test_not_grpc_content_type_is_http_415(serve, h2c):
    """PROTOCOL-HTTP2: a request whose content-type is not application/grpc is answered with
    HTTP 415, not with a gRPC status."""
    client = await h2c((await serve()).port)
    headers = request_headers(ECHO, b"POST", b"text/plain")
    reply = await client.call(1, grpc_message(b"x"), headers)
    assert reply.fields[b":status"] == b"415"
    assert b"grpc-status" not in reply.fields


async def test_get_is_http_405(serve, h2c):
    """gRPC is POST only: a GET is HTTP 405."""
    client = await h2c((await serve()).port)
    client.conn.send_headers(1, request_headers(ECHO, b"GET"), end_stream=True)
    await client.flush()
    reply = await client.reply(1)
    assert reply.fields[b":status"] == b"405"


async def test_two_messages_in_a_unary_request_are_internal(serve, h2c):
    """A unary request carries exactly one message: two are INTERNAL, never handled."""
    handled: list[Call] = []

    async def record(call: Call) -> bytes:
        handled.append(call)
        return b""

    client = await h2c((await serve({ECHO: record})).port)
    reply = await client.call(1, grpc_message(b"one") + grpc_message(b"two"))
    assert reply.fields[b":status"] == b"200"
    assert reply.grpc_status == code_pb2.INTERNAL
    assert handled == []


async def test_empty_request_body_is_internal(serve, h2c):
    """HEADERS with END_STREAM and no message at all: INTERNAL."""
    client = await h2c((await serve()).port)
    client.conn.send_headers(1, request_headers(), end_stream=True)
    await client.flush()
    assert (await client.reply(1)).grpc_status == code_pb2.INTERNAL


async def test_compressed_flag_without_grpc_encoding_is_internal(serve, h2c):
    """PROTOCOL-HTTP2: a Compressed-Flag of 1 needs a grpc-encoding other than identity."""
    client = await h2c((await serve()).port)
    body = grpc_message(gzip.compress(b"x"), compressed=True)
    assert (await client.call(1, body)).grpc_status == code_pb2.INTERNAL


async def test_unsupported_grpc_encoding_is_unimplemented(serve, h2c):
    """PROTOCOL-HTTP2: an encoding the server does not support is UNIMPLEMENTED, and the
    server says what it accepts in grpc-accept-encoding."""
    client = await h2c((await serve()).port)
    headers = request_headers(ECHO, b"POST", b"application/grpc", (b"grpc-encoding", b"br"))
    reply = await client.call(1, grpc_message(b"x", compressed=True), headers)
    assert reply.grpc_status == code_pb2.UNIMPLEMENTED
    accepted = reply.fields[b"grpc-accept-encoding"].split(b",")
    assert b"gzip" in accepted and b"br" not in accepted


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [(b"gzip", gzip.compress), (b"deflate", zlib.compress)],
)
async def test_compressed_requests_decode(serve, h2c, encoding, compress):
    """Compressed messages as sent by hand (so certainly compressed): gzip and deflate (zlib),
    the encodings grpc-accept-encoding names."""
    client = await h2c((await serve()).port)
    headers = request_headers(ECHO, b"POST", b"application/grpc", (b"grpc-encoding", encoding))
    reply = await client.call(1, grpc_message(compress(b"zipped " * 100), True), headers)
    assert reply.grpc_status == 0 and reply.message == b"zipped " * 100


async def test_server_enforces_grpc_timeout(serve, h2c):
    """PROTOCOL-HTTP2 grpc-timeout: the server ends the call with DEADLINE_EXCEEDED itself and
    cancels the handler, without the client resetting the stream."""
    sleeper = Sleeper(5)
    client = await h2c((await serve({SLOW: sleeper})).port)
    headers = request_headers(SLOW, b"POST", b"application/grpc", (b"grpc-timeout", b"100m"))
    began = time.monotonic()
    reply = await client.call(1, grpc_message(b"x"), headers)
    assert reply.grpc_status == code_pb2.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 2
    await asyncio.wait_for(sleeper.cancelled.wait(), 2)


async def test_status_trailers_fit_the_clients_max_frame_size(serve, h2c):
    """RFC 9113, 4.2: no frame may exceed the peer's SETTINGS_MAX_FRAME_SIZE (16 384 here, the
    initial value); a longer header block goes on in CONTINUATION frames (6.10). A long status
    message (an exporter's error text, say) must reach the client as its status rather than
    break the connection: h2, as any client keeping the 16 384 default, takes an oversized
    frame for a connection error. (grpcio advertises larger frames, so it does not notice.)"""
    message = "e" * 20_000

    async def fail(call: Call) -> bytes:
        raise RpcError(code_pb2.INVALID_ARGUMENT, message)

    client = await h2c((await serve({FAIL: fail})).port)
    client.request(1, grpc_message(b"x"), request_headers(FAIL))
    await client.flush()
    received = b""
    async with asyncio.timeout(5):
        while not any(
            "END_STREAM" in f.flags or isinstance(f, (RstStreamFrame, GoAwayFrame))
            for f, _ in parse_frames(received)[0]
        ):
            data = await client.read()
            assert data, "the connection closed before the call ended"
            received += data
    frames, _ = parse_frames(received)
    largest = max(length for _, length in frames)
    assert largest <= CLIENT_MAX_FRAME, (
        f"the server sent a {largest}-byte frame; the client allows {CLIENT_MAX_FRAME}"
    )
    block = b"".join(f.data for f, _ in frames if isinstance(f, (HeadersFrame, ContinuationFrame)))
    fields = dict(client.conn.decoder.decode(block, raw=True))
    assert fields[b"grpc-status"] == b"3" and fields[b"grpc-message"] == message.encode()


async def test_status_message_that_cannot_be_utf8_still_ends_the_call(serve):
    """An RpcError message is a str; one holding a lone surrogate (text decoded with
    "surrogateescape", say) cannot be UTF-8 encoded for grpc-message, but the call must still
    end with its status code rather than never being answered."""

    async def fail(call: Call) -> bytes:
        raise RpcError(
            code_pb2.INVALID_ARGUMENT, b"bad byte \xff".decode("utf-8", "surrogateescape")
        )

    running = await serve({FAIL: fail})
    async with grpc.aio.insecure_channel(running.target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(FAIL)(b"x", timeout=1)
    # Should the server's task have died, collect it now: its "exception never retrieved" log,
    # if left to a collection inside pytest's report, trips Python 3.11's ast module.
    await asyncio.sleep(0.1)
    gc.collect()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
        f"expected INVALID_ARGUMENT, got {raised.value.code()}: the call was never answered"
    )


# --- the raw client: HTTP/2's rules --------------------------------------------------------


async def test_garbage_instead_of_the_preface_is_closed(serve, h2c):
    """RFC 9113, 3.4: an invalid connection preface is a connection error; the server closes."""
    running = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        # As long as the preface, so that only the preface check can reject it.
        writer.write(b"GET / HTTP/1.1\r\nHost:x\r\n")
        async with asyncio.timeout(3):
            while await reader.read(1 << 16):
                pass
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    await assert_serves(h2c, running.port)


async def test_data_beyond_the_stream_window_is_flow_control_error(serve, h2c, monkeypatch):
    """RFC 9113, 6.9.1: DATA beyond the advertised window is a FLOW_CONTROL_ERROR. The real
    window (4 MiB, given back as the server reads) cannot be overrun over loopback, so this
    server advertises 65 535 and one 70 000-byte DATA frame (under its 1 MiB frame size)
    overruns it."""
    monkeypatch.setattr(grpc_server, "_STREAM_WINDOW", 65_535)
    running = await serve(max_recv_msg_size=0)
    client = await h2c(running.port)
    client.conn.send_headers(1, request_headers())
    await client.flush()
    await client.write(DataFrame(1, grpc_message(bytes(70_000 - 5))).serialize())
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR
    monkeypatch.undo()
    await assert_serves(h2c, running.port)


async def test_window_update_overflow_is_flow_control_error(serve, h2c):
    """RFC 9113, 6.9.1: a WINDOW_UPDATE that takes the connection's send window beyond
    2^31-1 is a connection error FLOW_CONTROL_ERROR."""
    running = await serve()
    client = await h2c(running.port)
    await client.write(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize())
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR
    await assert_serves(h2c, running.port)


async def test_frame_over_the_max_frame_size_is_frame_size_error(serve, h2c):
    """RFC 9113, 4.2: a frame longer than our SETTINGS_MAX_FRAME_SIZE is FRAME_SIZE_ERROR, told
    from the frame header alone (the server must not wait for a payload that big)."""
    running = await serve()
    client = await h2c(running.port)
    max_frame = client.conn.remote_settings.max_frame_size
    client.conn.send_headers(1, request_headers())
    await client.flush()
    await client.write(raw_frame(0x0, 0, 1, b"\0" * 100, length=max_frame + 1))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.FRAME_SIZE_ERROR
    await assert_serves(h2c, running.port)


async def test_invalid_hpack_block_is_compression_error(serve, h2c):
    """RFC 9113, 4.3: a header block that does not decode (index 0, RFC 7541 6.1) is a
    connection error COMPRESSION_ERROR."""
    running = await serve()
    client = await h2c(running.port)
    await client.write(raw_frame(0x1, 0x4 | 0x1, 1, b"\x80"))
    goaway = await client.goaway()
    assert goaway.error_code == ErrorCodes.COMPRESSION_ERROR
    await assert_serves(h2c, running.port)


async def test_response_waits_for_the_clients_flow_control_window(serve, h2c):
    """RFC 9113, 6.9: the server sends no more DATA than the client's windows allow (h2 keeps
    65 535 for the stream and the connection), stalls there, and goes on when WINDOW_UPDATEs
    come. h2 also fails the test itself should a DATA frame overrun its window."""
    payload = random.Random(3).randbytes(200_000)

    async def big(call: Call) -> bytes:
        return payload

    client = await h2c((await serve({ECHO: big})).port)
    client.give_window = False
    client.request(1, grpc_message(b""))
    await client.flush()

    def received() -> int:
        return sum(len(e.data) for e in client.events if isinstance(e, h2.events.DataReceived))

    with pytest.raises(TimeoutError):  # nothing ends the stream while the window is shut
        await client.until(lambda e: False, timeout=0.3)
    assert received() == 65_535
    client.give_window = True
    client.conn.acknowledge_received_data(received(), 1)
    await client.flush()
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == payload


async def test_headers_continued_in_continuation_frames(serve, h2c):
    """RFC 9113, 6.10: a header block split over HEADERS and CONTINUATION frames."""
    client = await h2c((await serve()).port)
    frame_size = client.conn.max_outbound_frame_size
    client.conn.max_outbound_frame_size = 16  # h2 splits header blocks at this size
    client.conn.send_headers(1, request_headers(ECHO, b"POST", b"application/grpc", (b"x", b"y")))
    client.conn.max_outbound_frame_size = frame_size
    client.conn.send_data(1, grpc_message(b"continued"), end_stream=True)
    data = client.conn.data_to_send()
    kinds = [type(f) for f, _ in parse_frames(data)[0]]
    assert kinds.count(ContinuationFrame) >= 2
    await client.write(data)
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == b"continued"


async def test_padded_data(serve, h2c):
    """RFC 9113, 6.1: padding is stripped from DATA."""
    client = await h2c((await serve()).port)
    client.request(1, grpc_message(b"padded"), pad_length=50)
    await client.flush()
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == b"padded"


async def test_body_in_many_small_data_frames(serve, h2c):
    """A message spread over many DATA frames, the first ones shorter than the 5-byte prefix."""
    message = bytes(range(256)) * 8
    body = grpc_message(message)
    sizes = [1, 1, 2, 3, 7] + [11] * ((len(body) - 14) // 11 + 1)
    client = await h2c((await serve()).port)
    client.conn.send_headers(1, request_headers())
    offset = 0
    for size in sizes:
        client.conn.send_data(1, body[offset : offset + size])
        offset += size
    client.conn.end_stream(1)
    await client.flush()
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == message


async def test_request_written_byte_by_byte(serve, h2c):
    """Preface, SETTINGS, HEADERS and DATA each arrive a byte at a time: frames are put
    together from as many reads."""
    client = await h2c((await serve()).port, start=False)
    client.request(1, grpc_message(b"slowly"))
    data = client.conn.data_to_send()
    for i in range(len(data)):
        await client.write(data[i : i + 1])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    reply = await client.reply(1)
    assert reply.grpc_status == 0 and reply.message == b"slowly"


async def test_stop_lets_a_call_finish_and_refuses_new_streams(serve, h2c):
    """stop(grace): GOAWAY NO_ERROR naming the last stream taken (RFC 9113, 6.8); the call in
    progress completes; a stream opened after it is refused (REFUSED_STREAM, safe to retry);
    stop returns once the call is answered, well before the grace ends."""
    sleeper = Sleeper(0.3)
    running = await serve({SLOW: sleeper})
    client = await h2c(running.port)
    client.request(1, grpc_message(b"x"), request_headers(SLOW))
    await client.flush()
    await asyncio.wait_for(sleeper.started.wait(), 2)
    began = time.monotonic()
    stop = asyncio.create_task(running.server.stop(2))
    # h2 cannot follow a connection past GOAWAY, so from here frames are read by hand.
    received = b""
    async with asyncio.timeout(2):
        while not any(isinstance(f, GoAwayFrame) for f, _ in parse_frames(received)[0]):
            received += await client.read()
    client.request(3, grpc_message(b"late"), request_headers(ECHO))
    await client.flush()
    async with asyncio.timeout(3):
        while data := await client.read():
            received += data
        await stop
    elapsed = time.monotonic() - began
    frames = [f for f, _ in parse_frames(received)[0]]
    (goaway,) = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaway.error_code == 0 and goaway.last_stream_id == 1
    assert [f.error_code for f in frames if isinstance(f, RstStreamFrame) and f.stream_id == 3] == [
        ErrorCodes.REFUSED_STREAM
    ]
    data = b"".join(f.data for f in frames if isinstance(f, DataFrame) and f.stream_id == 1)
    assert data == grpc_message(b"slept:x")
    trailers = [f for f in frames if isinstance(f, HeadersFrame) and f.stream_id == 1][-1]
    assert "END_STREAM" in trailers.flags
    assert dict(client.conn.decoder.decode(trailers.data, raw=True))[b"grpc-status"] == b"0"
    assert not sleeper.cancelled.is_set()
    assert 0.1 < elapsed < 1.5
