"""A unary gRPC server over HTTP/2 on the event loop, for receivers (the gRPC over HTTP/2
specification, PROTOCOL-HTTP2.md; HTTP/2 itself is RFC 9113, HPACK RFC 7541).

Why not grpcio's server: side by side (`python -m bench.grpc_server`: 100-span OTLP requests,
4 in flight, each server parsing them and answering), grpcio's aio server costs 460-490 us of
CPU per request and this module 230-240, of which about 100 are parsing the request; a server
on the `h2` library on the event loop cost about as much as grpcio's. grpcio's server hands
every call between its own threads and the loop through a socket pair (~30 system calls per
request); here a request is one read and an answer one write. The frames a unary server needs
are few: the request's HEADERS (+CONTINUATION) and DATA, an answer of HEADERS, DATA and
trailers, and the connection's SETTINGS, PING, WINDOW_UPDATE, RST_STREAM and GOAWAY. HPACK
decoding keeps state across requests and is the `hpack` library's; answers use literal fields
only, so they need none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import math
import os
import random
import struct
import time
import urllib.parse
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import hpack
from google.rpc import code_pb2

from collector.core.auth import ServerAuthenticator, Unauthenticated
from collector.core.endpoints import ListenError, split_endpoint, with_port
from collector.core.tls import ServerTLS, TLSServerConfig

# hpack logs every header it decodes at DEBUG, credentials included: never ours to log.
logging.getLogger("hpack").setLevel(logging.INFO)

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types and flags (RFC 9113, section 6).
_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
_PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# Settings and error codes used here.
_HEADER_TABLE_SIZE, _MAX_CONCURRENT_STREAMS, _INITIAL_WINDOW_SIZE = 0x1, 0x3, 0x4
_MAX_FRAME_SIZE, _MAX_HEADER_LIST_SIZE = 0x5, 0x6
_NO_ERROR, _PROTOCOL_ERROR, _INTERNAL_ERROR, _FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
_STREAM_CLOSED = 0x5
_FRAME_SIZE_ERROR, _REFUSED_STREAM, _COMPRESSION_ERROR = 0x6, 0x7, 0x9
_ENHANCE_YOUR_CALM = 0xB

_FRAME_HEADER = struct.Struct(">BHBBI")  # a 24-bit length as 8 + 16 bits
_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535
# Ours: frames up to 1 MiB, so that a request of a few hundred KiB is a few frames; windows
# large enough that requests seldom wait for a window update.
_OUR_MAX_FRAME = 1 << 20
_STREAM_WINDOW = 4 << 20
_CONNECTION_WINDOW = 16 << 20
_MAX_HEADER_LIST = 64 << 10
# gRPC core's defaults: a client pinging more often than allowed is told off this many
# times, then disconnected; without calls, pings are allowed every 2 hours at most.
_MAX_PING_STRIKES = 2
_IDLE_PING_INTERVAL_S = 7200.0
_ENCODINGS = {"identity": None, "gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# The transport's request headers that the call does not read (it reads content-type,
# grpc-encoding and grpc-timeout): none of them is the caller's metadata.
_TRANSPORT_HEADERS = frozenset({b"te", b"grpc-accept-encoding"})


class RpcError(Exception):
    """Ends a call with a gRPC status (a google.rpc.Code) other than OK; `details` is an
    encoded google.rpc.Status sent as grpc-status-details-bin."""

    def __init__(self, code: int, message: str, details: bytes = b"") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Call:
    """One unary call: its method path, its metadata (lower-case keys; values of `-bin` keys
    as bytes), the peer as gRPC names it ("ipv4:127.0.0.1:5000") and the request message."""

    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    peer: str
    message: bytes


Handler = Callable[[Call], Awaitable[bytes]]


@dataclass(frozen=True)
class ServerLimits:
    """What the server allows and how it keeps connections alive; 0 means no limit / never,
    as gRPC servers take them."""

    max_recv_msg_size: int = 4 << 20
    max_concurrent_streams: int = 0
    max_connection_idle: float = 0.0
    max_connection_age: float = 0.0
    max_connection_age_grace: float = 0.0
    keepalive_time: float = 7200.0
    keepalive_timeout: float = 20.0
    min_ping_interval: float = 300.0
    permit_pings_without_calls: bool = False


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME_HEADER.pack(n >> 16, n & 0xFFFF, kind, flags, stream_id) + payload


def _hpack_length(n: int) -> bytes:
    """An HPACK integer with a 7-bit prefix and the Huffman bit clear (RFC 7541, 5.1)."""
    if n < 127:
        return bytes((n,))
    out = [127]
    n -= 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def _field(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing and a new name: it leaves the client's
    dynamic table as it was, so answers need no encoder state."""
    return b"\x00" + _hpack_length(len(name)) + name + _hpack_length(len(value)) + value


_STATUS_200 = b"\x88"  # static table entry 8
_GRPC_HEADERS = (
    _STATUS_200
    + _field(b"content-type", b"application/grpc")
    + _field(b"grpc-accept-encoding", b"identity,deflate,gzip")
)
_OK_TRAILERS = _field(b"grpc-status", b"0")


def _status_fields(code: int, message: str, details: bytes) -> bytes:
    fields = _field(b"grpc-status", str(code).encode())
    if message:
        # Percent-encoded as the specification asks: printable ASCII but '%' as is.
        quoted = urllib.parse.quote(
            message, errors="backslashreplace", safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"
        )
        fields += _field(b"grpc-message", quoted.encode())
    if details:
        fields += _field(b"grpc-status-details-bin", base64.b64encode(details).rstrip(b"="))
    return fields


def _timeout_s(value: bytes) -> float | None:
    text = value.decode("ascii", "replace")
    unit = _TIMEOUT_UNITS.get(text[-1:])
    if unit is None or not text[:-1].isdigit() or len(text) > 9:
        return None
    return int(text[:-1]) * unit


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as e:
        raise RpcError(code_pb2.INTERNAL, f"cannot decompress the message: {e}") from None
    if len(out) > limit:
        raise _too_large(limit + 1, limit)
    if not inflater.eof:
        raise RpcError(code_pb2.INTERNAL, "cannot decompress the message: truncated")
    return out


def _too_large(size: int, limit: int) -> RpcError:
    return RpcError(
        code_pb2.RESOURCE_EXHAUSTED, f"received message larger than max ({size} vs. {limit})"
    )


@dataclass(eq=False)
class _Stream:
    id: int
    method: str = ""
    metadata: tuple[tuple[str, str | bytes], ...] = ()
    wbits: int | None = None
    timeout_s: float | None = None
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    unacked: int = 0  # bytes received and not yet given back in a WINDOW_UPDATE
    receiving: bool = True  # until the client's END_STREAM
    answered: bool = False  # our answer (or a part of it) is sent
    send_window: int = _DEFAULT_WINDOW
    outbox: bytes = b""  # answer data waiting for a window
    trailers: bytes = b""
    task: asyncio.Task | None = None
    deadline: asyncio.TimerHandle | None = None


@dataclass(frozen=True)
class Listener:
    """Where and how a server listens: `endpoint` (host:port; port 0 picks one), the `tls`
    block, the authenticator every call must satisfy (UNAUTHENTICATED otherwise), and the
    config key of the endpoint, named when it cannot be listened on."""

    endpoint: str
    tls: TLSServerConfig | None = None
    auth: ServerAuthenticator | None = None
    key: str | None = None


class GrpcServer:
    """Serves unary gRPC methods, `handlers` by path ("/package.Service/Method"). A handler
    returns the encoded response or raises RpcError; any other exception is INTERNAL."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        limits: ServerLimits,
        log: logging.Logger | logging.LoggerAdapter,
        listener: Listener,
    ) -> None:
        self.handlers = dict(handlers)
        self.limits = limits
        self.log = log
        self.listener = listener
        self._server: asyncio.Server | None = None
        self._tls: ServerTLS | None = None
        self._connections: set[_Connection] = set()

    async def start(self) -> str:
        """Listen; returns the bound host:port. ListenError when the endpoint cannot be
        listened on, ValueError naming the key of an unusable certificate file."""
        endpoint = self.listener.endpoint
        host, port = split_endpoint(endpoint)
        self._tls = ServerTLS.of(self.listener.tls)
        context = ServerTLS.context_of(self._tls)
        if context is not None:
            context.set_alpn_protocols(["h2"])
        try:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _Connection(self), host or None, port, ssl=context, reuse_address=True
            )
        except OSError as e:
            await self.stop(0)
            raise ListenError(endpoint, e, key=self.listener.key) from None
        return with_port(endpoint, self._server.sockets[0].getsockname()[1])

    def authenticate(self, call: Call) -> None:
        """RpcError UNAUTHENTICATED unless the call's metadata satisfies the authenticator."""
        if self.listener.auth is not None:
            metadata = {k: v for k, v in call.metadata if isinstance(v, str)}
            try:
                self.listener.auth.authenticate(metadata)
            except Unauthenticated as e:
                raise RpcError(code_pb2.UNAUTHENTICATED, str(e)) from None

    async def stop(self, grace_s: float) -> None:
        """Stop listening, tell clients to go away, let calls in progress finish for up to
        `grace_s`, then close every connection."""
        if self._tls is not None:
            await self._tls.stop()
            self._tls = None
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        for connection in list(self._connections):
            connection.go_away(_NO_ERROR)
        deadline = time.monotonic() + grace_s
        while any(c.streams for c in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._connections):
            connection.close()
        await server.wait_closed()


class _Connection(asyncio.Protocol):
    """One client connection: frames in, calls out, answers back."""

    def __init__(self, server: GrpcServer) -> None:
        self.server = server
        self.limits = server.limits
        self.streams: dict[int, _Stream] = {}
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._peer = ""
        self._decoder = hpack.Decoder()
        self._decoder.max_header_list_size = _MAX_HEADER_LIST
        self._pending: list[bytes] = []  # received bytes short of `_need`
        self._pending_size = 0
        self._need = len(_PREFACE)
        self._preface_seen = False
        self._header_block: list[bytes] | None = None  # a HEADERS awaiting CONTINUATION
        self._header_stream = 0
        self._header_end_stream = False
        self._last_stream_id = 0
        self._out: list[bytes] = []
        self._unacked = 0  # connection-level bytes to give back
        self._send_window = _DEFAULT_WINDOW
        self._peer_initial_window = _DEFAULT_WINDOW
        self._peer_max_frame = 16_384
        self._blocked: dict[int, _Stream] = {}
        self._going_away = False
        self._timers: dict[str, asyncio.TimerHandle] = {}  # by purpose: one of each at most
        self._last_read = time.monotonic()
        self._last_ping = -math.inf
        self._ping_strikes = 0
        self._ping_sent: bytes | None = None

    # --- life -------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = transport = cast(asyncio.Transport, transport)
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple) and len(address) >= 2:
            host, port = address[0], address[1]
            self._peer = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.server._connections.add(self)
        limits = self.limits
        settings = [
            (_INITIAL_WINDOW_SIZE, _STREAM_WINDOW),
            (_MAX_FRAME_SIZE, _OUR_MAX_FRAME),
            (_MAX_HEADER_LIST_SIZE, _MAX_HEADER_LIST),
        ]
        if limits.max_concurrent_streams:
            settings.append((_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams))
        payload = b"".join(struct.pack(">HI", key, value) for key, value in settings)
        increment = _CONNECTION_WINDOW - _DEFAULT_WINDOW
        self._out += [
            _frame(_SETTINGS, 0, 0, payload),
            _frame(_WINDOW_UPDATE, 0, 0, increment.to_bytes(4, "big")),
        ]
        self._flush()
        if limits.max_connection_age:
            # Spread by +-10%, as gRPC does, so that clients connected together do not all
            # reconnect together.
            self._later("age", limits.max_connection_age * random.uniform(0.9, 1.1), self._too_old)
        if limits.keepalive_time:
            self._later("keepalive", limits.keepalive_time, self._keepalive)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        for timer in self._timers.values():
            timer.cancel()
        for stream in self.streams.values():
            self._cancel(stream)
        self.streams.clear()
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def go_away(self, code: int, debug: bytes = b"") -> None:
        """Refuse new streams; close once those in progress are answered."""
        if self._transport is None:
            return
        if not self._going_away:
            self._going_away = True
            payload = struct.pack(">II", self._last_stream_id, code) + debug
            self._out.append(_frame(_GOAWAY, 0, 0, payload))
        self._flush()
        if not self.streams or code != _NO_ERROR:
            self.close()

    def _fail(self, code: int, message: str) -> None:
        self.server.log.debug("closing a gRPC connection", extra={"kv": {"reason": message}})
        self.go_away(code, message.encode()[:256])
        if self._transport is not None:
            self._transport.abort()

    def _flush(self) -> None:
        if self._out and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    # --- frames in --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_read = time.monotonic()
        if self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._need:
                return
            data = b"".join(self._pending)
            self._pending.clear()
        try:
            if not self._preface_seen:
                if not (data.startswith(_PREFACE) or _PREFACE.startswith(data)):
                    raise _ConnectionError(_PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                if len(data) >= len(_PREFACE):
                    self._preface_seen = True
                    data = data[len(_PREFACE) :]
            if self._preface_seen:
                data = self._frames(data)
        except _ConnectionError as e:
            self._fail(e.code, str(e))
            return
        except hpack.HPACKError as e:
            self._fail(_COMPRESSION_ERROR, f"header block: {e}")
            return
        except Exception as e:  # a fault of ours: this connection ends, the server goes on
            self.server.log.error("gRPC connection failed", exc_info=True)
            self._fail(_INTERNAL_ERROR, str(e))
            return
        if data:
            self._pending = [data]
            self._pending_size = len(data)
            if self._preface_seen:
                self._need = 9 if len(data) < 9 else 9 + int.from_bytes(data[:3], "big")
        self._give_back()
        self._flush()

    def _frames(self, data: bytes) -> bytes:
        """Handle the complete frames in `data`; returns the incomplete rest."""
        pos, end = 0, len(data)
        while end - pos >= 9:
            high, low, kind, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
            length = high << 16 | low
            if length > _OUR_MAX_FRAME:
                raise _ConnectionError(_FRAME_SIZE_ERROR, f"a frame of {length} bytes")
            if end - pos - 9 < length:
                break
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            stream_id &= 0x7FFF_FFFF
            if self._header_block is not None and kind != _CONTINUATION:
                raise _ConnectionError(_PROTOCOL_ERROR, "a header block left unfinished")
            if kind == _DATA:
                self._on_data(stream_id, flags, payload, length)
            elif kind == _HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == _CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == _SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == _WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == _PING:
                self._on_ping(stream_id, flags, payload)
            elif kind == _RST_STREAM:
                self._on_reset(stream_id, payload)
            elif kind == _GOAWAY:
                self._going_away = True  # the client opens no more streams here
            elif kind == _PUSH_PROMISE:
                raise _ConnectionError(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            elif kind == _PRIORITY and (stream_id == 0 or length != 5):
                raise _ConnectionError(_PROTOCOL_ERROR, "a malformed PRIORITY frame")
            # Other frame types (and PRIORITY) carry nothing a unary server needs.
        return data[pos:]

    @staticmethod
    def _unpad(flags: int, payload: bytes) -> bytes:
        if not flags & _PADDED:
            return payload
        if not payload or payload[0] >= len(payload):
            raise _ConnectionError(_PROTOCOL_ERROR, "padding longer than the frame")
        return payload[1 : len(payload) - payload[0]]

    def _on_data(self, stream_id: int, flags: int, payload: bytes, length: int) -> None:
        if stream_id == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "DATA on stream 0")
        self._unacked += length
        if self._unacked > _CONNECTION_WINDOW:
            raise _ConnectionError(_FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
        stream = self.streams.get(stream_id)
        if stream is None or not stream.receiving:
            if stream_id > self._last_stream_id:
                raise _ConnectionError(_PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            if stream is not None:  # half-closed by the client: a stream error
                self._out.append(
                    _frame(_RST_STREAM, 0, stream_id, _STREAM_CLOSED.to_bytes(4, "big"))
                )
                self._on_reset(stream_id, b"\0\0\0\0")
            return  # a stream reset or answered early: its data is dropped
        stream.unacked += length
        if stream.unacked > _STREAM_WINDOW:
            raise _ConnectionError(_FLOW_CONTROL_ERROR, f"DATA beyond stream {stream_id}'s window")
        data = self._unpad(flags, payload)
        if not stream.answered and data:
            stream.body.append(data)
            stream.size += len(data)
            # The 5-byte message prefix gives the message's size before it has all arrived.
            if len(stream.body[0]) < 5 and stream.size >= 5:
                stream.body = [b"".join(stream.body)]
            declared = int.from_bytes(stream.body[0][1:5], "big") if stream.size >= 5 else 0
            limit = self.limits.max_recv_msg_size
            if limit and (declared > limit or stream.size - 5 > limit):
                self._answer_error(stream, _too_large(max(declared, stream.size - 5), limit))
        if flags & _END_STREAM:
            self._end_of_request(stream)

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise _ConnectionError(_PROTOCOL_ERROR, "HEADERS on stream 0")
        block = self._unpad(flags, payload)
        if flags & _PRIORITY_FLAG:
            block = block[5:]
        self._header_stream = stream_id
        self._header_end_stream = bool(flags & _END_STREAM)
        if flags & _END_HEADERS:
            self._on_header_block(stream_id, block, self._header_end_stream)
        else:
            self._header_block = [block]

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        if self._header_block is None or stream_id != self._header_stream:
            raise _ConnectionError(_PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._header_block.append(payload)
        if sum(map(len, self._header_block)) > _MAX_HEADER_LIST:
            raise _ConnectionError(_ENHANCE_YOUR_CALM, "a header block without end")
        if flags & _END_HEADERS:
            block, self._header_block = b"".join(self._header_block), None
            self._on_header_block(stream_id, block, self._header_end_stream)

    def _on_header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        # Decoded whatever becomes of the stream: the decoder's table must follow the client's.
        headers = self._decoder.decode(block, raw=True)
        stream = self.streams.get(stream_id)
        if stream is not None:  # the client's trailers
            if not end_stream:
                raise _ConnectionError(_PROTOCOL_ERROR, "trailers without END_STREAM")
            if stream.receiving:
                self._end_of_request(stream)
            return
        if not stream_id % 2:
            raise _ConnectionError(_PROTOCOL_ERROR, f"HEADERS opening even stream {stream_id}")
        if stream_id <= self._last_stream_id:
            return  # trailers of a stream answered early, crossing our reset
        self._last_stream_id = stream_id
        # Not receiving when the headers end the request: an answer from them alone then
        # needs no RST_STREAM.
        stream = _Stream(stream_id, receiving=not end_stream, send_window=self._peer_initial_window)
        limit = self.limits.max_concurrent_streams
        if self._going_away or (limit and len(self.streams) >= limit):
            self._out.append(_frame(_RST_STREAM, 0, stream_id, _REFUSED_STREAM.to_bytes(4, "big")))
            return
        self.streams[stream_id] = stream
        if (idle := self._timers.pop("idle", None)) is not None:
            idle.cancel()
        error = self._read_headers(stream, headers)
        if error is not None:
            self._answer_error(stream, error)
        if end_stream:
            self._end_of_request(stream)

    def _read_headers(
        self, stream: _Stream, headers: Iterable[tuple[bytes, bytes]]
    ) -> RpcError | None:
        """Fill `stream` from the request's headers; the error to answer with, if any."""
        method = path = content_type = b""
        metadata: list[tuple[str, str | bytes]] = []
        encoding = b"identity"
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
            elif name == b"content-type":
                content_type = value
            elif name == b"grpc-encoding":
                encoding = value
            elif name == b"grpc-timeout":
                stream.timeout_s = _timeout_s(value)
            elif name not in _TRANSPORT_HEADERS:
                key = name.decode("latin-1")
                if key.endswith("-bin"):
                    # Padded or not, as the specification allows; not base64 is left out.
                    with contextlib.suppress(binascii.Error):
                        metadata.append((key, base64.b64decode(value + b"==")))
                else:
                    metadata.append((key, value.decode("latin-1")))
        stream.method = path.decode("latin-1")
        stream.metadata = tuple(metadata)
        if method != b"POST" or not content_type.startswith(b"application/grpc"):
            # Not a gRPC request at all: an HTTP answer, as the specification asks.
            status = b"405" if method != b"POST" else b"415"
            self._end_with(stream, _field(b":status", status))
            return None
        try:
            stream.wbits = _ENCODINGS[encoding.decode("latin-1")]
        except KeyError:
            return RpcError(
                code_pb2.UNIMPLEMENTED,
                f"grpc-encoding {encoding.decode('latin-1')!r} is not supported",
            )
        if stream.method not in self.server.handlers:
            return RpcError(code_pb2.UNIMPLEMENTED, f"unknown method {stream.method}")
        return None

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0 or len(payload) % 6:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "a malformed SETTINGS frame")
        if flags & _ACK:
            return
        for offset in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, offset)
            if key == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(_FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE")
                delta, self._peer_initial_window = value - self._peer_initial_window, value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == _MAX_FRAME_SIZE:
                if not 16_384 <= value <= 16_777_215:
                    raise _ConnectionError(_PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == _HEADER_TABLE_SIZE:
                pass  # answers use no dynamic table
        self._out.append(_frame(_SETTINGS, _ACK, 0))
        self._pump_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "a malformed WINDOW_UPDATE frame")
        increment = int.from_bytes(payload, "big") & 0x7FFF_FFFF
        if stream_id == 0:
            if increment == 0:
                raise _ConnectionError(_PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > _MAX_WINDOW:
                raise _ConnectionError(_FLOW_CONTROL_ERROR, "the connection's window overflows")
        elif (stream := self.streams.get(stream_id)) is not None:
            stream.send_window += increment
        self._pump_blocked()

    def _on_ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0 or len(payload) != 8:
            raise _ConnectionError(_FRAME_SIZE_ERROR, "a malformed PING frame")
        if flags & _ACK:
            if payload == self._ping_sent:
                self._ping_sent = None
            return
        now = time.monotonic()
        allowed = (
            self.limits.min_ping_interval
            if self.streams or self.limits.permit_pings_without_calls
            else _IDLE_PING_INTERVAL_S
        )
        if now - self._last_ping < allowed:
            self._ping_strikes += 1
            if self._ping_strikes > _MAX_PING_STRIKES:
                raise _ConnectionError(_ENHANCE_YOUR_CALM, "too_many_pings")
        self._last_ping = now
        self._out.append(_frame(_PING, _ACK, 0, payload))

    def _on_reset(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0 or len(payload) != 4:
            raise _ConnectionError(_PROTOCOL_ERROR, "a malformed RST_STREAM frame")
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._blocked.pop(stream_id, None)
            self._cancel(stream)
            self._after_stream()

    # --- calls ------------------------------------------------------------------------------

    def _give_back(self) -> None:
        """Window updates for what was received, once half a window is used: few frames."""
        if self._unacked > _CONNECTION_WINDOW // 2:
            self._out.append(_frame(_WINDOW_UPDATE, 0, 0, self._unacked.to_bytes(4, "big")))
            self._unacked = 0
        for stream in self.streams.values():
            if stream.receiving and stream.unacked > _STREAM_WINDOW // 2:
                increment = stream.unacked.to_bytes(4, "big")
                self._out.append(_frame(_WINDOW_UPDATE, 0, stream.id, increment))
                stream.unacked = 0

    def _end_of_request(self, stream: _Stream) -> None:
        stream.receiving = False
        if stream.answered:
            return
        try:
            message = self._message(stream)
        except RpcError as e:
            self._answer_error(stream, e)
            return
        call = Call(stream.method, stream.metadata, self._peer, message)
        handler = self.server.handlers[stream.method]
        stream.task = self._loop.create_task(self._run(stream, handler, call))
        if stream.timeout_s is not None:
            stream.deadline = self._loop.call_later(stream.timeout_s, self._expire, stream)

    def _message(self, stream: _Stream) -> bytes:
        """The one message a unary request carries, decompressed within the size limit."""
        body = b"".join(stream.body)
        stream.body = []
        if len(body) < 5:
            raise RpcError(code_pb2.INTERNAL, "a unary call without its request message")
        compressed, size = body[0], int.from_bytes(body[1:5], "big")
        if len(body) != 5 + size:
            raise RpcError(code_pb2.INTERNAL, "a unary call takes exactly one request message")
        message = body[5:]
        if compressed:
            if stream.wbits is None:
                raise RpcError(code_pb2.INTERNAL, "a compressed message without grpc-encoding")
            limit = self.limits.max_recv_msg_size or _MAX_WINDOW
            message = _inflate(message, stream.wbits, limit)
        return message

    async def _run(self, stream: _Stream, handler: Handler, call: Call) -> None:
        try:
            self.server.authenticate(call)
            response = await handler(call)
        except RpcError as e:
            self._answer_error(stream, e)
        except Exception as e:
            self.server.log.error("gRPC call %s failed", call.method, exc_info=True)
            self._answer_error(stream, RpcError(code_pb2.INTERNAL, str(e)))
        else:
            self._answer(stream, response)
        self._flush()

    def _expire(self, stream: _Stream) -> None:
        stream.deadline = None
        if stream.task is not None:
            stream.task.cancel()
        self._answer_error(stream, RpcError(code_pb2.DEADLINE_EXCEEDED, "deadline exceeded"))
        self._flush()

    def _cancel(self, stream: _Stream) -> None:
        if stream.deadline is not None:
            stream.deadline.cancel()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    # --- answers ----------------------------------------------------------------------------

    def _answer(self, stream: _Stream, response: bytes) -> None:
        if stream.answered or self.streams.get(stream.id) is not stream:
            return
        stream.answered = True
        self._send_headers(stream.id, 0, _GRPC_HEADERS)
        stream.outbox = b"\0" + len(response).to_bytes(4, "big") + response
        stream.trailers = _OK_TRAILERS
        self._pump(stream)

    def _answer_error(self, stream: _Stream, error: RpcError) -> None:
        """A trailers-only answer."""
        self._end_with(
            stream, _GRPC_HEADERS + _status_fields(error.code, error.message, error.details)
        )

    def _end_with(self, stream: _Stream, fields: bytes) -> None:
        """An answer of headers alone; a client still sending is told to stop."""
        if stream.answered or self.streams.get(stream.id) is not stream:
            return
        stream.answered = True
        stream.body = []
        self._send_headers(stream.id, _END_STREAM, fields)
        self._finish(stream)

    def _pump(self, stream: _Stream) -> None:
        """Send what the windows allow of the stream's answer, then its trailers."""
        while stream.outbox:
            n = min(len(stream.outbox), stream.send_window, self._send_window, self._peer_max_frame)
            if n <= 0:
                self._blocked[stream.id] = stream
                return
            chunk, stream.outbox = stream.outbox[:n], stream.outbox[n:]
            stream.send_window -= n
            self._send_window -= n
            self._out.append(_frame(_DATA, 0, stream.id, chunk))
        self._blocked.pop(stream.id, None)
        self._send_headers(stream.id, _END_STREAM, stream.trailers)
        self._finish(stream)

    def _send_headers(self, stream_id: int, flags: int, block: bytes) -> None:
        """A header block in frames the client takes: HEADERS, then CONTINUATION for what
        is beyond its largest frame (a long grpc-message, say)."""
        self._ping_strikes = 0  # as gRPC: pings are welcome while answers flow
        size = self._peer_max_frame
        if len(block) <= size:
            self._out.append(_frame(_HEADERS, flags | _END_HEADERS, stream_id, block))
            return
        self._out.append(_frame(_HEADERS, flags, stream_id, block[:size]))
        for start in range(size, len(block), size):
            last = start + size >= len(block)
            piece = block[start : start + size]
            self._out.append(_frame(_CONTINUATION, _END_HEADERS if last else 0, stream_id, piece))

    def _pump_blocked(self) -> None:
        for stream in list(self._blocked.values()):
            self._pump(stream)

    def _finish(self, stream: _Stream) -> None:
        if stream.receiving:
            # The client has more to send that is no longer wanted (RFC 9113, 8.1).
            self._out.append(_frame(_RST_STREAM, 0, stream.id, _NO_ERROR.to_bytes(4, "big")))
            stream.receiving = False
        if stream.deadline is not None:
            stream.deadline.cancel()
        self.streams.pop(stream.id, None)
        self._after_stream()

    def _after_stream(self) -> None:
        if not self.streams:
            if self._going_away:
                self._flush()
                self.close()
            else:
                self._arm_idle()

    # --- keeping alive, ageing --------------------------------------------------------------

    def _later(self, purpose: str, delay_s: float, callback: Callable[[], None]) -> None:
        if (timer := self._timers.get(purpose)) is not None:
            timer.cancel()
        self._timers[purpose] = self._loop.call_later(delay_s, callback)

    def _arm_idle(self) -> None:
        idle = self.limits.max_connection_idle
        if idle and "idle" not in self._timers:
            self._later("idle", idle, lambda: self.go_away(_NO_ERROR))

    def _too_old(self) -> None:
        self.go_away(_NO_ERROR)
        grace = self.limits.max_connection_age_grace
        if grace and self._transport is not None:
            self._later("grace", grace, self.close)

    def _keepalive(self) -> None:
        """Ping a client quiet for keepalive_time; one that does not answer is cut off."""
        limits = self.limits
        quiet_s = time.monotonic() - self._last_read
        if quiet_s < limits.keepalive_time:
            self._later("keepalive", limits.keepalive_time - quiet_s, self._keepalive)
            return
        self._ping_sent = os.urandom(8)
        self._out.append(_frame(_PING, 0, 0, self._ping_sent))
        self._flush()
        self._later("keepalive", limits.keepalive_timeout, self._check_pong)

    def _check_pong(self) -> None:
        if self._ping_sent is None:
            self._later("keepalive", self.limits.keepalive_time, self._keepalive)
        elif self._transport is not None:
            self._transport.abort()
