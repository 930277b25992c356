"""The `zipkin` receiver: the HTTP endpoint Zipkin tracers, Zipkin reporters and the
OpenTelemetry Zipkin exporters send to, as the OTel Collector's `zipkin` receiver serves it.

- `POST /api/v2/spans`: JSON (application/json) or protobuf (application/x-protobuf, a
  zipkin.proto3 `ListOfSpans`), both translated by `translate.py`.
- `POST /api/v1/spans`: JSON (application/json) or Thrift (application/x-thrift, a
  binary-protocol `list<Span>`), both translated by `translate_v1.py`.
- Bodies may be compressed: Content-Encoding gzip, deflate or zlib (deflate's other name).

Answers 202 once the pipeline accepted the spans, 400 for a body that cannot be read, 413 past
`max_request_body_size`, 415 for another content type, 503 + Retry-After while the pipeline or
the memory limiter refuses, so that the sender may try again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import NamedTuple

from aiohttp import web
from pydantic import Field

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.http_body import RequestError, read_body
from collector.core.http_server import HttpServer
from collector.core.memory import MemoryPressure
from collector.core.pdata import Traces, check_ids, count_items
from collector.core.signals import Signal
from collector.core.tls import TLSServerConfig
from collector.receivers.zipkin.json_codec import decode_v1, decode_v2
from collector.receivers.zipkin.proto import decode as decode_proto
from collector.receivers.zipkin.translate import traces as v2_traces
from collector.receivers.zipkin.translate_v1 import traces as v1_traces

V1_PATH = "/api/v1/spans"
V2_PATH = "/api/v2/spans"
JSON = "application/json"
THRIFT = "application/x-thrift"
PROTOBUF = "application/x-protobuf"
# Bodies larger than this are decoded on a thread, so that other senders are served meanwhile.
_DECODE_INLINE_BYTES = 256 * 1024


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:9411"
    """host:port to listen on. Default 127.0.0.1:9411 (local only); port 0 picks a free port."""
    tls: TLSServerConfig | None = None
    """Serve over TLS (default none: plaintext)."""
    parse_string_tags: bool = False
    """Turn tags and binary annotations that read as a bool, integer or float into attributes
    of that type (default false: every tag is a string, as Zipkin sends it)."""
    max_request_body_size: int = Field(20 * 1024 * 1024, ge=1)
    """Largest request body accepted, as sent and after decompression (default 20 MiB)."""


class _Format(NamedTuple):
    transport: str
    """The `transport` of the receiver's item counters, as the OTel Collector names it."""
    decode: Callable[[bytes, bool], Traces]


def _v2_json(body: bytes, parse_tags: bool) -> Traces:
    return v2_traces(decode_v2(body), parse_tags)


def _v2_proto(body: bytes, parse_tags: bool) -> Traces:
    return v2_traces(decode_proto(body), parse_tags)


def _v1_json(body: bytes, parse_tags: bool) -> Traces:
    return v1_traces(decode_v1(body), parse_tags)


def _v1_thrift(body: bytes, parse_tags: bool) -> Traces:
    # Imported for Thrift bodies only: the thrift package is not in the Lambda layer.
    from collector.receivers.zipkin.thrift_codec import decode as decode_thrift

    return v1_traces(decode_thrift(body), parse_tags)


# path -> content type -> format; a body without a content type is JSON.
_FORMATS: dict[str, dict[str, _Format]] = {
    V2_PATH: {
        JSON: _Format("http_v2_json", _v2_json),
        "": _Format("http_v2_json", _v2_json),
        PROTOBUF: _Format("http_v2_proto", _v2_proto),
    },
    V1_PATH: {
        JSON: _Format("http_v1_json", _v1_json),
        "": _Format("http_v1_json", _v1_json),
        THRIFT: _Format("http_v1_thrift", _v1_thrift),
    },
}


class ZipkinReceiver:
    """After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.TRACES]
        self.log = settings.logger
        self.endpoint: str | None = None
        self._server: HttpServer | None = None
        self._pressure = settings.shared.get(MemoryPressure)
        self._counters = {
            format.transport: settings.telemetry.receiver_counters(
                Signal.TRACES, str(settings.id), format.transport
            )
            for formats in _FORMATS.values()
            for format in formats.values()
        }

    async def start(self, host: Host) -> None:
        app = web.Application()
        for path in _FORMATS:
            app.router.add_post(path, self._spans)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls, auto_decompress=False)
        self.endpoint = await self._server.start()
        self.log.info("Zipkin listening", extra={"kv": {"endpoint": self.endpoint}})

    async def _spans(self, request: web.Request) -> web.Response:
        formats = _FORMATS[request.path]
        format = formats.get(request.content_type)
        if format is None:
            accepted = " or ".join(t for t in formats if t)
            return web.Response(
                status=415,
                text=f"unsupported Content-Type {request.content_type} on {request.path}: "
                f"use {accepted}",
            )
        refusal = self._pressure.admits(request.content_length or 0)
        if refusal is not None:
            return web.Response(status=503, text=refusal, headers={"Retry-After": "1"})
        try:
            body = await read_body(_zlib_as_deflate(request), self.config.max_request_body_size)
            if len(body) > _DECODE_INLINE_BYTES:
                batch = await asyncio.to_thread(self._decode, format, body)
            else:
                batch = self._decode(format, body)
        except RequestError as e:
            return web.Response(status=e.http_status, text=str(e))
        except ValueError as e:
            return web.Response(status=400, text=str(e))
        return await self._consume(batch, format.transport)

    def _decode(self, format: _Format, body: bytes) -> Traces:
        batch = format.decode(body, self.config.parse_string_tags)
        check_ids(batch)
        return batch

    async def _consume(self, batch: Traces, transport: str) -> web.Response:
        items = count_items(batch)
        if items == 0:
            return web.Response(status=202)
        accepted, refused = self._counters[transport]
        try:
            await self.next.consume(batch)
        except RetryableError as e:
            refused.inc(items)
            return web.Response(status=503, text=str(e), headers={"Retry-After": "1"})
        except PermanentError as e:
            refused.inc(items)
            return web.Response(status=400, text=str(e))
        accepted.inc(items)
        return web.Response(status=202)

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


def _zlib_as_deflate(request: web.Request) -> web.Request:
    """Zipkin senders may name the zlib format `zlib`, which HTTP calls `deflate`."""
    if request.headers.get("Content-Encoding", "").strip().lower() != "zlib":
        return request
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-encoding"}
    return request.clone(headers={**headers, "Content-Encoding": "deflate"})


factory = Factory(
    kind=Kind.RECEIVER,
    type="zipkin",
    config=Config,
    create=ZipkinReceiver,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Receives Zipkin v1 (JSON, Thrift) and v2 (JSON, protobuf) spans over HTTP as "
    "OTLP traces.",
)
