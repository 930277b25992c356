"""The `otlp` receiver: OTLP over gRPC and over HTTP (protobuf or JSON), on one event loop.

Requests are parsed once into the signal's export request and handed to the pipeline as is.
Failures map as in the OTel Collector: undecodable data is 400 / INVALID_ARGUMENT, a retryable
pipeline error is 503 + Retry-After / UNAVAILABLE + RetryInfo, a permanent pipeline error is
500 / INTERNAL (or a partial success when only some items were rejected).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple

from aiohttp import web
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from collector.core import client, otlpjson, wire
from collector.core.auth import (
    AuthConfig,
    ServerAuthenticator,
    Unauthenticated,
    server_authenticator,
)
from collector.core.client import ClientInfo
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import (
    ComponentConfig,
    Defaulted,
    Duration,
    ListenEndpoint,
    null_is_defaults,
)
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.endpoints import ListenError, split_endpoint, with_port
from collector.core.grpc_server import Call, GrpcServer, Listener, RpcError, ServerLimits
from collector.core.http_body import RequestError, read_body
from collector.core.memory import MemoryPressure
from collector.core.pdata import (
    GRPC_SERVICES,
    LEVELS,
    REJECTED_FIELDS,
    REQUEST_TYPES,
    RESPONSE_TYPES,
    Encoded,
    accepts_encoded,
    check_ids,
    count_items,
    metric_points,
    resources,
    split_wire,
)
from collector.core.signals import Signal
from collector.core.tls import ServerTLS, TLSServerConfig

_MIB = 1024 * 1024
# The config keys of the two listeners, named when one cannot listen.
_GRPC_KEY, _HTTP_KEY = "protocols::grpc::endpoint", "protocols::http::endpoint"
_PRESSURE_RETRY_S = 1.0  # a memory limiter measures about that often
# A large protobuf request goes down the pipeline in parts of about this many bytes, so that
# processing it does not hold other clients up for long: with 50,000 resources through
# coldstart and tail_latency, the worst latency of a small request beside it fell from 2 s to
# about 0.5 s (tests/e2e/test_faults.py).
_BYTES_PER_PUSH = 256 * 1024
_DEFAULT_MAX_REQUEST_BODY_SIZE = 20 * _MIB
# Sent when the pipeline gives no hint; clients back off exponentially from here anyway.
_DEFAULT_RETRY_AFTER_S = 1
# Long enough for in-flight exports to answer, short enough not to stall a shutdown.
_SHUTDOWN_GRACE_S = 5.0


def _zero_is_default_body_size(value: int) -> int:
    return value or _DEFAULT_MAX_REQUEST_BODY_SIZE


def _url_path(value: object) -> object:
    if isinstance(value, str) and not value.startswith("/"):
        return "/" + value
    return value


_UrlPath = Annotated[str, BeforeValidator(_url_path)]


# --- config -----------------------------------------------------------------------------------


class CorsConfig(ComponentConfig):
    allowed_origins: list[str] = []
    """Origins allowed to send cross-origin requests; `*` matches any run of characters, as in
    `https://*.example.com`, and a lone `*` allows every origin. Default: empty, CORS off."""

    allowed_headers: list[str] = []
    """Request headers allowed beyond Accept, Content-Type, Content-Encoding, Origin and
    X-Requested-With (always allowed); `*` allows any. Default: empty, only those."""

    max_age: int = Field(0, ge=0)
    """How long browsers may cache a preflight answer, in seconds. Default 0: no
    Access-Control-Max-Age header, the browser's own default applies."""


class KeepaliveServerParameters(ComponentConfig):
    max_connection_idle: Duration = 0.0
    """Close a connection without calls for this long (default 0 = never)."""
    max_connection_age: Duration = 0.0
    """Close a connection this old, so that clients spread again over the servers behind a
    load balancer (default 0 = never)."""
    max_connection_age_grace: Duration = 0.0
    """After `max_connection_age`, how long calls in progress may finish (default 0 = no
    limit)."""
    time: Duration = 0.0
    """Ping a client after this long without activity (default 0 = gRPC's, 2 hours)."""
    timeout: Duration = 0.0
    """Close the connection when a ping gets no answer in this long (default 0 = gRPC's,
    20s)."""


class KeepaliveEnforcementPolicy(ComponentConfig):
    min_time: Duration = 0.0
    """Least time between a client's pings; a client pinging more often is disconnected
    (default 0 = gRPC's, 5 minutes)."""
    permit_without_stream: bool = False
    """Allow client pings while no call is in progress (default false)."""


class KeepaliveConfig(ComponentConfig):
    server_parameters: KeepaliveServerParameters = Field(default_factory=KeepaliveServerParameters)
    """Connection ages and the server's own pings."""
    enforcement_policy: KeepaliveEnforcementPolicy = Field(
        default_factory=KeepaliveEnforcementPolicy
    )
    """What the server allows of clients' pings."""

    def limits(self, base: ServerLimits) -> ServerLimits:
        """`base` with these settings (unset ones left as gRPC's defaults)."""
        server, policy = self.server_parameters, self.enforcement_policy
        return dataclasses.replace(
            base,
            max_connection_idle=server.max_connection_idle,
            max_connection_age=server.max_connection_age,
            max_connection_age_grace=server.max_connection_age_grace,
            keepalive_time=server.time or base.keepalive_time,
            keepalive_timeout=server.timeout or base.keepalive_timeout,
            min_ping_interval=policy.min_time or base.min_ping_interval,
            permit_pings_without_calls=policy.permit_without_stream,
        )


class GrpcConfig(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:4317"
    """host:port to listen on for OTLP/gRPC. Default 127.0.0.1:4317 (local only); port 0 picks
    a free port."""

    max_recv_msg_size_mib: int = Field(4, ge=0)
    """Largest request accepted, in MiB, measured after decompression; larger ones get
    RESOURCE_EXHAUSTED. Default 4; 0 means the gRPC default (4 MiB)."""

    max_concurrent_streams: int = Field(0, ge=0)
    """Most concurrent streams (requests) per client connection. Default 0: the gRPC default
    (no limit)."""

    keepalive: KeepaliveConfig | None = None
    """Connection keepalive and ages, as gRPC servers take them (default none: gRPC's)."""

    tls: TLSServerConfig | None = None
    """TLS, and with `client_ca_file` mutual TLS (default none: plaintext)."""

    auth: AuthConfig | None = None
    """Requests authenticated by an extension, as `{authenticator: bearertokenauth}`; others
    get UNAUTHENTICATED (default none)."""

    include_metadata: bool = False
    """Hand each request's gRPC metadata down the pipeline with its data, for the batch
    processor's metadata_keys (default false)."""


class HttpConfig(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:4318"
    """host:port to listen on for OTLP/HTTP. Default 127.0.0.1:4318 (local only); port 0 picks
    a free port."""

    max_request_body_size: Annotated[int, AfterValidator(_zero_is_default_body_size)] = Field(
        _DEFAULT_MAX_REQUEST_BODY_SIZE, ge=0
    )
    """Largest request body accepted, in bytes, both as sent and after decompression; larger
    ones get 413. Default 20971520 (20 MiB); 0 means that default."""

    traces_url_path: _UrlPath = "/v1/traces"
    """URL path receiving traces. Default /v1/traces."""

    metrics_url_path: _UrlPath = "/v1/metrics"
    """URL path receiving metrics. Default /v1/metrics."""

    logs_url_path: _UrlPath = "/v1/logs"
    """URL path receiving logs. Default /v1/logs."""

    cors: Annotated[CorsConfig, Defaulted] = Field(default_factory=CorsConfig)
    """Cross-origin (browser) access. Default: off."""

    tls: TLSServerConfig | None = None
    """TLS, and with `client_ca_file` mutual TLS (default none: plaintext)."""

    auth: AuthConfig | None = None
    """Requests authenticated by an extension, as `{authenticator: bearertokenauth}`; others
    get 401 (default none)."""

    include_metadata: bool = False
    """Hand each request's headers down the pipeline with its data, for the batch
    processor's metadata_keys (default false)."""

    @model_validator(mode="after")
    def _distinct_paths(self) -> HttpConfig:
        paths = [self.traces_url_path, self.metrics_url_path, self.logs_url_path]
        if len(set(paths)) != len(paths):
            raise ValueError(f"traces, metrics and logs URL paths must differ, got {paths}")
        return self

    def url_path(self, signal: Signal) -> str:
        return getattr(self, f"{signal.value}_url_path")


class Protocols(ComponentConfig):
    grpc: Annotated[GrpcConfig | None, Defaulted] = None
    """OTLP/gRPC server. Present (even empty) enables it; absent disables it."""

    http: Annotated[HttpConfig | None, Defaulted] = None
    """OTLP/HTTP server. Present (even empty) enables it; absent disables it."""


class Limits(ComponentConfig):
    """Bounds on the work one request can cause, beside the size limits of each protocol; a
    request over one is refused whole with 400 / INVALID_ARGUMENT, naming the limit."""

    max_resources: int = Field(100_000, ge=0)
    """Most resources (resource_spans, resource_metrics, resource_logs) in one request
    (default 100000; 0 = no limit)."""
    max_items: int = Field(1_000_000, ge=0)
    """Most spans, metric data points or log records in one request (default 1000000; 0 = no
    limit)."""
    max_attributes: int = Field(0, ge=0)
    """Most attributes on one resource, span or log record (default 0 = no limit; the
    OpenTelemetry SDKs keep 128)."""


class Config(ComponentConfig):
    protocols: Annotated[Protocols, Defaulted] = Field(default_factory=Protocols)
    """The transports to serve; at least one of grpc and http must be set."""
    limits: Limits = Field(default_factory=Limits)
    """Per-request bounds on resources, items and attributes."""

    @model_validator(mode="before")
    @classmethod
    def _null_body(cls, data: object) -> object:
        # `otlp:` with nothing after it must fail on the missing protocols, not on its type.
        return null_is_defaults(data)

    @model_validator(mode="after")
    def _some_protocol(self) -> Config:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise ValueError(
                "must specify at least one protocol (protocols::grpc or protocols::http) "
                "when using the OTLP receiver"
            )
        return self


# --- encodings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Codec:
    content_type: str
    decode: Callable[[bytes, type[Message]], Any]
    encode: Callable[[Any], bytes]


_PROTOBUF = _Codec(
    "application/x-protobuf",
    lambda data, message_type: message_type.FromString(data),
    lambda message: message.SerializeToString(),
)
_JSON = _Codec("application/json", otlpjson.parse, lambda message: otlpjson.dumps(message).encode())
_CODECS = {codec.content_type: codec for codec in (_PROTOBUF, _JSON)}

_HTTP_TO_RPC_CODE = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    413: code_pb2.RESOURCE_EXHAUSTED,
    500: code_pb2.INTERNAL,
    503: code_pb2.UNAVAILABLE,
}

_SAFE_CORS_HEADERS = frozenset(
    {"accept", "content-type", "content-encoding", "origin", "x-requested-with"}
)


def _retry_after_s(error: RetryableError) -> float:
    return _DEFAULT_RETRY_AFTER_S if error.retry_after is None else max(0.0, error.retry_after)


def _status(code: int, message: str, retry_after_s: float | None = None) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if retry_after_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(round(retry_after_s * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _split_resources(batch, max_bytes: int) -> list:
    """`batch` as batches of whole resources of about `max_bytes` encoded each, in order: a
    large decoded JSON request goes down the pipeline in parts, as a protobuf one does."""
    if batch.ByteSize() <= max_bytes:
        return [batch]
    parts, size = [type(batch)()], 0
    for res in resources(batch):
        n = res.ByteSize()
        if size and size + n > max_bytes:
            parts.append(type(batch)())
            size = 0
        resources(parts[-1]).add().CopyFrom(res)
        size += n
    return parts


class _Part(NamedTuple):
    """A part of a request: the batch, its protobuf encoding (None when decoded from JSON)
    and its item count."""

    batch: Any
    data: bytes | None
    items: int


def _check_limits(limits: Limits, signal: Signal, parts: list[_Part]) -> None:
    """ValueError naming the first of `limits` the request's parts exceed together."""
    batches = [part.batch for part in parts]
    if limits.max_resources:
        n = sum(len(resources(batch)) for batch in batches)
        if n > limits.max_resources:
            raise ValueError(f"{n} resources, above limits::max_resources ({limits.max_resources})")
    if limits.max_items:
        n = sum(part.items for part in parts)
        if n > limits.max_items:
            raise ValueError(f"{n} items, above limits::max_items ({limits.max_items})")
    if limits.max_attributes:
        n = max((_most_attributes(signal, batch) for batch in batches), default=0)
        if n > limits.max_attributes:
            raise ValueError(
                f"an item with {n} attributes, above limits::max_attributes "
                f"({limits.max_attributes})"
            )


def _most_attributes(signal: Signal, batch) -> int:
    """The most attributes on one resource, span, log record or data point of `batch`."""
    scopes_field, items_field = LEVELS[signal]
    most = 0
    for res in resources(batch):
        most = max(most, len(res.resource.attributes))
        for scope in getattr(res, scopes_field):
            for item in getattr(scope, items_field):
                if signal is Signal.METRICS:
                    for point in metric_points(item):
                        most = max(most, len(point.attributes))
                else:
                    most = max(most, len(item.attributes))
    return most


def _origin_matcher(patterns: list[str]) -> Callable[[str], bool]:
    regexes = [
        re.compile(".*".join(re.escape(part) for part in p.lower().split("*"))) for p in patterns
    ]
    return lambda origin: any(r.fullmatch(origin.lower()) for r in regexes)


# --- the receiver ---------------------------------------------------------------------------


class OtlpReceiver:
    """Serves OTLP/gRPC and OTLP/HTTP for the signals in `next` (others: UNIMPLEMENTED / 404).

    After start, `grpc_endpoint` / `http_endpoint` hold the bound "host:port" (None when that
    protocol is off)."""

    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = dict(next)
        self.log = settings.logger
        self.grpc_endpoint: str | None = None
        self.http_endpoint: str | None = None
        self._grpc_server: GrpcServer | None = None
        self._http_runner: web.AppRunner | None = None
        self._http_tls: ServerTLS | None = None
        self._grpc_auth: ServerAuthenticator | None = None
        self._http_auth: ServerAuthenticator | None = None
        self._pass_bytes: dict[Signal, bool] = {}
        self._pressure = settings.shared.get(MemoryPressure)
        telemetry, receiver = settings.telemetry, str(settings.id)
        self._counters = {
            (signal, transport): telemetry.receiver_counters(signal, receiver, transport)
            for signal in self.next
            for transport in ("grpc", "http")
        }
        http = config.protocols.http
        cors = http.cors if http else CorsConfig()
        self._cors = cors if cors.allowed_origins else None
        self._cors_origin_allowed = _origin_matcher(cors.allowed_origins)

    async def start(self, host: Host) -> None:
        # Pipelines that take the request's own bytes (see pdata.Encoded) get them, after it
        # was decoded here to be checked and counted.
        self._pass_bytes = {signal: accepts_encoded(c) for signal, c in self.next.items()}
        protocols = self.config.protocols
        if protocols.grpc is not None:
            self._grpc_auth = server_authenticator(host, protocols.grpc.auth)
        if protocols.http is not None:
            self._http_auth = server_authenticator(host, protocols.http.auth)
        try:
            if protocols.grpc is not None:
                self.grpc_endpoint = await self._start_grpc(protocols.grpc)
                self.log.info("OTLP/gRPC listening", extra={"kv": {"endpoint": self.grpc_endpoint}})
            if protocols.http is not None:
                self.http_endpoint = await self._start_http(protocols.http)
                self.log.info("OTLP/HTTP listening", extra={"kv": {"endpoint": self.http_endpoint}})
        except BaseException:
            await self.shutdown()
            raise

    async def shutdown(self) -> None:
        if self._grpc_server is not None:
            server, self._grpc_server = self._grpc_server, None
            await server.stop(_SHUTDOWN_GRACE_S)
        if self._http_runner is not None:
            runner, self._http_runner = self._http_runner, None
            await runner.cleanup()
        if self._http_tls is not None:
            await self._http_tls.stop()
            self._http_tls = None

    async def _decode(self, signal: Signal, body: bytes, codec: _Codec) -> list[_Part]:
        """The request as parts: a large protobuf request
        is cut between resources first and decoded part by part, with other clients' requests
        in between, and then goes down the pipeline in those parts. DecodeError / ValueError
        when any part is invalid: then nothing of the request has gone anywhere."""
        request_type = REQUEST_TYPES[signal]
        parts: list[_Part] = []
        if codec is not _PROTOBUF:
            if len(body) > _BYTES_PER_PUSH:
                # Parsed on a thread: the event loop serves other clients in between.
                batch = await asyncio.to_thread(codec.decode, body, request_type)
            else:
                batch = codec.decode(body, request_type)
            for part in _split_resources(batch, _BYTES_PER_PUSH):
                if parts:
                    await asyncio.sleep(0)
                check_ids(part)
                parts.append(_Part(part, None, count_items(part)))
        else:
            for data in split_wire(body, _BYTES_PER_PUSH):
                if parts:
                    await asyncio.sleep(0)
                batch = request_type.FromString(data)
                check_ids(batch, data)
                parts.append(_Part(batch, data, count_items(batch)))
        _check_limits(self.config.limits, signal, parts)
        return parts

    async def _export(
        self, signal: Signal, parts: list[_Part], transport: str, sender: ClientInfo | None
    ):
        """Push the request's parts down the pipeline, with `sender` as the current client when
        given, and return the export response."""
        if sender is None:
            return await self._export_parts(signal, parts, transport)
        with client.using(sender):
            return await self._export_parts(signal, parts, transport)

    async def _export_parts(self, signal: Signal, parts: list[_Part], transport: str):
        """Push the request's parts down the pipeline and return the export response; pipeline
        errors propagate, except a partial rejection, which the response reports. A part whose
        encoding is known goes as such to pipelines that take bytes (pdata.Encoded); other
        pipelines get it decoded, with that encoding kept for re-encoding (core.wire)."""
        response = RESPONSE_TYPES[signal]()
        accepted, refused = self._counters[signal, transport]
        counts = [part.items for part in parts]
        rejected, message = 0, ""
        for i, (batch, data, items) in enumerate(parts):
            if items == 0:
                continue
            if i:
                await asyncio.sleep(0)  # other clients' requests in between the parts
            if data is not None:
                if self._pass_bytes.get(signal):
                    batch = Encoded(signal, data, items)
                else:
                    wire.keep(batch, data)
            try:
                await self.next[signal].consume(batch)
            except PermanentError as e:
                if e.rejected is None or e.rejected >= items:
                    refused.inc(sum(counts[i:]))
                    raise
                accepted.inc(items - e.rejected)
                refused.inc(e.rejected)
                rejected, message = rejected + e.rejected, str(e)
                continue
            except Exception:
                refused.inc(sum(counts[i:]))
                raise
            accepted.inc(items)
        if rejected:
            setattr(response.partial_success, REJECTED_FIELDS[signal], rejected)
            response.partial_success.error_message = message
        return response

    # --- gRPC ---------------------------------------------------------------------------------

    async def _start_grpc(self, config: GrpcConfig) -> str:
        limits = ServerLimits(
            max_recv_msg_size=(config.max_recv_msg_size_mib or 4) * _MIB,
            max_concurrent_streams=config.max_concurrent_streams,
        )
        if config.keepalive is not None:
            limits = config.keepalive.limits(limits)
        handlers = {
            f"/{GRPC_SERVICES[signal]}/Export": functools.partial(self._grpc_export, signal)
            for signal in self.next
        }
        listener = Listener(config.endpoint, config.tls, self._grpc_auth, key=_GRPC_KEY)
        self._grpc_server = GrpcServer(handlers, limits, self.log, listener)
        return await self._grpc_server.start()

    async def _grpc_export(self, signal: Signal, call: Call) -> bytes:
        refusal = self._pressure.admits(len(call.message))
        if refusal is not None:
            status = _status(code_pb2.UNAVAILABLE, refusal, _PRESSURE_RETRY_S)
            raise RpcError(status.code, status.message, status.SerializeToString())
        try:
            parts = await self._decode(signal, call.message, _PROTOBUF)
        except (DecodeError, ValueError) as e:
            raise RpcError(code_pb2.INVALID_ARGUMENT, str(e)) from None
        try:
            sender = None
            if self.config.protocols.grpc and self.config.protocols.grpc.include_metadata:
                pairs = [(k, v) for k, v in call.metadata if isinstance(v, str)]
                sender = ClientInfo.of(call.peer, pairs)
            response = await self._export(signal, parts, "grpc", sender)
        except RetryableError as e:
            status = _status(code_pb2.UNAVAILABLE, str(e), _retry_after_s(e))
            raise RpcError(status.code, status.message, status.SerializeToString()) from None
        except PermanentError as e:
            raise RpcError(code_pb2.INTERNAL, str(e)) from None
        except Exception as e:
            self.log.error("OTLP/gRPC export failed", exc_info=True)
            raise RpcError(code_pb2.INTERNAL, str(e)) from None
        return response.SerializeToString()

    # --- HTTP ---------------------------------------------------------------------------------

    async def _start_http(self, config: HttpConfig) -> str:
        app = web.Application()
        for signal in self.next:
            app.router.add_route(
                "*", config.url_path(signal), functools.partial(self._http_export, signal)
            )
        if self._cors:
            app.on_response_prepare.append(self._add_cors_origin)
        # Bodies are decompressed here rather than by aiohttp, to bound the inflated size.
        runner = self._http_runner = web.AppRunner(
            app, access_log=None, auto_decompress=False, shutdown_timeout=_SHUTDOWN_GRACE_S
        )
        await runner.setup()
        host, port = split_endpoint(config.endpoint)
        self._http_tls = ServerTLS.of(config.tls)
        context = ServerTLS.context_of(self._http_tls)
        try:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        except OSError as e:
            raise ListenError(config.endpoint, e, key=_HTTP_KEY) from None
        return with_port(config.endpoint, runner.addresses[0][1])

    async def _http_export(self, signal: Signal, request: web.Request) -> web.StreamResponse:
        if (
            self._cors
            and request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
        ):
            return self._cors_preflight(self._cors, request)
        if self._http_auth is not None:
            try:
                # aiohttp's headers are case-insensitive; authenticators look up lower-case.
                self._http_auth.authenticate({k.lower(): v for k, v in request.headers.items()})
            except Unauthenticated as e:
                answer = _CODECS.get(request.content_type, _PROTOBUF)
                return self._status_response(answer, 401, str(e))
        if request.method != "POST":
            return web.Response(
                status=405,
                text="405 method not allowed, supported: [POST]",
                headers={"Allow": "POST"},
            )
        codec = _CODECS.get(request.content_type)
        if codec is None:
            return web.Response(
                status=415,
                text=f"415 unsupported media type, supported: [{', '.join(_CODECS)}]",
            )
        # Refused before the body is read, let alone parsed, when memory is short.
        refusal = self._pressure.admits(request.content_length or 0)
        if refusal is not None:
            return self._status_response(codec, 503, refusal, _PRESSURE_RETRY_S)
        try:
            body = await self._read_body(request)
            parts = await self._decode(signal, body, codec)
        except RequestError as e:
            return self._status_response(codec, e.http_status, str(e))
        # RecursionError: JSON nested deeper than the parser can follow.
        except (DecodeError, ValueError, RecursionError) as e:
            return self._status_response(codec, 400, str(e))
        try:
            sender = None
            if self.config.protocols.http and self.config.protocols.http.include_metadata:
                sender = ClientInfo.of(request.remote or "", request.headers.items())
            response = await self._export(signal, parts, "http", sender)
        except RetryableError as e:
            return self._status_response(codec, 503, str(e), _retry_after_s(e))
        except PermanentError as e:
            return self._status_response(codec, 500, str(e))
        except Exception as e:
            self.log.error("OTLP/HTTP export failed", exc_info=True)
            return self._status_response(codec, 500, str(e))
        return web.Response(body=codec.encode(response), content_type=codec.content_type)

    async def _read_body(self, request: web.Request) -> bytes:
        http = self.config.protocols.http
        assert http is not None, "HTTP requests without the HTTP protocol"
        return await read_body(request, http.max_request_body_size)

    @staticmethod
    def _status_response(
        codec: _Codec,
        http_status: int,
        message: str,
        retry_after_s: float | None = None,
    ) -> web.Response:
        status = _status(_HTTP_TO_RPC_CODE[http_status], message, retry_after_s)
        response = web.Response(
            status=http_status, body=codec.encode(status), content_type=codec.content_type
        )
        if retry_after_s is not None:
            response.headers["Retry-After"] = str(math.ceil(retry_after_s))
        return response

    # --- CORS ---------------------------------------------------------------------------------

    def _cors_preflight(self, cors: CorsConfig, request: web.Request) -> web.Response:
        # A refused preflight is still a 204, without the allow headers: the browser then
        # blocks the real request.
        response = web.Response(status=204)
        response.headers["Vary"] = "Access-Control-Request-Method, Access-Control-Request-Headers"
        requested = [
            h.strip()
            for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
            if h.strip()
        ]
        allowed_headers = _SAFE_CORS_HEADERS | {h.lower() for h in cors.allowed_headers}
        if (
            not self._cors_origin_allowed(request.headers.get("Origin", ""))
            or request.headers["Access-Control-Request-Method"].upper() != "POST"
            or (
                "*" not in allowed_headers
                and any(h.lower() not in allowed_headers for h in requested)
            )
        ):
            return response
        response.headers["Access-Control-Allow-Methods"] = "POST"
        if requested:
            response.headers["Access-Control-Allow-Headers"] = ", ".join(requested)
        if cors.max_age:
            response.headers["Access-Control-Max-Age"] = str(cors.max_age)
        return response

    async def _add_cors_origin(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin and self._cors_origin_allowed(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")


factory = Factory(
    kind=Kind.RECEIVER,
    type="otlp",
    config=Config,
    create=OtlpReceiver,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    description="Traces, metrics and logs over OTLP/gRPC and OTLP/HTTP (protobuf or JSON).",
)
