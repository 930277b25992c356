"""The Lambda extension's front door: the collector's listening addresses, served with the
standard library alone, so that the extension can end its init before the collector is loaded.

`FrontDoor` binds the addresses the function and Lambda send to (the `otlp` receiver's OTLP/HTTP
endpoint, each `lambda_telemetry` receiver's Telemetry API endpoint) and answers every request at
once, keeping what it received, in arrival order, for the real receivers:

- OTLP: a POST to one of the receiver's URL paths in application/x-protobuf or application/json
  gets 200 with an empty export response in the request's content type (an empty protobuf
  message, or `{}`): full success. Bodies are never parsed, so a request the receiver refuses
  later (undecodable data) is logged by the extension, not answered.
- Telemetry API deliveries get 200. Their JSON array is parsed only to note the request ids of
  `platform.runtimeDone` events (`wait_runtime_done`): the extension waits for an invocation's
  before it flushes.

Requests are served over HTTP/1.1 with keep-alive, one daemon thread per connection. What is
queued is bounded (`max_queued_bytes` of bodies, 64 MiB by default): beyond it a request gets
503 with Retry-After, so the sender keeps its data and tries again, and a body larger than the
whole bound gets 413.

`Forwarder` replays the queue, in order, to the real receivers' bound endpoints over loopback
HTTP (keep-alive, stdlib http.client), from its own daemon thread, once the collector has
started; the real receivers answer once the data is in the pipelines, so `drain` returning True
means everything received until then is in the pipelines. A refused request is logged and
dropped; 429, 502, 503 and 504 are tried again twice first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping

OTLP = "otlp"
TELEMETRY = "telemetry"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
RETRY_AFTER_S = 1

_MAX_LINE = 8192
_MAX_HEADERS = 100
# Request ids of runtimeDone events kept for `wait_runtime_done`.
_MAX_DONE = 1000
_RUNTIME_DONE = b"platform.runtimeDone"
_RETRYABLE = frozenset({429, 502, 503, 504})
_RETRY_DELAYS_S = (0.05, 0.2)
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

log = logging.getLogger("coldtail.lambda_extension")


class Delivery:
    """One request received by the front door, kept for the real receiver."""

    __slots__ = ("body", "content_encoding", "content_type", "listener", "path", "seq")

    def __init__(
        self,
        listener: str,
        path: str,
        content_type: str,
        content_encoding: str,
        body: bytes,
        seq: int = 0,
    ) -> None:
        self.listener = listener
        self.path = path
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.body = body
        self.seq = seq


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Listener:
    __slots__ = ("kind", "name", "paths", "sock", "thread")

    def __init__(self, name: str, kind: str, paths: Collection[str], sock: socket.socket) -> None:
        self.name = name
        self.kind = kind
        self.paths = frozenset(paths)
        self.sock = sock
        self.thread: threading.Thread | None = None


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """("host", port) of "host:port" ("[::1]:4318" included); an empty host is every
    interface. ValueError when the port is not a number."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class FrontDoor:
    """Listeners answering at once and a FIFO queue of what they received. Thread-safe."""

    def __init__(self, max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES) -> None:
        self.max_queued_bytes = max_queued_bytes
        self._listeners: dict[str, _Listener] = {}
        self._connections: set[socket.socket] = set()
        self._cond = threading.Condition()
        self._queue: deque[Delivery] = deque()
        self._queued_bytes = 0  # bodies received and not yet forwarded (or dropped)
        self._last_seq = 0  # of the last delivery queued
        self._forwarded_seq = 0  # every delivery up to this one is forwarded
        self._done: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    # --- listening ----------------------------------------------------------------------------

    def listen(self, name: str, kind: str, endpoint: str, paths: Collection[str] = ()) -> str:
        """Serve `endpoint` ("host:port") as listener `name` of `kind` (OTLP, answering POSTs to
        `paths`, or TELEMETRY); returns "host:port" with the port bound. OSError when the
        address cannot be bound."""
        host, port = split_endpoint(endpoint)
        family, type_, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(64)
        except OSError as e:
            sock.close()
            raise OSError(f"cannot listen on {endpoint}: {e.strerror or e}") from None
        listener = self._listeners[name] = _Listener(name, kind, paths, sock)
        listener.thread = threading.Thread(
            target=self._accept, args=(listener,), name=f"coldtail-front-door-{name}", daemon=True
        )
        listener.thread.start()
        return f"{endpoint.rpartition(':')[0]}:{sock.getsockname()[1]}"

    def close(self) -> None:
        """Stop listening and close every connection; wakes every waiter."""
        with self._cond:
            self._closed = True
            connections = list(self._connections)
            self._cond.notify_all()
        for listener in self._listeners.values():
            _close(listener.sock)
        for conn in connections:
            _close(conn)

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                conn, _ = listener.sock.accept()
            except OSError:
                return  # closed
            with self._cond:
                if self._closed:
                    _close(conn)
                    return
                self._connections.add(conn)
            threading.Thread(
                target=self._serve, args=(listener, conn), name="coldtail-front-door", daemon=True
            ).start()

    def _serve(self, listener: _Listener, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile = conn.makefile("rb")
        try:
            while self._serve_one(listener, conn, rfile):
                pass
        except _HttpError as e:
            _respond(conn, e.status, str(e).encode(), "text/plain", keep_alive=False)
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._connections.discard(conn)
            rfile.close()
            _close(conn)

    def _serve_one(self, listener: _Listener, conn: socket.socket, rfile) -> bool:
        """Answer one request; False when the connection is to be closed."""
        line = rfile.readline(_MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated between requests
            line = rfile.readline(_MAX_LINE + 1)
        if not line:
            return False
        if len(line) > _MAX_LINE:
            raise _HttpError(431, "request line too long")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _HttpError(400, "malformed request line")
        method, target, version = parts
        headers = _read_headers(rfile)
        keep_alive = version == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
        body = self._read_body(conn, rfile, headers)
        status, payload, content_type, extra = self._handle(
            listener, method.decode("latin-1"), target.decode("latin-1"), headers, body
        )
        _respond(conn, status, payload, content_type, keep_alive, extra)
        return keep_alive

    def _read_body(self, conn: socket.socket, rfile, headers: Mapping[str, str]) -> bytes:
        limit = self.max_queued_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            chunks, size = [], 0
            while True:
                size_line = rfile.readline(_MAX_LINE + 1)
                if not size_line:
                    raise OSError("connection closed in a chunked body")
                chunk_size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if chunk_size == 0:
                    _read_headers(rfile)  # trailers
                    return b"".join(chunks)
                size += chunk_size
                if size > limit:
                    raise _HttpError(413, f"body exceeds {limit} bytes")
                chunks.append(_exactly(rfile, chunk_size))
                rfile.readline(_MAX_LINE + 1)
        length_text = headers.get("content-length", "0").strip() or "0"
        if not length_text.isdigit():
            raise _HttpError(400, "invalid Content-Length")
        length = int(length_text)
        if length > limit:
            raise _HttpError(413, f"body of {length} bytes exceeds {limit}")
        if length and headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return _exactly(rfile, length)

    def _handle(
        self, listener: _Listener, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, bytes, str, dict[str, str]]:
        """(status, body, content type, extra headers) of the answer."""
        path = target.partition("?")[0]
        if listener.kind == OTLP and path not in listener.paths:
            return 404, b"404 page not found", "text/plain", {}
        if method != "POST":
            return (
                405,
                b"405 method not allowed, supported: [POST]",
                "text/plain",
                {"Allow": "POST"},
            )
        content_type = headers.get("content-type", "")
        if listener.kind == OTLP:
            mime = content_type.partition(";")[0].strip().lower()
            if mime not in (PROTOBUF, JSON):
                text = f"415 unsupported media type, supported: [{PROTOBUF}, {JSON}]"
                return 415, text.encode(), "text/plain", {}
            answer = (b"{}" if mime == JSON else b""), mime
            done: list[str] = []
        else:
            answer = b"", ""
            done = _runtime_done_ids(body) if _RUNTIME_DONE in body else []
        delivery = Delivery(
            listener.name, target, content_type, headers.get("content-encoding", ""), body
        )
        if not self.put(delivery, done):
            text = b"503 the collector is busy: retry later"
            return 503, text, "text/plain", {"Retry-After": str(RETRY_AFTER_S)}
        return 200, answer[0], answer[1], {}

    # --- the queue ----------------------------------------------------------------------------

    def put(self, delivery: Delivery, runtime_done: Collection[str] = ()) -> bool:
        """Queue `delivery` (numbering it) and note `runtime_done` request ids; False, queuing
        nothing, when that would pass `max_queued_bytes` or the front door is closed."""
        with self._cond:
            size = len(delivery.body)
            if self._closed or (
                self._queued_bytes + size > self.max_queued_bytes and self._queued_bytes
            ):
                return False
            self._last_seq += 1
            delivery.seq = self._last_seq
            self._queue.append(delivery)
            self._queued_bytes += size
            for request_id in runtime_done:
                self._done[request_id] = None
                if len(self._done) > _MAX_DONE:
                    self._done.popitem(last=False)
            self._cond.notify_all()
            return True

    def take(self, timeout: float | None = None) -> Delivery | None:
        """The oldest delivery not yet taken, waiting up to `timeout` seconds for one (None
        when none came or the front door closed). Call `forwarded` once it is handed on."""
        with self._cond:
            self._cond.wait_for(lambda: self._queue or self._closed, timeout)
            return self._queue.popleft() if self._queue else None

    def forwarded(self, delivery: Delivery) -> None:
        """`delivery` (taken last) is handed on, or dropped: its bytes no longer count."""
        with self._cond:
            self._queued_bytes -= len(delivery.body)
            self._forwarded_seq = delivery.seq
            self._cond.notify_all()

    @property
    def last_seq(self) -> int:
        """The number of the last delivery queued (0 before the first)."""
        with self._cond:
            return self._last_seq

    @property
    def queued_bytes(self) -> int:
        with self._cond:
            return self._queued_bytes

    def wait_forwarded(self, seq: int, timeout: float) -> bool:
        """Wait until every delivery up to `seq` is forwarded; False when `timeout` (seconds)
        ran out first or the front door closed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._forwarded_seq >= seq or self._closed, max(timeout, 0)
            ) and (self._forwarded_seq >= seq)

    def wait_runtime_done(self, request_id: str, timeout: float) -> bool:
        """Wait until a delivery held the `platform.runtimeDone` of `request_id`; False when
        `timeout` (seconds) ran out first or the front door closed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: request_id in self._done or self._closed, max(timeout, 0)
            ) and (request_id in self._done)


class Forwarder:
    """Hands the front door's queue, in order, to the real receivers from a daemon thread.

    `start(targets)` maps listener names to the real receivers' "host:port"; `start(None)`
    drops everything (the collector could not be loaded), so that the queue stays bounded."""

    def __init__(self, front_door: FrontDoor) -> None:
        self.front_door = front_door
        self.dropped = 0  # deliveries a receiver refused or that had nowhere to go
        self._targets: dict[str, str] | None = None
        self._connections: dict = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, targets: Mapping[str, str] | None) -> None:
        self._targets = None if targets is None else dict(targets)
        self._thread = threading.Thread(target=self._run, name="coldtail-forwarder", daemon=True)
        self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until everything the front door received so far is forwarded; False when
        `timeout` (seconds) ran out first."""
        return self.front_door.wait_forwarded(self.front_door.last_seq, timeout)

    def stop(self) -> None:
        """Stop after the delivery in hand (the front door must be closed too, or be idle)."""
        self._stopping = True

    def _run(self) -> None:
        import http.client

        while not self._stopping:
            delivery = self.front_door.take(timeout=0.5)
            if delivery is None:
                continue
            try:
                target = None if self._targets is None else self._targets.get(delivery.listener)
                if target is None or not self._send(http.client, target, delivery):
                    self.dropped += 1
            except Exception:
                self.dropped += 1
                log.exception("forwarding to the collector failed")
            finally:
                self.front_door.forwarded(delivery)
        for connection in self._connections.values():
            connection.close()

    def _send(self, client, target: str, delivery: Delivery) -> bool:
        headers = {"Content-Type": delivery.content_type or "application/octet-stream"}
        if delivery.content_encoding:
            headers["Content-Encoding"] = delivery.content_encoding
        delays = iter(_RETRY_DELAYS_S)
        reconnected = False
        while True:
            connection = self._connections.get(target)
            if connection is None:
                host, port = split_endpoint(target)
                connection = self._connections[target] = client.HTTPConnection(
                    host, port, timeout=30
                )
            try:
                connection.request("POST", delivery.path, delivery.body, headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, client.HTTPException) as e:
                connection.close()
                del self._connections[target]
                if not reconnected:  # a kept-alive connection the receiver had closed
                    reconnected = True
                    continue
                delay = next(delays, None)
                if delay is None:
                    log.warning(
                        "data dropped: the collector's receiver cannot be reached",
                        extra={"kv": {"receiver": delivery.listener, "error": repr(e)}},
                    )
                    return False
                time.sleep(delay)
                continue
            if response.status < 300:
                return True
            delay = next(delays, None) if response.status in _RETRYABLE else None
            if delay is None:
                log.warning(
                    "data dropped: refused by the collector's receiver",
                    extra={
                        "kv": {
                            "receiver": delivery.listener,
                            "status": response.status,
                            "answer": answer[:200].decode("utf-8", "replace"),
                        }
                    },
                )
                return False
            time.sleep(delay)


# --- HTTP/1.1 helpers ---------------------------------------------------------------------------


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _read_headers(rfile) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(_MAX_HEADERS + 1):
        line = rfile.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _HttpError(431, "header line too long")
        if line in (b"\r\n", b"\n", b""):
            return headers
        name, sep, value = line.partition(b":")
        if not sep:
            raise _HttpError(400, "malformed header line")
        headers[name.decode("latin-1").strip().lower()] = value.decode("latin-1").strip()
    raise _HttpError(431, "too many headers")


def _exactly(rfile, size: int) -> bytes:
    data = rfile.read(size) if size else b""
    if len(data) != size:
        raise OSError("connection closed in the middle of a body")
    return data


def _respond(
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


def _runtime_done_ids(body: bytes) -> list[str]:
    """Request ids of the `platform.runtimeDone` events in a Telemetry API delivery."""
    try:
        events = json.loads(body)
    except (ValueError, RecursionError):
        return []
    if not isinstance(events, list):
        return []
    ids = []
    for event in events:
        if isinstance(event, dict) and event.get("type") == "platform.runtimeDone":
            record = event.get("record")
            request_id = record.get("requestId") if isinstance(record, dict) else None
            if isinstance(request_id, str) and request_id:
                ids.append(request_id)
    return ids


# --- a client for Lambda's APIs -----------------------------------------------------------------


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
                status_line = rfile.readline(_MAX_LINE + 1)
                parts = status_line.split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                    raise OSError(f"not an HTTP answer: {status_line[:80]!r}")
                status = int(parts[1])
                answer_headers = _read_headers(rfile)
                if status != 100:
                    break
            if "chunked" in answer_headers.get("transfer-encoding", "").lower():
                chunks = []
                while size := int(rfile.readline(_MAX_LINE + 1).split(b";")[0].strip() or b"0", 16):
                    chunks.append(_exactly(rfile, size))
                    rfile.readline(_MAX_LINE + 1)
                _read_headers(rfile)
                answer = b"".join(chunks)
            elif "content-length" in answer_headers:
                answer = _exactly(rfile, int(answer_headers["content-length"]))
            else:
                answer = rfile.read()
        finally:
            rfile.close()
        return status, answer_headers, answer
    except _HttpError as e:
        raise OSError(f"invalid HTTP answer: {e}") from None
    finally:
        sock.close()
