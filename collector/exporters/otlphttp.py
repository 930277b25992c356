"""Exporter `otlphttp`: OTLP over HTTP (protobuf or JSON), through the shared sender chain.

Responses are classified as the OTel Collector's otlphttp exporter does: 429, 502, 503 and 504
are retried (honouring Retry-After), connection errors are retried, every other non-2xx status
is permanent.
"""

from __future__ import annotations

import gzip
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from pydantic import Field, field_validator, model_validator

from collector.core import otlpjson
from collector.core.auth import (
    AuthConfig,
    ClientAuthenticator,
    client_authenticator,
    with_auth_headers,
)
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import RESPONSE_TYPES, Encoded
from collector.core.signals import Signal
from collector.exporters.http_client import (
    TLSConfig,
    client_session,
    parse_retry_after,
    read_body,
)
from collector.exporters.sender import (
    Exporter,
    SenderConfig,
    check_partial_success,
)

_RETRYABLE = frozenset({429, 502, 503, 504})
_CONTENT_TYPES = {"proto": "application/x-protobuf", "json": "application/json"}


class ClientConfig(ComponentConfig):
    """The options of this exporter besides the sender blocks."""

    endpoint: str = ""
    """Base URL, like https://otel-gateway:4318; /v1/traces, /v1/metrics or /v1/logs is
    appended. Empty = each signal needs its own *_endpoint."""
    traces_endpoint: str = ""
    """Full URL for traces, used as is (default empty = endpoint + /v1/traces)."""
    metrics_endpoint: str = ""
    """Full URL for metrics, used as is (default empty = endpoint + /v1/metrics)."""
    logs_endpoint: str = ""
    """Full URL for logs, used as is (default empty = endpoint + /v1/logs)."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS settings for https URLs."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every request (default empty = none)."""
    compression: Literal["gzip", "none"] = "gzip"
    """Request body compression: gzip (default) or none."""
    encoding: Literal["proto", "json"] = "proto"
    """Request body encoding: proto (binary protobuf, default) or json (OTLP/JSON)."""
    auth: AuthConfig | None = None
    """Requests authorized by an extension, as `{authenticator: sigv4auth}` (default none)."""

    @field_validator("endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if value:
            url = urlsplit(value)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(f"invalid URL {value!r}: expected http(s)://host[:port][/path]")
        return value

    @model_validator(mode="after")
    def _check_some_endpoint(self) -> ClientConfig:
        if not (
            self.endpoint or self.traces_endpoint or self.metrics_endpoint or self.logs_endpoint
        ):
            raise ValueError("set endpoint (or traces_endpoint, metrics_endpoint, logs_endpoint)")
        return self

    def url(self, signal: Signal) -> str:
        """Where `signal` is sent; empty when neither its own URL nor endpoint is set."""
        own = getattr(self, f"{signal.value}_endpoint")
        if own or not self.endpoint:
            return own
        return f"{self.endpoint.rstrip('/')}/v1/{signal.value}"


# With the bases in this order, pydantic lists the sender blocks after the exporter's own options.
class Config(SenderConfig, ClientConfig):
    pass


def _error_message(body: bytes, content_type: str) -> str:
    """The message of a google.rpc.Status error body, else the body as text."""
    try:
        if content_type == _CONTENT_TYPES["json"]:
            return otlpjson.parse(body, status_pb2.Status).message
        if content_type == _CONTENT_TYPES["proto"]:
            return status_pb2.Status.FromString(body).message
    except (ValueError, DecodeError):
        pass
    return body.decode("utf-8", "replace").strip()


class OTLPHTTPExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._url = config.url(signal)
        if not self._url:
            raise ValueError(
                f"{settings.id}: set endpoint or {signal.value}_endpoint to export {signal.value}"
            )
        self._headers = {
            **config.headers,
            "Content-Type": _CONTENT_TYPES[config.encoding],
            "User-Agent": "coldtail",
        }
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"
        self._session: aiohttp.ClientSession | None = None
        self._auth: ClientAuthenticator | None = None
        # Protobuf requests can go out as the bytes a batch processor concatenated (pdata.Encoded).
        self.accepts_encoded = config.encoding == "proto"

    async def start(self, host) -> None:
        self._auth = client_authenticator(host, self.config.auth)
        await super().start(host)

    async def connect(self) -> None:
        self._session = client_session(self._url, self.config.tls)

    async def disconnect(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _encode(self, batch) -> bytes:
        if self.config.encoding == "json":
            body = otlpjson.dumps(batch).encode()
        else:
            body = Encoded.of(batch).data
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        return body

    async def push(self, batch) -> None:
        assert self._session is not None, "push before connect"
        body, headers = self._encode(batch), self._headers
        if self._auth is not None:
            extra = await self._auth.authorize("POST", self._url, headers, body)
            headers = with_auth_headers(headers, extra)
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                server_hostname=self.config.tls.server_name_override or None,
            ) as response:
                body = await read_body(response)
                status, content_type = response.status, response.content_type
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError) as e:
            raise RetryableError(f"request to {self._url} failed: {e!r}") from None

        if 200 <= status < 300:
            self._check_response(body, content_type)
            return
        message = (
            f"{self._url} responded with HTTP {status}: "
            f"{_error_message(body, content_type) or 'no message'}"
        )
        if status in _RETRYABLE:
            raise RetryableError(message, retry_after=retry_after)
        raise PermanentError(message)

    def _check_response(self, body: bytes, content_type: str) -> None:
        if not body:
            return
        response_type = RESPONSE_TYPES[self.signal]
        try:
            if content_type == _CONTENT_TYPES["json"]:
                response = otlpjson.parse(body, response_type)
            else:
                response = response_type.FromString(body)
        except (ValueError, DecodeError):
            # The backend accepted the data; only its answer is unreadable.
            self.log.warning(f"cannot decode the export response from {self._url}")
            return
        check_partial_success(response, self.signal, self.log)


factory = Factory(
    kind=Kind.EXPORTER,
    type="otlphttp",
    config=Config,
    create=OTLPHTTPExporter,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    aliases=("otlp_http",),
    description="Sends OTLP over HTTP (protobuf or JSON) to a collector or backend.",
)
