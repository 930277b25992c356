"""Just enough HTTP/1.1 over plain sockets for the extension's front door and its calls to
Lambda's APIs: the standard library's http.server and http.client cost init time the extension
does not have (see the package docstring)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping

from collector.core.endpoints import split_endpoint

MAX_LINE = 8192
_MAX_HEADERS = 100
_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    """A request that gets `status` and the message as its answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def read_headers(rfile) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise HttpError(431, "header line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.partition(b":")
        if not sep:
            raise HttpError(400, "malformed header line")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    raise HttpError(431, "too many headers")


def exactly(rfile, size: int) -> bytes:
    data = rfile.read(size) if size else b""
    if len(data) != size:
        raise OSError("connection closed in the middle of a body")
    return data


def respond(
    conn: socket.socket,
    status: int,
    body: bytes,
    content_type: str,
    keep_alive: bool,
    extra: Mapping[str, str] | None = None,
) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    lines.extend(f"{name}: {value}" for name, value in (extra or {}).items())
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def request(
    address: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a new connection to `address` ("host:port"):
    (status, headers with lowercase names, body). `timeout` bounds each socket operation
    (None: wait as long as it takes, as /event/next needs)."""
    host, port = split_endpoint(address)
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        head = [f"{method} {path} HTTP/1.1", f"Host: {address}", "Connection: close"]
        head.extend(f"{name}: {value}" for name, value in (headers or {}).items())
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        rfile = sock.makefile("rb")
        try:
            while True:
                status_line = rfile.readline(MAX_LINE + 1)
                parts = status_line.split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                    raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
                status = int(parts[1])
                answer_headers = read_headers(rfile)
                if status != 100:
                    break
            if "chunked" in answer_headers.get("transfer-encoding", "").lower():
                chunks = []
                while size := int(rfile.readline(MAX_LINE + 1).split(b";")[0].strip() or b"0", 16):
                    chunks.append(exactly(rfile, size))
                    rfile.readline(MAX_LINE + 1)
                read_headers(rfile)
                answer = b"".join(chunks)
            elif "content-length" in answer_headers:
                answer = exactly(rfile, int(answer_headers["content-length"]))
            else:
                answer = rfile.read()
        finally:
            rfile.close()
        return status, answer_headers, answer
    except HttpError as e:
        raise OSError(f"invalid HTTP answer: {e}") from None
    finally:
        sock.close()
