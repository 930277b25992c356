"""OTLP/HTTP (binary protobuf) trace export over a plain socket.

Why not http.client or the OTel SDK's exporter: `import http.client` costs about 40 ms and the
SDK's OTLP/HTTP exporter about 227 ms of cold start, while one HTTP/1.1 POST with keep-alive is
a few dozen lines over `socket`, which the Lambda runtime has already loaded. gRPC is never used
in the function for the same reason (grpcio takes hundreds of milliseconds to import and starts
threads that do not survive the execution environment's freeze well): OTEL_EXPORTER_OTLP_PROTOCOL
other than http/protobuf logs a warning and http/protobuf is used. `ssl` is imported only for an
https endpoint.

Configuration (the OTel SDK's variables): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as is), else
OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else http://127.0.0.1:4318/v1/traces;
OTEL_EXPORTER_OTLP_HEADERS and OTEL_EXPORTER_OTLP_TRACES_HEADERS (the latter wins per key).

Not thread-safe: one export at a time (the handler serialises them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping

from instrumentation import __version__
from instrumentation.resource import parse_key_values

DEFAULT_ENDPOINT = "http://127.0.0.1:4318/v1/traces"

log = logging.getLogger("coldtail")

_MAX_HEADER_BYTES = 64 * 1024
_MAX_BODY_BYTES = 4 * 1024 * 1024
# Answers worth sending the same spans again for (the OTLP/HTTP spec's retryable codes).
_RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})


# Names the invocation whose last spans a request carries (see OtlpHttpExporter.export).
INVOCATION_DONE_HEADER = "Coldtail-Invocation-Done"


class ExportError(Exception):
    """An export that did not succeed. `retryable`: sending the same data later may work."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class OtlpHttpExporter:
    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, headers: Mapping[str, str] | None = None):
        scheme, sep, rest = endpoint.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in ("http", "https"):
            raise ValueError(f"endpoint {endpoint!r} is not an http:// or https:// URL")
        authority, slash, path = rest.partition("/")
        self.endpoint = endpoint
        self.tls = scheme == "https"
        self.host, self.port = _split_authority(authority, 443 if self.tls else 80)
        self.path = slash + path if slash else "/"
        self._head = _request_head(self.path, authority, headers or {})
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> OtlpHttpExporter:
        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol.strip() != "http/protobuf":
            log.warning(
                "coldtail: OTLP protocol %r is not supported in the function; using http/protobuf",
                protocol,
            )
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if not endpoint:
            base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
            endpoint = base.rstrip("/") + "/v1/traces" if base else DEFAULT_ENDPOINT
        headers = parse_key_values(environ.get("OTEL_EXPORTER_OTLP_HEADERS", ""))
        headers.update(parse_key_values(environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "")))
        return cls(endpoint, headers)

    def export(self, body: bytes, timeout_s: float, invocation_done: str = "") -> None:
        """POST one ExportTraceServiceRequest; return on a 2xx answer, raise ExportError
        otherwise. The whole call, connecting included, takes at most `timeout_s` seconds.
        `invocation_done` names the invocation whose last spans these are: coldtail's Lambda
        extension then knows it has them all without waiting for Lambda to say the runtime is
        done (other receivers ignore the header)."""
        deadline = time.monotonic() + timeout_s
        head = self._head
        if invocation_done and invocation_done.isprintable():
            head += f"{INVOCATION_DONE_HEADER}: {invocation_done}\r\n".encode("latin-1", "replace")
        request = head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        reused = self._sock is not None
        try:
            status, reason, payload = self._round_trip(request, deadline)
        except _ConnectionClosed as e:
            self.close()
            if not reused:
                raise ExportError(f"{self.endpoint}: {e}", retryable=True) from None
            # The peer closed the kept-alive connection while the function was frozen.
            try:
                status, reason, payload = self._round_trip(request, deadline)
            except (OSError, _ConnectionClosed) as e2:
                self.close()
                raise ExportError(f"{self.endpoint}: {e2}", retryable=True) from None
        except OSError as e:
            self.close()
            raise ExportError(f"{self.endpoint}: {e or type(e).__name__}", retryable=True) from None
        if not 200 <= status < 300:
            detail = payload[:200].decode("utf-8", "replace")
            raise ExportError(
                f"{self.endpoint}: HTTP {status} {reason} {detail!r}",
                retryable=status in _RETRYABLE_STATUSES,
            )

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def _round_trip(self, request: bytes, deadline: float) -> tuple[int, str, bytes]:
        sock = self._sock or self._connect(deadline)
        self._sock = sock
        sock.settimeout(_remaining(deadline))
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise _ConnectionClosed(str(e)) from None
        reader = _Reader(sock, deadline)
        status_line = reader.line()
        if not status_line:
            raise _ConnectionClosed("connection closed before an answer")
        version, _, rest = status_line.partition(b" ")
        code, _, reason = rest.partition(b" ")
        if not version.startswith(b"HTTP/") or not code.isdigit():
            raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
        headers = reader.headers()
        body = reader.body(headers)
        if headers.get("connection", "").lower() == "close" or version == b"HTTP/1.0":
            self.close()
        return int(code), reason.decode("latin-1").strip(), body

    def _connect(self, deadline: float) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=_remaining(deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            import ssl

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        return sock


class _ConnectionClosed(Exception):
    pass


class _Reader:
    """Buffered reads of one HTTP/1.1 answer, each bounded by the deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.buffer = b""

    def _fill(self) -> bool:
        self.sock.settimeout(_remaining(self.deadline))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEADER_BYTES:
                raise OSError("HTTP answer header too long")
            if not self._fill():
                if self.buffer:
                    raise OSError("connection closed in the middle of an answer")
                return b""
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def headers(self) -> dict[str, str]:
        headers = {}
        while line := self.line():
            name, _, value = line.partition(b":")
            headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
        return headers

    def exactly(self, size: int) -> bytes:
        if size > _MAX_BODY_BYTES:
            raise OSError(f"HTTP answer body of {size} bytes is too large")
        while len(self.buffer) < size:
            if not self._fill():
                raise OSError("connection closed in the middle of an answer")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.line().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.exactly(size))
                self.line()
            while self.line():  # trailers
                pass
            return b"".join(chunks)
        if "content-length" in headers:
            return self.exactly(int(headers["content-length"]))
        # Neither: the body runs to the end of the connection, which cannot be reused.
        while len(self.buffer) <= _MAX_BODY_BYTES and self._fill():
            pass
        headers["connection"] = "close"
        return self.buffer


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("export timed out")
    return remaining


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    authority = authority.rpartition("@")[2]
    if authority.startswith("["):  # IPv6 literal
        host, _, rest = authority[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = authority.partition(":")
    if not host:
        raise ValueError(f"no host in {authority!r}")
    return host, int(port) if port else default_port


def _request_head(path: str, authority: str, headers: Mapping[str, str]) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {authority.rpartition('@')[2]}",
        f"User-Agent: coldtail-instrumentation/{__version__}",
        "Content-Type: application/x-protobuf",
    ]
    reserved = {"host", "content-length", "content-type", "transfer-encoding", "connection"}
    for name, value in headers.items():
        if name.lower() not in reserved and "\r" not in name + value and "\n" not in name + value:
            lines.append(f"{name}: {value}")
    return "".join(f"{line}\r\n" for line in lines).encode("latin-1", "replace")
