"""Jaeger's HTTP collector API: `POST /api/traces` with one Thrift `jaeger.Batch` in the binary
protocol (Content-Type application/x-thrift or application/vnd.apache.thrift.binary), as
Jaeger clients and OpenTelemetry's Jaeger Thrift exporter send it to a collector endpoint.

Answers 202 once the pipeline took the spans; 400 for a body that is not a Batch; 415 for
another content type (the OTel Collector answers 400 there); 401 without valid credentials
when `auth` is set; 413 past `max_request_body_size`; 503 + Retry-After while the pipeline or
the memory limiter refuses, so that the client may send again; 500 for any other pipeline
error, as the OTel Collector does.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from collector.core.auth import ServerAuthenticator, Unauthenticated, server_authenticator
from collector.core.component import Host
from collector.core.consumer import PermanentError, RetryableError
from collector.core.http_body import RequestError, read_body
from collector.core.http_server import HttpServer
from collector.core.pdata import Traces
from collector.receivers.jaeger.config import ThriftHttpConfig
from collector.receivers.jaeger.intake import THRIFT_HTTP, Intake, retry_after_s
from collector.receivers.jaeger.thrift_codec import decode_batch
from collector.receivers.jaeger.translate import traces

PATH = "/api/traces"
CONTENT_TYPES = ("application/x-thrift", "application/vnd.apache.thrift.binary")
# Bodies larger than this are decoded on a thread, so that other clients are served meanwhile.
_DECODE_INLINE_BYTES = 256 * 1024


def decode(body: bytes) -> Traces:
    """The OTLP traces of a Thrift Batch body; ValueError saying what is wrong."""
    return traces([decode_batch(body)])


class ThriftHttpServer:
    def __init__(self, config: ThriftHttpConfig, intake: Intake) -> None:
        self.config = config
        self.intake = intake
        self._server: HttpServer | None = None
        self._auth: ServerAuthenticator | None = None

    async def start(self, host: Host) -> str:
        """The bound host:port."""
        self._auth = server_authenticator(host, self.config.auth)
        app = web.Application()
        app.router.add_post(PATH, self._traces)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls, auto_decompress=False)
        return await self._server.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    async def _traces(self, request: web.Request) -> web.Response:
        if self._auth is not None:
            try:
                self._auth.authenticate({k.lower(): v for k, v in request.headers.items()})
            except Unauthenticated as e:
                return web.Response(status=401, text=str(e))
        if request.content_type not in CONTENT_TYPES:
            return web.Response(
                status=415,
                text=f"unsupported content type {request.content_type!r}: use "
                + " or ".join(CONTENT_TYPES),
            )
        refusal = self.intake.pressure.admits(request.content_length or 0)
        if refusal is not None:
            return web.Response(status=503, text=refusal, headers={"Retry-After": "1"})
        try:
            body = await read_body(request, self.config.max_request_body_size)
        except RequestError as e:
            return web.Response(status=e.http_status, text=str(e))
        try:
            if len(body) > _DECODE_INLINE_BYTES:
                batch = await asyncio.to_thread(decode, body)
            else:
                batch = decode(body)
        except ValueError as e:
            return web.Response(status=400, text=f"unable to process request body: {e}")
        try:
            await self.intake.consume(batch, THRIFT_HTTP)
        except RetryableError as e:
            return web.Response(
                status=503, text=str(e), headers={"Retry-After": str(retry_after_s(e))}
            )
        except PermanentError as e:
            return web.Response(status=500, text=f"cannot submit Jaeger batch: {e}")
        except Exception as e:
            self.intake.log.error("Jaeger Thrift HTTP export failed", exc_info=True)
            return web.Response(status=500, text=f"cannot submit Jaeger batch: {e}")
        return web.Response(status=202)
