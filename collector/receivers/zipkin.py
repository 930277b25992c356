"""The `zipkin` receiver: Zipkin v2 JSON spans (`POST /api/v2/spans`, as Zipkin tracers and the
OpenTelemetry Zipkin exporters send them) to OTLP traces, as the OTel Collector translates them.

- Spans are grouped into one resource per `localEndpoint.serviceName` (`service.name`).
- Ids are hex: a 64-bit trace id is left-padded to 16 bytes. `timestamp` and `duration` are
  microseconds. `kind` maps to the span kind (none: internal).
- `tags` become attributes; `otel.status_code` / `otel.status_description` (or an `error` tag)
  set the status; `otel.scope.name` / `otel.scope.version` (or `otel.library.*`) the scope.
  With `parse_string_tags`, tags that read as a bool, integer or float become one.
- `annotations` become events; `remoteEndpoint` becomes `peer.service`, `network.peer.address`
  and `network.peer.port`.

Answers 202 once the pipeline accepted the spans, 400 for a body that is not Zipkin v2 JSON,
415 for other content types (v1 and protobuf are not read), 503 while the pipeline refuses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from pydantic import Field

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.http_body import RequestError, read_body
from collector.core.http_server import HttpServer
from collector.core.memory import MemoryPressure
from collector.core.pdata import Traces, check_ids, count_items, set_attr
from collector.core.signals import Signal
from collector.core.tls import TLSServerConfig

_KINDS = {
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "SERVER": Span.SPAN_KIND_SERVER,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
_STATUS = {"OK": Status.STATUS_CODE_OK, "ERROR": Status.STATUS_CODE_ERROR}
_SCOPE_NAME = ("otel.scope.name", "otel.library.name")
_SCOPE_VERSION = ("otel.scope.version", "otel.library.version")
_SPECIAL = {"otel.status_code", "otel.status_description", "error", *_SCOPE_NAME, *_SCOPE_VERSION}


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:9411"
    """host:port to listen on. Default 127.0.0.1:9411 (local only); port 0 picks a free port."""
    tls: TLSServerConfig | None = None
    """Serve over TLS (default none: plaintext)."""
    parse_string_tags: bool = False
    """Turn tags that read as a bool, integer or float into attributes of that type (default
    false: every tag is a string, as Zipkin sends it)."""
    max_request_body_size: int = Field(20 * 1024 * 1024, ge=1)
    """Largest request body accepted, as sent and after decompression (default 20 MiB)."""


def _id(text: Any, size: int, what: str) -> bytes:
    if not isinstance(text, str) or not text or len(text) > 2 * size:
        raise ValueError(f"{what}: expected up to {2 * size} hex digits, got {text!r}")
    try:
        return bytes.fromhex(text.rjust(2 * size, "0"))
    except ValueError:
        raise ValueError(f"{what}: not hex: {text!r}") from None


def _typed(value: str) -> Any:
    if value in ("true", "false"):
        return value == "true"
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            continue
    return value


def _span(raw: Mapping[str, Any], parse_tags: bool) -> tuple[str, str, str, Span]:
    """(service name, scope name, scope version, span) of one Zipkin v2 span."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a span object, got {type(raw).__name__}")
    span = Span()
    span.trace_id = _id(raw.get("traceId"), 16, "traceId")
    span.span_id = _id(raw.get("id"), 8, "id")
    if raw.get("parentId"):
        span.parent_span_id = _id(raw["parentId"], 8, "parentId")
    span.name = str(raw.get("name") or "")
    span.kind = _KINDS.get(str(raw.get("kind") or "").upper(), Span.SPAN_KIND_INTERNAL)
    start_us, duration_us = int(raw.get("timestamp") or 0), int(raw.get("duration") or 0)
    span.start_time_unix_nano = start_us * 1000
    span.end_time_unix_nano = (start_us + duration_us) * 1000
    tags = raw.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise ValueError("tags: expected an object")
    for key, value in tags.items():
        if key not in _SPECIAL:
            text = str(value)
            set_attr(span.attributes, str(key), _typed(text) if parse_tags else text)
    status = str(tags.get("otel.status_code", "")).upper()
    if status in _STATUS:
        span.status.code = _STATUS[status]
        if status == "ERROR":
            # OpenTelemetry exporters put an error's description in the `error` tag.
            span.status.message = str(tags.get("otel.status_description", tags.get("error", "")))
    elif "error" in tags:
        span.status.code = Status.STATUS_CODE_ERROR
        span.status.message = str(tags["error"])
    for annotation in raw.get("annotations") or ():
        event = span.events.add()
        event.time_unix_nano = int(annotation.get("timestamp") or 0) * 1000
        _event(event, str(annotation.get("value", "")))
    remote = raw.get("remoteEndpoint") or {}
    for key, attribute in (
        ("serviceName", "peer.service"),
        ("ipv4", "network.peer.address"),
        ("ipv6", "network.peer.address"),
        ("port", "network.peer.port"),
    ):
        if remote.get(key):
            set_attr(span.attributes, attribute, remote[key])
    service = str((raw.get("localEndpoint") or {}).get("serviceName") or "")
    scope = next((str(tags[k]) for k in _SCOPE_NAME if k in tags), "")
    version = next((str(tags[k]) for k in _SCOPE_VERSION if k in tags), "")
    return service, scope, version, span


def _event(event, value: str) -> None:
    """An annotation's value as the event: OpenTelemetry exporters write an event as the JSON
    `{"<name>": {<attributes>}}`, other tracers a plain text."""
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and len(parsed) == 1:
            ((name, attributes),) = parsed.items()
            if isinstance(attributes, dict):
                event.name = str(name)
                for key, attribute in attributes.items():
                    set_attr(event.attributes, str(key), attribute)
                return
    event.name = value


def translate(body: bytes, parse_tags: bool) -> Traces:
    """A Zipkin v2 JSON array of spans as OTLP traces; ValueError saying what is wrong."""
    try:
        spans = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(spans, list):
        raise ValueError("expected a JSON array of Zipkin v2 spans")
    batch = Traces()
    resources: dict[str, ResourceSpans] = {}
    scopes: dict[tuple[str, str, str], ScopeSpans] = {}
    for i, raw in enumerate(spans):
        try:
            service, scope, version, span = _span(raw, parse_tags)
        except (ValueError, TypeError, AttributeError) as e:
            raise ValueError(f"span {i}: {e}") from None
        rs = resources.get(service)
        if rs is None:
            rs = resources[service] = batch.resource_spans.add()
            if service:
                set_attr(rs.resource.attributes, "service.name", service)
        ss = scopes.get((service, scope, version))
        if ss is None:
            ss = scopes[service, scope, version] = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = scope, version
        ss.spans.append(span)
    return batch


class ZipkinReceiver:
    """After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.TRACES]
        self.log = settings.logger
        self.endpoint: str | None = None
        self._server: HttpServer | None = None
        self._pressure = settings.shared.get(MemoryPressure)
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.TRACES, str(settings.id), "http"
        )

    async def start(self, host: Host) -> None:
        app = web.Application()
        app.router.add_post("/api/v2/spans", self._spans)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls, auto_decompress=False)
        self.endpoint = await self._server.start()
        self.log.info("Zipkin listening", extra={"kv": {"endpoint": self.endpoint}})

    async def _spans(self, request: web.Request) -> web.Response:
        if request.content_type not in ("application/json", ""):
            return web.Response(
                status=415, text=f"unsupported Content-Type {request.content_type}: use JSON"
            )
        refusal = self._pressure.admits(request.content_length or 0)
        if refusal is not None:
            return web.Response(status=503, text=refusal, headers={"Retry-After": "1"})
        try:
            body = await read_body(request, self.config.max_request_body_size)
            batch = translate(body, self.config.parse_string_tags)
            check_ids(batch)
        except RequestError as e:
            return web.Response(status=e.http_status, text=str(e))
        except ValueError as e:
            return web.Response(status=400, text=str(e))
        items = count_items(batch)
        if items == 0:
            return web.Response(status=202)
        try:
            await self.next.consume(batch)
        except RetryableError as e:
            self._refused.inc(items)
            return web.Response(status=503, text=str(e), headers={"Retry-After": "1"})
        except PermanentError as e:
            self._refused.inc(items)
            return web.Response(status=400, text=str(e))
        self._accepted.inc(items)
        return web.Response(status=202)

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


factory = Factory(
    kind=Kind.RECEIVER,
    type="zipkin",
    config=Config,
    create=ZipkinReceiver,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Receives Zipkin v2 JSON spans over HTTP as OTLP traces.",
)
