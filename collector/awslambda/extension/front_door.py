"""The Lambda extension's front door: the collector's listening addresses, served with the
standard library alone, so that the extension can end its init before the collector is loaded.

`FrontDoor` binds the addresses the function and Lambda send to (the `otlp` receiver's OTLP/HTTP
endpoint, each `lambda_telemetry` receiver's Telemetry API endpoint) and answers every request at
once, keeping what it received, in arrival order, for the real receivers (see `forwarder`):

- OTLP: a POST to one of the receiver's URL paths in application/x-protobuf or application/json
  gets 200 with an empty export response in the request's content type (an empty protobuf
  message, or `{}`): full success. Bodies are never parsed, so a request the receiver refuses
  later (undecodable data) is logged by the extension, not answered. A request with the header
  `Coldtail-Invocation-Done: <request id>` is the last of that invocation's spans (coldtail's
  instrumentation sends it with the invocation span, before the function responds).
- Telemetry API deliveries get 200. Their JSON array is parsed only to note the request ids of
  `platform.runtimeDone` events.

`wait_invocation_over` tells the extension when an invocation's spans are in hand (either
signal); `wait_runtime_done` when Lambda's own report of it arrived, after its init report.

Requests are served over HTTP/1.1 with keep-alive, one daemon thread per connection. What is
queued is bounded (`max_queued_bytes` of bodies, 64 MiB by default): beyond it a request gets
503 with Retry-After, so the sender keeps its data and tries again, and a body larger than the
whole bound gets 413.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Collection, Mapping

from collector.awslambda.extension.http11 import (
    MAX_LINE,
    HttpError,
    close_socket,
    exactly,
    read_headers,
    respond,
    split_endpoint,
)

OTLP = "otlp"
TELEMETRY = "telemetry"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
INVOCATION_DONE_HEADER = "Coldtail-Invocation-Done"
_INVOCATION_DONE = INVOCATION_DONE_HEADER.lower()  # as read_headers keys them
DEFAULT_MAX_QUEUED_BYTES = 64 * 1024 * 1024
RETRY_AFTER_S = 1

# Request ids kept for the waits.
_MAX_IDS = 1000
_RUNTIME_DONE = b"platform.runtimeDone"


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


class _Listener:
    __slots__ = ("kind", "name", "paths", "sock", "thread")

    def __init__(self, name: str, kind: str, paths: Collection[str], sock: socket.socket) -> None:
        self.name = name
        self.kind = kind
        self.paths = frozenset(paths)
        self.sock = sock
        self.thread: threading.Thread | None = None


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
        # Request ids whose invocation is over as far as the extension can tell: the
        # instrumentation handed its spans over, or the Telemetry API reported runtimeDone.
        self._handed_over: OrderedDict[str, None] = OrderedDict()
        self._runtime_done: OrderedDict[str, None] = OrderedDict()
        self._unflushed_since: float | None = None  # monotonic arrival of the oldest delivery
        self._closed = False
        self.refused = 0  # requests answered 503 for want of room: their senders kept them

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
            close_socket(listener.sock)
        for conn in connections:
            close_socket(conn)

    def _accept(self, listener: _Listener) -> None:
        while True:
            try:
                conn, _ = listener.sock.accept()
            except OSError:
                return  # closed
            with self._cond:
                if self._closed:
                    close_socket(conn)
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
        except HttpError as e:
            respond(conn, e.status, str(e).encode(), "text/plain", keep_alive=False)
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._connections.discard(conn)
            rfile.close()
            close_socket(conn)

    def _serve_one(self, listener: _Listener, conn: socket.socket, rfile) -> bool:
        """Answer one request; False when the connection is to be closed."""
        line = rfile.readline(MAX_LINE + 1)
        while line in (b"\r\n", b"\n"):  # tolerated between requests
            line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        if len(line) > MAX_LINE:
            raise HttpError(431, "request line too long")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise HttpError(400, "malformed request line")
        method, target, version = parts
        headers = read_headers(rfile)
        keep_alive = version == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
        body = self._read_body(conn, rfile, headers)
        status, payload, content_type, extra = self._handle(
            listener, method.decode("latin-1"), target.decode("latin-1"), headers, body
        )
        respond(conn, status, payload, content_type, keep_alive, extra)
        return keep_alive

    def _read_body(self, conn: socket.socket, rfile, headers: Mapping[str, str]) -> bytes:
        limit = self.max_queued_bytes
        if "chunked" in headers.get("transfer-encoding", "").lower():
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            chunks: list[bytes] = []
            size = 0
            while True:
                size_line = rfile.readline(MAX_LINE + 1)
                if not size_line:
                    raise OSError("connection closed in a chunked body")
                chunk_size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if chunk_size == 0:
                    read_headers(rfile)  # trailers
                    return b"".join(chunks)
                size += chunk_size
                if size > limit:
                    raise HttpError(413, f"body exceeds {limit} bytes")
                chunks.append(exactly(rfile, chunk_size))
                rfile.readline(MAX_LINE + 1)
        length_text = headers.get("content-length", "0").strip() or "0"
        if not length_text.isdigit():
            raise HttpError(400, "invalid Content-Length")
        length = int(length_text)
        if length > limit:
            raise HttpError(413, f"body of {length} bytes exceeds {limit}")
        if length and headers.get("expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        return exactly(rfile, length)

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
            handed_over = headers.get(_INVOCATION_DONE, "")
            done: list[str] = []
        else:
            answer = b"", ""
            handed_over = ""
            done = _runtime_done_ids(body) if _RUNTIME_DONE in body else []
        delivery = Delivery(
            listener.name, target, content_type, headers.get("content-encoding", ""), body
        )
        if not self.put(delivery, done, handed_over):
            self.refused += 1
            busy = b"503 the collector is busy: retry later"
            return 503, busy, "text/plain", {"Retry-After": str(RETRY_AFTER_S)}
        return 200, answer[0], answer[1], {}

    # --- the queue ----------------------------------------------------------------------------

    def put(
        self, delivery: Delivery, runtime_done: Collection[str] = (), handed_over: str = ""
    ) -> bool:
        """Queue `delivery` (numbering it) and note the request ids of its runtimeDone events
        and the one whose spans it completes; False, queuing nothing, when that would pass
        `max_queued_bytes` or the front door is closed."""
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
            if self._unflushed_since is None:
                self._unflushed_since = time.monotonic()
            for request_id in runtime_done:
                _note(self._runtime_done, request_id)
            if handed_over:
                _note(self._handed_over, handed_over)
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
                lambda: request_id in self._runtime_done or self._closed, max(timeout, 0)
            ) and (request_id in self._runtime_done)

    def wait_invocation_over(self, request_id: str, timeout: float) -> bool:
        """Wait until the function handed over the spans of `request_id` or its runtimeDone
        arrived; False when `timeout` (seconds) ran out first or the front door closed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._over(request_id) or self._closed, max(timeout, 0)
            ) and self._over(request_id)

    def _over(self, request_id: str) -> bool:
        return request_id in self._handed_over or request_id in self._runtime_done

    @property
    def hands_over(self) -> bool:
        """Whether the function's instrumentation says when it handed an invocation's spans
        over (coldtail's does; another OTLP exporter does not)."""
        with self._cond:
            return bool(self._handed_over)

    def unflushed_age(self) -> float:
        """Seconds since the oldest delivery that arrived after the last `flushing` call; 0 when
        none did."""
        with self._cond:
            since = self._unflushed_since
        return 0.0 if since is None else time.monotonic() - since

    def flushing(self) -> None:
        """A flush of everything received so far begins."""
        with self._cond:
            self._unflushed_since = None


def _note(ids: OrderedDict[str, None], request_id: str) -> None:
    ids[request_id] = None
    if len(ids) > _MAX_IDS:
        ids.popitem(last=False)


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
