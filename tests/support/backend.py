"""A real local OTLP backend for tests: gRPC and HTTP servers that record what they receive and
fail on command.

In-process:

    async with Backend() as backend:
        backend.fail_next(2, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status=503)
        ... export to backend.grpc_endpoint or backend.http_endpoint ...
        await backend.wait_for(Signal.TRACES, 10)

As a process, writing every accepted request as one OTLP/JSON line and printing its endpoints
as one JSON line on stdout once it listens:

    python -m tests.support.backend --grpc-port 0 --http-port 0 --out received.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shlex
import signal as signals
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from google.protobuf.any_pb2 import Any
from google.rpc import error_details_pb2, status_pb2

from collector.core import otlpjson
from collector.core.endpoints import bound_port
from collector.core.pdata import (
    GRPC_SERVICES,
    REJECTED_FIELDS,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    count_items,
)
from collector.core.signals import Signal

_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"
_MAX_BODY = 32 * 1024 * 1024


@dataclass
class Request:
    """One export request the backend received."""

    signal: Signal
    transport: str  # "grpc" or "http"
    batch: object  # the decoded export request
    headers: dict[str, str]  # gRPC metadata or HTTP headers, keys lowercased
    accepted: bool  # False when the backend failed it on purpose


@dataclass
class _Reply:
    """A scripted answer to the next `remaining` requests."""

    remaining: float
    grpc_code: grpc.StatusCode = grpc.StatusCode.OK
    http_status: int = 200
    retry_after: float | None = None  # seconds
    message: str = ""
    delay: float = 0.0  # seconds to wait before answering
    rejected: int = 0  # partial success: items reported as rejected

    @property
    def fails(self) -> bool:
        return self.grpc_code != grpc.StatusCode.OK


@dataclass
class Backend:
    """OTLP over gRPC and HTTP on `host`, ports 0 = any free port. With `tls_cert` / `tls_key`
    (PEM files) both servers speak TLS. `on_accept` is called with every accepted Request.
    With `grpc_gzip` False the gRPC server refuses gzip-compressed requests (UNIMPLEMENTED),
    which shows whether a client compresses: gRPC hides the encoding from handlers."""

    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0
    tls_cert: str = ""
    tls_key: str = ""
    on_accept: Callable[[Request], None] | None = None
    grpc_gzip: bool = True
    requests: list[Request] = field(default_factory=list, init=False)
    _script: list[_Reply] = field(default_factory=list, init=False)
    _changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _grpc: grpc.aio.Server | None = field(default=None, init=False)
    _http: web.AppRunner | None = field(default=None, init=False)

    @property
    def grpc_endpoint(self) -> str:
        """host:port of the gRPC server."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL of the HTTP server (append /v1/traces etc.)."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.http_port}"

    # --- scripting ------------------------------------------------------------------------

    def fail_next(
        self,
        n: float = 1,
        *,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        http_status: int = 503,
        retry_after: float | None = None,
        message: str = "failing on purpose",
        delay: float = 0.0,
    ) -> None:
        """Fail the next `n` requests (either transport): gRPC status `grpc_code`, or HTTP
        `http_status`. `retry_after` (seconds) is sent as RetryInfo in the gRPC status details
        and as the HTTP Retry-After header. `delay` holds the answer back that long."""
        self._script.append(_Reply(n, grpc_code, http_status, retry_after, message, delay))

    def partial_next(
        self, n: int = 1, *, rejected: int, message: str = "rejected on purpose"
    ) -> None:
        """Accept the next `n` requests but answer with a partial success of `rejected` items."""
        self._script.append(_Reply(n, rejected=rejected, message=message))

    def down(self, **how) -> None:
        """Fail every request (as fail_next would) until up()."""
        self.up()
        self.fail_next(math.inf, **how)

    def up(self) -> None:
        """Drop whatever is scripted: accept everything."""
        self._script.clear()

    # --- what arrived ---------------------------------------------------------------------

    def accepted(self, signal: Signal) -> list:
        """The batches of `signal` accepted so far, in arrival order."""
        return [r.batch for r in self.requests if r.signal == signal and r.accepted]

    def item_count(self, signal: Signal) -> int:
        """Spans, metric points or log records accepted so far."""
        return sum(count_items(b) for b in self.accepted(signal))

    def attempts(self, signal: Signal) -> int:
        """Requests of `signal` received, failed on purpose or not."""
        return sum(1 for r in self.requests if r.signal == signal)

    async def wait_for(self, signal: Signal, items: int, timeout: float = 5.0) -> None:
        """Wait until at least `items` items of `signal` were accepted; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while self.item_count(signal) < items:
                self._changed.clear()
                await self._changed.wait()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        identity_only = [("grpc.compression_enabled_algorithms_bitset", 1)]
        self._grpc = grpc.aio.server(options=None if self.grpc_gzip else identity_only)
        self._grpc.add_generic_rpc_handlers([self._grpc_handler(s) for s in Signal])
        address = f"{self.host}:{self.grpc_port}"
        if self.tls_cert:
            with open(self.tls_cert, "rb") as cert, open(self.tls_key, "rb") as key:
                creds = grpc.ssl_server_credentials([(key.read(), cert.read())])
            self.grpc_port = self._grpc.add_secure_port(address, creds)
        else:
            self.grpc_port = self._grpc.add_insecure_port(address)
        await self._grpc.start()

        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/{signal}", self._http_export)
        self._http = web.AppRunner(app, access_log=None)
        await self._http.setup()
        ssl_context = None
        if self.tls_cert:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(self.tls_cert, self.tls_key)
        site = web.TCPSite(self._http, self.host, self.http_port, ssl_context=ssl_context)
        await site.start()
        self.http_port = bound_port(site)

    async def stop(self) -> None:
        if self._grpc:
            await self._grpc.stop(grace=None)
            self._grpc = None
        if self._http:
            await self._http.cleanup()
            self._http = None

    async def __aenter__(self) -> Backend:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # --- serving --------------------------------------------------------------------------

    async def _receive(self, signal: Signal, transport: str, batch, headers: dict) -> _Reply:
        """Record one request and return how to answer it."""
        reply = _Reply(1)
        if self._script:
            reply = self._script[0]
            reply.remaining -= 1
            if reply.remaining <= 0:
                self._script.pop(0)
        request = Request(signal, transport, batch, headers, accepted=not reply.fails)
        self.requests.append(request)
        if request.accepted and self.on_accept:
            self.on_accept(request)
        self._changed.set()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return reply

    def _response(self, signal: Signal, reply: _Reply):
        response = RESPONSE_TYPES[signal]()
        if reply.rejected or reply.message:
            setattr(response.partial_success, REJECTED_FIELDS[signal], reply.rejected)
            response.partial_success.error_message = reply.message
        return response

    def _grpc_handler(self, signal: Signal) -> grpc.GenericRpcHandler:
        async def export(batch, context: grpc.aio.ServicerContext):
            headers = {k.lower(): v for k, v in context.invocation_metadata() or ()}
            reply = await self._receive(signal, "grpc", batch, headers)
            if reply.fails:
                trailers: tuple[tuple[str, bytes], ...] = ()
                if reply.retry_after is not None:
                    info = error_details_pb2.RetryInfo()
                    info.retry_delay.FromNanoseconds(int(reply.retry_after * 1e9))
                    detail = Any()
                    detail.Pack(info)
                    status = status_pb2.Status(
                        code=reply.grpc_code.value[0], message=reply.message, details=[detail]
                    )
                    trailers = (("grpc-status-details-bin", status.SerializeToString()),)
                await context.abort(reply.grpc_code, reply.message, trailers)
            return self._response(signal, reply)

        method = grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=REQUEST_TYPES[signal].FromString,
            response_serializer=RESPONSE_TYPES[signal].SerializeToString,
        )
        return grpc.method_handlers_generic_handler(GRPC_SERVICES[signal], {"Export": method})

    async def _http_export(self, request: web.Request) -> web.Response:
        try:
            signal = Signal(request.match_info["signal"])
        except ValueError:
            return web.Response(status=404)
        content_type = request.content_type
        if content_type not in (_PROTOBUF, _JSON):
            return web.Response(status=415, text=f"unsupported content type {content_type}")
        body = await request.read()  # aiohttp undoes Content-Encoding: gzip
        try:
            if content_type == _JSON:
                batch = otlpjson.parse(body, REQUEST_TYPES[signal])
            else:
                batch = REQUEST_TYPES[signal].FromString(body)
        except Exception as e:
            return web.Response(status=400, text=f"cannot decode the request: {e}")
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = await self._receive(signal, "http", batch, headers)
        response_headers = {}
        if reply.fails:
            message = status_pb2.Status(code=reply.grpc_code.value[0], message=reply.message)
            if reply.retry_after is not None:
                response_headers["Retry-After"] = str(math.ceil(reply.retry_after))
        else:
            message = self._response(signal, reply)
        body = (
            otlpjson.dumps(message).encode()
            if content_type == _JSON
            else message.SerializeToString()
        )
        return web.Response(
            status=reply.http_status, body=body, content_type=content_type, headers=response_headers
        )


def self_signed_cert(directory: str) -> tuple[str, str]:
    """Write a one-day self-signed certificate for localhost / 127.0.0.1 and its key into
    `directory`; returns (cert_file, key_file). Needs the openssl command."""
    cert, key = f"{directory}/cert.pem", f"{directory}/key.pem"
    request = shlex.split(
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1"
    )
    subprocess.run(
        [*request, "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
    )
    return cert, key


async def _serve(args: argparse.Namespace) -> None:
    with open(args.out, "a", encoding="utf-8") as out:

        def write(request: Request) -> None:
            out.write(otlpjson.dumps(request.batch) + "\n")
            out.flush()

        backend = Backend(
            host=args.host, grpc_port=args.grpc_port, http_port=args.http_port, on_accept=write
        )
        if args.fail_next:
            backend.fail_next(args.fail_next)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signals.SIGINT, signals.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with backend:
            print(
                json.dumps({"grpc": backend.grpc_endpoint, "http": backend.http_endpoint}),
                flush=True,
            )
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.backend",
        description="A local OTLP backend that writes every accepted request as an OTLP/JSON "
        "line and prints its endpoints as JSON on stdout once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--grpc-port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--http-port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--out", required=True, help="file to append OTLP/JSON lines to")
    parser.add_argument(
        "--fail-next",
        type=int,
        default=0,
        metavar="N",
        help="answer the first N requests with UNAVAILABLE / 503",
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
