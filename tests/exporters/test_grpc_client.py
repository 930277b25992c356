"""The HTTP/2 unary gRPC client against grpcio's own server: statuses, trailers, flow control,
stream limits, deadlines and lost connections."""

import asyncio
import gzip

import grpc
import pytest

from collector.exporters.grpc_client import GrpcCallError, GrpcChannel

METHOD = "/test.Echo/Call"


class Server:
    """A grpc.aio server whose handler `behaviour(request, context)` answers each call."""

    def __init__(self, behaviour, **options) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[bytes, dict]] = []
        self.cancelled = asyncio.Event()
        self.options = list(options.items())
        self.port = 0

    async def start(self, port: int = 0) -> "Server":
        async def handle(request: bytes, context: grpc.aio.ServicerContext):
            self.calls.append((request, dict(context.invocation_metadata() or ())))
            try:
                return await self.behaviour(request, context)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0), *self.options])
        handler = grpc.unary_unary_rpc_method_handler(handle)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", {"Call": handler}),)
        )
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.stop(None)


async def echo(request: bytes, context) -> bytes:
    return request


@pytest.fixture
async def server():
    s = await Server(echo).start()
    yield s
    await s.stop()


async def test_a_call_carries_message_compression_and_metadata(server):
    channel = GrpcChannel("127.0.0.1", server.port, user_agent="coldtail")
    try:
        assert await channel.unary(METHOD, b"plain") == b"plain"
        answer = await channel.unary(
            METHOD, gzip.compress(b"zipped"), encoding="gzip", metadata=(("x-tenant", "acme"),)
        )
    finally:
        await channel.close()
    assert answer == b"zipped"  # the server decompressed it: the encoding was announced
    request, metadata = server.calls[-1]
    assert request == b"zipped"
    assert metadata["x-tenant"] == "acme"
    assert metadata["user-agent"].startswith("coldtail")


async def test_a_message_far_beyond_the_flow_control_windows_arrives_whole():
    s = await Server(echo, **{"grpc.max_receive_message_length": 64 << 20}).start()
    message = bytes(range(256)) * (24 << 12)  # 24 MiB: hundreds of windows of 64 KiB
    channel = GrpcChannel("127.0.0.1", s.port)
    try:
        assert await channel.unary(METHOD, message, timeout=30) == message
    finally:
        await channel.close()
        await s.stop()


async def test_the_status_details_and_binary_trailers_come_back():
    async def refuse(request, context):
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "quota 100% used, retry later",
            trailing_metadata=(("retry-bin", b"\x00\xff\x01"), ("region", "eu")),
        )

    s = await Server(refuse).start()
    channel = GrpcChannel("127.0.0.1", s.port)
    try:
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(METHOD, b"x")
    finally:
        await channel.close()
        await s.stop()
    error = caught.value
    assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details == "quota 100% used, retry later"  # percent-decoded
    assert ("retry-bin", b"\x00\xff\x01") in error.metadata
    assert ("region", "eu") in error.metadata


async def test_an_unknown_method_is_unimplemented(server):
    channel = GrpcChannel("127.0.0.1", server.port)
    try:
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary("/test.Echo/Missing", b"x")
    finally:
        await channel.close()
    assert caught.value.code is grpc.StatusCode.UNIMPLEMENTED


async def test_the_deadline_ends_the_call_on_both_sides():
    async def stall(request, context):
        await asyncio.sleep(30)
        return b""

    s = await Server(stall).start()
    channel = GrpcChannel("127.0.0.1", s.port)
    try:
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(METHOD, b"x", timeout=0.3)
        await asyncio.wait_for(s.cancelled.wait(), 5)  # grpc-timeout told the server too
        # The connection stays usable for the next call.
        s.behaviour = echo
        assert await channel.unary(METHOD, b"again", timeout=5) == b"again"
    finally:
        await channel.close()
        await s.stop()
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_calls_wait_for_the_servers_stream_limit():
    in_flight = peak = 0

    async def slow(request, context):
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return request

    s = await Server(slow, **{"grpc.max_concurrent_streams": 2}).start()
    channel = GrpcChannel("127.0.0.1", s.port)
    try:
        answers = await asyncio.gather(
            *(channel.unary(METHOD, bytes([i]), timeout=10) for i in range(10))
        )
    finally:
        await channel.close()
        await s.stop()
    assert answers == [bytes([i]) for i in range(10)]
    assert peak <= 2


async def test_an_unreachable_server_is_unavailable_and_a_restarted_one_is_reached_again():
    s = await Server(echo).start()
    port = s.port
    channel = GrpcChannel("127.0.0.1", port)
    try:
        assert await channel.unary(METHOD, b"before") == b"before"
        await s.stop()
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(METHOD, b"during", timeout=5)
        assert caught.value.code is grpc.StatusCode.UNAVAILABLE
        s = await Server(echo).start(port)
        assert await channel.unary(METHOD, b"after", timeout=5) == b"after"
    finally:
        await channel.close()
        await s.stop()


async def test_a_call_in_flight_when_the_server_stops_is_unavailable_so_it_is_sent_again():
    started = asyncio.Event()

    async def slow(request, context):
        started.set()
        await asyncio.sleep(0.3)
        return request

    s = await Server(slow).start()
    channel = GrpcChannel("127.0.0.1", s.port)
    try:
        call = asyncio.ensure_future(channel.unary(METHOD, b"in flight", timeout=10))
        await started.wait()
        await s.server.stop(grace=5)  # GOAWAY, then the call's answer, which h2 cannot take
        with pytest.raises(GrpcCallError) as in_flight:
            await call
        with pytest.raises(GrpcCallError) as after:
            await channel.unary(METHOD, b"after", timeout=5)
    finally:
        await channel.close()
    assert in_flight.value.code is grpc.StatusCode.UNAVAILABLE
    assert after.value.code is grpc.StatusCode.UNAVAILABLE


async def test_a_peer_that_is_not_http2_is_unavailable():
    async def http1(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(http1, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    channel = GrpcChannel("127.0.0.1", port)
    try:
        with pytest.raises(GrpcCallError) as caught:
            await channel.unary(METHOD, b"x", timeout=5)
    finally:
        await channel.close()
        listener.close()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
