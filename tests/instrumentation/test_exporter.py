"""The socket OTLP/HTTP exporter: against the collector's OTLP receiver (the real peer), and
against a scripted raw HTTP server for keep-alive, reconnects, odd answers, timeouts and TLS."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from instrumentation.exporter import (
    DEFAULT_ENDPOINT,
    INVOCATION_DONE_HEADER,
    ExportError,
    OtlpHttpExporter,
)
from instrumentation.otlp import encode_export_request
from instrumentation.spans import Span
from tests.support.backend import self_signed_cert
from tests.support.process import free_port

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n"


def request_body(name: str = "span") -> bytes:
    span = Span(name)
    span.end()
    return encode_export_request({"service.name": "f"}, [span])


class ScriptedServer:
    """Accepts connections and answers each request with the next scripted reply: bytes to
    send, "close" (close the connection without answering) or ("sleep", seconds)."""

    def __init__(self, replies: list, tls: ssl.SSLContext | None = None) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.tls = tls
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    conn.close()
                    continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            buffer = b""
            while self.replies:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(buffer) < length:
                    buffer += conn.recv(65536)
                self.requests.append(head + b"\r\n\r\n" + buffer[:length])
                buffer = buffer[length:]
                reply = self.replies.pop(0)
                if reply == "close":
                    return
                if isinstance(reply, tuple):
                    time.sleep(reply[1])
                    return
                conn.sendall(reply)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    servers = []

    def start(replies, tls=None) -> ScriptedServer:
        server = ScriptedServer(replies, tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_exports_to_the_collector_receiver_over_one_connection(collector):
    exporter = OtlpHttpExporter(f"{collector.endpoint}/v1/traces")
    exporter.export(request_body("first"), timeout_s=5)
    exporter.export(request_body("second"), timeout_s=5)

    assert [s.name for s in collector.spans()] == ["first", "second"]
    assert all(isinstance(r, ExportTraceServiceRequest) for r in collector.requests)
    exporter.close()


def test_collector_rejects_garbage_as_permanent(collector):
    exporter = OtlpHttpExporter(f"{collector.endpoint}/v1/traces")
    with pytest.raises(ExportError, match="HTTP 400") as raised:
        exporter.export(b"\xff\xff\xff", timeout_s=5)
    assert raised.value.retryable is False


def test_keep_alive_and_request_format(scripted):
    server = scripted([OK, OK])
    exporter = OtlpHttpExporter(
        f"http://127.0.0.1:{server.port}/custom/path", {"Authorization": "Bearer t", "x-a": "b"}
    )
    body = request_body()
    exporter.export(body, 2)
    exporter.export(body, 2)

    assert server.connections == 1
    head, _, sent = server.requests[0].partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /custom/path HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in lines
    assert "Content-Type: application/x-protobuf" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert "Authorization: Bearer t" in lines
    assert "x-a: b" in lines
    assert sent == body


def test_an_invocations_last_export_names_it(scripted):
    server = scripted([OK, OK])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    exporter.export(request_body(), 2)
    exporter.export(request_body(), 2, invocation_done="8f5e0a4e-2b1c-4f0e-9d3a-1c2b3a4d5e6f")
    first, last = (r.partition(b"\r\n\r\n")[0].decode().split("\r\n") for r in server.requests)
    assert not [line for line in first if line.startswith(INVOCATION_DONE_HEADER)]
    assert f"{INVOCATION_DONE_HEADER}: 8f5e0a4e-2b1c-4f0e-9d3a-1c2b3a4d5e6f" in last


def test_reconnects_once_when_the_kept_alive_connection_was_closed(scripted):
    server = scripted([OK, "close", OK])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    exporter.export(request_body(), 2)
    exporter.export(request_body(), 2)

    assert server.connections == 2
    assert len(server.requests) == 3


def test_a_fresh_connection_closed_without_answer_is_a_retryable_failure(scripted):
    server = scripted(["close", "close"])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    with pytest.raises(ExportError) as raised:
        exporter.export(request_body(), 2)
    assert raised.value.retryable
    assert server.connections == 1


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (404, False), (429, True), (503, True)]
)
def test_error_statuses(scripted, status, retryable):
    answer = f"HTTP/1.1 {status} Nope\r\nContent-Length: 4\r\n\r\nwhy!".encode()
    server = scripted([answer])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    with pytest.raises(ExportError, match=f"HTTP {status} Nope 'why!'") as raised:
        exporter.export(request_body(), 2)
    assert raised.value.retryable is retryable


def test_chunked_answer_then_keep_alive(scripted):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    server = scripted([chunked, OK])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    exporter.export(request_body(), 2)
    exporter.export(request_body(), 2)
    assert server.connections == 1


def test_connection_close_answer_opens_a_new_connection(scripted):
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    server = scripted([closing, OK])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    exporter.export(request_body(), 2)
    exporter.export(request_body(), 2)
    assert server.connections == 2


def test_timeout_bounds_the_whole_export(scripted):
    server = scripted([("sleep", 2)])
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{server.port}/v1/traces")
    started = time.monotonic()
    with pytest.raises(ExportError) as raised:
        exporter.export(request_body(), 0.2)
    assert time.monotonic() - started < 1.5
    assert raised.value.retryable


def test_connection_refused_is_retryable():
    exporter = OtlpHttpExporter(f"http://127.0.0.1:{free_port()}/v1/traces")
    with pytest.raises(ExportError) as raised:
        exporter.export(request_body(), 1)
    assert raised.value.retryable


def test_https(scripted, tmp_path, monkeypatch):
    cert, key = self_signed_cert(str(tmp_path))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = scripted([OK], tls=server_context)
    monkeypatch.setenv("SSL_CERT_FILE", cert)

    exporter = OtlpHttpExporter(f"https://localhost:{server.port}/v1/traces")
    exporter.export(request_body(), 5)

    assert len(server.requests) == 1


def test_https_with_an_untrusted_certificate_fails(scripted, tmp_path):
    cert, key = self_signed_cert(str(tmp_path))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = scripted([OK], tls=server_context)

    exporter = OtlpHttpExporter(f"https://localhost:{server.port}/v1/traces")
    with pytest.raises(ExportError, match="CERTIFICATE_VERIFY_FAILED"):
        exporter.export(request_body(), 5)


# --- configuration -------------------------------------------------------------------------


def test_default_endpoint():
    exporter = OtlpHttpExporter.from_env({})
    assert exporter.endpoint == DEFAULT_ENDPOINT
    assert (exporter.host, exporter.port, exporter.path, exporter.tls) == (
        "127.0.0.1",
        4318,
        "/v1/traces",
        False,
    )


@pytest.mark.parametrize(
    ("environ", "endpoint"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
            "http://collector:4318/v1/traces",
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c.example/"}, "https://c.example/v1/traces"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://ignored:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1]:9000/custom",
            },
            "http://[::1]:9000/custom",
        ),
    ],
)
def test_endpoint_from_env(environ, endpoint):
    assert OtlpHttpExporter.from_env(environ).endpoint == endpoint


def test_url_parts():
    exporter = OtlpHttpExporter("https://[::1]:9000/custom")
    assert (exporter.host, exporter.port, exporter.path, exporter.tls) == (
        "::1",
        9000,
        "/custom",
        True,
    )
    assert OtlpHttpExporter("https://c.example").port == 443
    assert OtlpHttpExporter("http://c.example").path == "/"
    with pytest.raises(ValueError):
        OtlpHttpExporter("grpc://c.example:4317")


def test_headers_from_env_are_url_decoded_and_the_traces_ones_win(scripted):
    server = scripted([OK])
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{server.port}/v1/traces",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b, shared=general",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "shared=traces,x-token=%3D%2C",
    }
    OtlpHttpExporter.from_env(environ).export(request_body(), 2)

    head = server.requests[0].partition(b"\r\n\r\n")[0].decode().split("\r\n")
    assert "api-key: a b" in head
    assert "shared: traces" in head
    assert "shared: general" not in head
    assert "x-token: =," in head


def test_grpc_protocol_is_replaced_with_http_protobuf(caplog):
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        exporter = OtlpHttpExporter.from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert "'grpc' is not supported" in caplog.text
    assert exporter.endpoint == DEFAULT_ENDPOINT
