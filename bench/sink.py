"""The throughput benchmark's backend, in a process of its own so that parsing what the
collectors send never delays the load generator's clock: an OTLP/gRPC trace endpoint that parses
each request and counts its spans, and on a second port OTLP/HTTP protobuf's `POST /v1/traces`,
which does the same, and `GET /spans` answering that count. A client sending straight to it
measures the round trip without a collector in between.

    python -m bench.sink    # prints "<grpc port> <http port>", then serves until killed
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import grpc
from aiohttp import web

from collector.core.endpoints import bound_port
from collector.core.pdata import GRPC_SERVICES, Traces, count_spans
from collector.core.signals import Signal


async def serve() -> None:
    spans = 0

    async def export(data: bytes, context) -> bytes:
        nonlocal spans
        spans += count_spans(Traces.FromString(data))
        return b""

    async def count(_request: web.Request) -> web.Response:
        return web.Response(text=str(spans))

    async def export_http(request: web.Request) -> web.Response:
        nonlocal spans
        spans += count_spans(Traces.FromString(await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    handler = grpc.unary_unary_rpc_method_handler(export)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(GRPC_SERVICES[Signal.TRACES], {"Export": handler}),)
    )
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    app = web.Application()
    app.router.add_get("/spans", count)
    app.router.add_post("/v1/traces", export_http)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(grpc_port, bound_port(site), flush=True)
    await server.wait_for_termination()


class SinkProcess:
    """`python -m bench.sink` as a subprocess: `port` takes OTLP/gRPC, `http_port` OTLP/HTTP,
    `spans()` counts."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sink"], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        self.port, self.http_port = map(int, self.proc.stdout.readline().split())
        self._url = f"http://127.0.0.1:{self.http_port}/spans"
        self._session = aiohttp.ClientSession()

    async def spans(self) -> int:
        async with self._session.get(self._url) as response:
            return int(await response.text())

    async def wait_for(self, spans: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self.spans() < spans:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink holds {await self.spans()} of {spans} spans")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        await self._session.close()
        self.proc.kill()
        self.proc.wait()


if __name__ == "__main__":
    asyncio.run(serve())
