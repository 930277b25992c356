"""Unary gRPC calls over HTTP/2 (the `h2` protocol library) on the event loop, for exporters
whose requests are already encoded and compressed.

Why not grpcio's channel: it compresses each message itself, with zlib at level 6 and no way
to choose. For an 8192-span OTLP batch that is about 22 ms of CPU, 40% of everything the
collector spends per span on otlp -> batch -> otlp (bench/throughput.py); the caller here
compresses with ISA-L at level 1 in 1.5 ms to a smaller body than zlib's level 1. The protocol
part is small: one HTTP/2 stream per call, a 5-byte length prefix on the message, the status in
the trailers (the gRPC over HTTP/2 specification, PROTOCOL-HTTP2.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import ssl
import urllib.parse
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

from collector.core import tasks
from collector.core.auth import ClientAuthenticator, with_auth_headers
from collector.core.consumer import ConsumerError, PermanentError, RetryableError

# Our receive windows: a response is small, but a large one should not stall on updates.
_WINDOW = 4 << 20
_READ_SIZE = 256 << 10
# The gRPC specification's mapping of an HTTP status without grpc-status to a gRPC status.
_HTTP_STATUS = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
# ... and of an HTTP/2 RST_STREAM error code; the rest are INTERNAL.
_RESET_STATUS: dict[int, grpc.StatusCode] = {
    h2.errors.ErrorCodes.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,
    h2.errors.ErrorCodes.CANCEL: grpc.StatusCode.CANCELLED,
    h2.errors.ErrorCodes.ENHANCE_YOUR_CALM: grpc.StatusCode.RESOURCE_EXHAUSTED,
    h2.errors.ErrorCodes.INADEQUATE_SECURITY: grpc.StatusCode.PERMISSION_DENIED,
}
_CODES = {code.value[0]: code for code in grpc.StatusCode}
# A server may refuse a stream it never worked on, as grpc's does when a new stream comes just
# before it counts one finished as closed; the call is then made again (as grpcio does), with
# these pauses in between.
_REFUSED_RETRIES_S = (0.0, 0.001, 0.005, 0.02, 0.1)


class GrpcCallError(Exception):
    """A call that ended with a status other than OK: `code`, `details` and the trailers as
    `metadata` (binary `-bin` values decoded)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        metadata: tuple[tuple[str, str | bytes], ...] = (),
    ) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.metadata = metadata


class _Refused(GrpcCallError):
    """The server reset the stream with REFUSED_STREAM: it did not process the call."""


@dataclass
class _Stream:
    id: int
    done: asyncio.Future
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class _Connection:
    """One HTTP/2 connection: a reader task dispatches frames to the streams waiting on them.
    Once the peer goes away or the socket breaks, every open stream fails with UNAVAILABLE and
    the connection is done; the channel opens a new one for the next call."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW}
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW)
        self.streams: dict[int, _Stream] = {}
        self.closed: str | None = None
        # Set whenever the peer grants more window or a stream closes; senders recheck.
        self.changed = asyncio.Event()
        # Set by the server's first SETTINGS (its limits, such as concurrent streams) or a close.
        self.ready = asyncio.Event()
        self.flush()
        self.task = asyncio.get_running_loop().create_task(self._read())

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.writer.write(data)

    async def _read(self) -> None:
        reason = "connection closed by the server"
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    break
                for event in self.h2.receive_data(data):
                    self._handle(event)
                self.flush()
        except (OSError, h2.exceptions.ProtocolError) as e:
            reason = f"connection lost: {e!r}"
        finally:
            self.fail(self.closed or reason)

    def _handle(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream:
            stream.headers = _text(event.headers)
        elif isinstance(event, h2.events.TrailersReceived) and stream:
            stream.trailers = _text(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream and event.data:
                stream.body += event.data
        elif isinstance(event, h2.events.StreamEnded) and stream:
            self._finish(event.stream_id, None)
        elif isinstance(event, h2.events.StreamReset) and stream:
            code = _RESET_STATUS.get(event.error_code, grpc.StatusCode.INTERNAL)
            kind = (
                _Refused
                if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                else GrpcCallError
            )
            self._finish(event.stream_id, kind(code, f"stream reset: {event.error_code!r}"))
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.ready.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 takes no more frames once the server said GOAWAY: the calls still open fail as
            # UNAVAILABLE now, and are sent again, on a new connection.
            self.fail(f"the server ended the connection (GOAWAY {event.error_code!r})")
        self.changed.set()

    def _finish(self, stream_id: int, error: Exception | None) -> None:
        stream = self.streams.pop(stream_id)
        if not stream.done.done():
            if error is None:
                stream.done.set_result(None)
            else:
                stream.done.set_exception(error)

    def fail(self, reason: str) -> None:
        self.closed = reason
        for stream_id in list(self.streams):
            self._finish(stream_id, GrpcCallError(grpc.StatusCode.UNAVAILABLE, reason))
        self.changed.set()
        self.ready.set()
        self.writer.close()

    async def open(self, headers: list[tuple[str, str]]) -> _Stream:
        """A new stream with the request's headers sent, once the peer allows one more."""
        while self.h2.open_outbound_streams >= self.h2.remote_settings.max_concurrent_streams:
            await self._changed()
        stream_id = self.h2.get_next_available_stream_id()
        stream = self.streams[stream_id] = _Stream(
            stream_id, asyncio.get_running_loop().create_future()
        )
        self.h2.send_headers(stream_id, headers)
        return stream

    async def write(self, stream: _Stream, body: bytes) -> None:
        """The request body and its end, within the peer's flow-control windows."""
        stream_id = stream.id
        view, sent = memoryview(body), 0
        while sent < len(body):
            if stream.done.done():  # answered early (such as UNAUTHENTICATED) or reset
                return
            window = min(
                self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
            )
            if window <= 0:
                self.flush()
                await self._changed()
                continue
            chunk = view[sent : sent + window]
            self.h2.send_data(stream_id, chunk.tobytes())
            sent += len(chunk)
        self.h2.end_stream(stream_id)
        self.flush()
        await self.writer.drain()

    async def _changed(self) -> None:
        if self.closed:
            raise GrpcCallError(grpc.StatusCode.UNAVAILABLE, self.closed)
        self.changed.clear()
        await self.changed.wait()

    def cancel(self, stream: _Stream) -> None:
        if self.streams.pop(stream.id, None) is not None and not self.closed:
            with contextlib.suppress(h2.exceptions.H2Error):
                self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.CANCEL)
            self.flush()


class GrpcChannel:
    """Unary calls to `host:port`, in plain text or over TLS (`tls` a client context; its ALPN
    is set to h2, as gRPC requires). Connects on the first call and again after the connection
    was lost; a call made while the server cannot be reached fails with UNAVAILABLE."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        user_agent: str = "grpc-python",
    ) -> None:
        self.host, self.port = host.strip("[]"), port
        self.tls = tls
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self.server_hostname = server_hostname or self.host
        authority = f"[{self.host}]" if ":" in self.host else self.host
        self._authority = f"{authority}:{port}"
        self._scheme = "https" if tls is not None else "http"
        self._user_agent = user_agent
        self._connection: _Connection | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> _Connection:
        async with self._connecting:
            if self._connection is None or self._connection.closed:
                try:
                    reader, writer = await asyncio.open_connection(
                        self.host,
                        self.port,
                        ssl=self.tls,
                        server_hostname=self.server_hostname if self.tls else None,
                    )
                except (OSError, ssl.SSLError) as e:
                    raise GrpcCallError(
                        grpc.StatusCode.UNAVAILABLE, f"cannot connect to {self._authority}: {e}"
                    ) from None
                sock = writer.get_extra_info("socket")
                if sock is not None and sock.getsockname() == sock.getpeername():
                    # A loopback port in the ephemeral range with no listener can be picked as
                    # the connection's own source port: TCP then connects it to itself, and
                    # holding that would keep the server from binding its port.
                    writer.close()
                    raise GrpcCallError(
                        grpc.StatusCode.UNAVAILABLE,
                        f"cannot connect to {self._authority}: nothing listens there",
                    )
                self._connection = _Connection(reader, writer)
            connection = self._connection
            await connection.ready.wait()
            if connection.closed:
                raise GrpcCallError(grpc.StatusCode.UNAVAILABLE, connection.closed)
            return connection

    async def unary(
        self,
        method: str,
        message: bytes,
        *,
        encoding: str = "identity",
        metadata: tuple[tuple[str, str], ...] = (),
        timeout: float | None = None,
    ) -> bytes:
        """Call `method` (`/package.Service/Method`) with `message`, already compressed when
        `encoding` is gzip; the response message, or GrpcCallError."""
        headers = [
            (":method", "POST"),
            (":scheme", self._scheme),
            (":path", method),
            (":authority", self._authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", self._user_agent),
            ("grpc-accept-encoding", "identity,gzip"),
        ]
        if encoding != "identity":
            headers.append(("grpc-encoding", encoding))
        if timeout is not None:
            headers.append(("grpc-timeout", f"{min(int(timeout * 1000), 99_999_999)}m"))
        headers.extend(metadata)
        flag = b"\x01" if encoding != "identity" else b"\x00"
        body = flag + len(message).to_bytes(4, "big") + message
        try:
            async with asyncio.timeout(timeout):
                for pause in _REFUSED_RETRIES_S:
                    try:
                        stream = await self._call(headers, body)
                        break
                    except _Refused:
                        await asyncio.sleep(pause)
                else:
                    stream = await self._call(headers, body)
        except TimeoutError:
            raise GrpcCallError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded") from None
        except (OSError, h2.exceptions.H2Error) as e:
            raise GrpcCallError(grpc.StatusCode.UNAVAILABLE, f"connection lost: {e!r}") from None
        return _response(stream)

    async def _call(self, headers: list[tuple[str, str]], body: bytes) -> _Stream:
        connection = await self._connect()
        stream = await connection.open(headers)
        try:
            await connection.write(stream, body)
            await stream.done
        except BaseException:
            connection.cancel(stream)  # the server stops working on it too
            raise
        return stream

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(h2.exceptions.H2Error):
                connection.h2.close_connection()
                connection.flush()
            connection.fail("channel closed")
            await tasks.cancel([connection.task])


def _text(headers) -> dict[str, str]:
    # h2 decodes header names and values with the connection's header_encoding.
    return {str(name): str(value) for name, value in headers}


def _response(stream: _Stream) -> bytes:
    """The message of a finished call, or the GrpcCallError its status says."""
    headers = stream.headers
    # A trailers-only response carries the status in its headers.
    trailers = stream.trailers or headers
    status = trailers.get("grpc-status")
    if status is None:
        http = int(headers.get(":status", "0") or 0)
        code = _HTTP_STATUS.get(http, grpc.StatusCode.UNKNOWN)
        raise GrpcCallError(code, f"HTTP status {http} without a gRPC status")
    if not status.isdigit():
        raise GrpcCallError(grpc.StatusCode.UNKNOWN, f"invalid grpc-status {status!r}")
    code = _CODES.get(int(status), grpc.StatusCode.UNKNOWN)
    if code is not grpc.StatusCode.OK:
        details = urllib.parse.unquote(trailers.get("grpc-message", ""))
        raise GrpcCallError(code, details, _metadata(trailers))
    body = bytes(stream.body)
    if len(body) < 5:
        return b""
    message = body[5 : 5 + int.from_bytes(body[1:5], "big")]
    if body[0] == 1:
        if headers.get("grpc-encoding") != "gzip":
            raise GrpcCallError(grpc.StatusCode.INTERNAL, "compressed response of unknown encoding")
        message = gzip.decompress(message)
    return message


def _metadata(trailers: dict[str, str]) -> tuple[tuple[str, str | bytes], ...]:
    pairs: list[tuple[str, str | bytes]] = []
    for key, value in trailers.items():
        if key.startswith(":") or key in ("grpc-status", "grpc-message"):
            continue
        if key.endswith("-bin"):
            pairs.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
        else:
            pairs.append((key, value))
    return tuple(pairs)


# gRPC codes the OTel Collector retries (as its otlp exporter does).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _retry_delay(metadata) -> float | None:
    """The RetryInfo delay (seconds) in a gRPC status's details, or None."""
    for key, value in metadata or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToNanoseconds() / 1e9
    return None


def classify(error: GrpcCallError) -> ConsumerError:
    """The pipeline error for a failed gRPC call."""
    code = error.code
    delay = _retry_delay(error.metadata)
    message = f"gRPC status {code.name}: {error.details}"
    if code in _RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableError(message, retry_after=delay)
    return PermanentError(message)


def gzip_fast(data: bytes) -> bytes:
    """`data` as gzip at ISA-L's level 1, on an exporter's thread: 1.5 ms for an 8192-span
    batch where grpcio's zlib at level 6 takes 22 ms, and a smaller body than zlib's level 1."""
    from isal import isal_zlib  # the exporters' alone: the Lambda layer goes without

    return isal_zlib.compress(data, 1, wbits=31)  # 31: the gzip format


async def authorized(
    auth: ClientAuthenticator | None,
    method: str,
    metadata: tuple[tuple[str, str], ...],
    data: bytes,
) -> tuple[tuple[str, str], ...]:
    """`metadata` with what the `auth` extension adds for this call (keys lower case, as gRPC
    wants them)."""
    if auth is None:
        return metadata
    extra = await auth.authorize("POST", method, dict(metadata), data)
    merged = with_auth_headers(dict(metadata), extra)
    return tuple((k.lower(), v) for k, v in merged.items())
