"""Exporter `otlp`: OTLP over gRPC, through the shared sender chain (queue -> retry -> timeout).

Errors are classified as the OTel Collector's otlp exporter does: CANCELLED, DEADLINE_EXCEEDED,
ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried; RESOURCE_EXHAUSTED only when the
server sends RetryInfo (its delay is then honoured); every other code is permanent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from collector.core.auth import (
    AuthConfig,
    ClientAuthenticator,
    client_authenticator,
)
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.pdata import GRPC_SERVICES, RESPONSE_TYPES, Encoded
from collector.core.signals import Signal
from collector.exporters.grpc_client import (
    GrpcCallError,
    GrpcChannel,
    authorized,
    classify,
    gzip_fast,
)
from collector.exporters.sender import (
    Exporter,
    SenderConfig,
    TLSClientConfig,
    check_partial_success,
)

_SCHEMES = ("http://", "https://")


class TLSConfig(TLSClientConfig):
    insecure: bool = False
    """Connect in plain text, without TLS (default false). An `http://` or `https://` prefix on
    the endpoint decides instead."""


class ClientConfig(ComponentConfig):
    """The options of this exporter besides the sender blocks."""

    endpoint: str
    """Where to send: `host:port`, or `http://host:port` (plain text) / `https://host:port`
    (TLS). Required."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS settings of the connection."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every request as gRPC metadata, keys lowercased (default empty = none)."""
    auth: AuthConfig | None = None
    """Metadata added to each request by an extension, as `{authenticator:
    bearertokenauth}` or `{authenticator: headers_setter}` (default none)."""
    compression: Literal["gzip", "none"] = "gzip"
    """Request compression: gzip (default; ISA-L at level 1, about 6.5 times smaller for OTLP
    spans) or none."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        address = _strip_scheme(value)
        host, sep, port = address.rpartition(":")
        if not host or not sep or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ValueError(
                f"invalid endpoint {value!r}: expected host:port, like "
                "otel-gateway:4317 (optionally with http:// or https://)"
            )
        return value

    @property
    def secure(self) -> bool:
        """Whether the connection uses TLS."""
        if self.endpoint.startswith(_SCHEMES):
            return self.endpoint.startswith("https://")
        return not self.tls.insecure


# With the bases in this order, pydantic lists the sender blocks after the exporter's own options.
class Config(SenderConfig, ClientConfig):
    pass


def _strip_scheme(endpoint: str) -> str:
    for scheme in _SCHEMES:
        if endpoint.startswith(scheme):
            return endpoint.removeprefix(scheme)
    return endpoint


class OTLPExporter(Exporter[Config]):
    """Calls go out on the event loop over one HTTP/2 connection (grpc_client.GrpcChannel);
    gzip runs on the exporter's threads with ISA-L at level 1 (1.5 ms for an 8192-span batch,
    where grpcio's channel spends 22 ms with zlib at level 6). otlp -> batch -> otlp over gRPC
    in bench/throughput.py went from 115k to 163k spans per CPU-second."""

    # Requests go out as bytes (pdata.Encoded): a batch processor in front concatenates the
    # receivers' requests instead of merging and re-encoding them.
    accepts_encoded = True

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._method = f"/{GRPC_SERVICES[signal]}/Export"
        self._channel: GrpcChannel | None = None
        self._auth: ClientAuthenticator | None = None

    async def start(self, host) -> None:
        self._auth = client_authenticator(host, self.config.auth)
        await super().start(host)

    async def connect(self) -> None:
        cfg = self.config
        host, _, port = _strip_scheme(cfg.endpoint).rpartition(":")
        self._channel = GrpcChannel(
            host,
            int(port),
            tls=cfg.tls.ssl_context() if cfg.secure else None,
            server_hostname=cfg.tls.server_name_override or None,
            user_agent="coldtail",
        )

    async def disconnect(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def push(self, batch) -> None:
        channel = self._channel
        assert channel is not None, "push before connect"
        data = Encoded.of(batch).data
        encoding = "identity"
        if self.config.compression == "gzip":
            data, encoding = await self.run_blocking(gzip_fast, data), "gzip"
        metadata = await authorized(self._auth, self._method, self._metadata, data)
        # The deadline (grpc-timeout) tells the server when to give up too.
        try:
            response = await channel.unary(
                self._method,
                data,
                encoding=encoding,
                metadata=metadata,
                timeout=self.config.timeout or None,
            )
        except GrpcCallError as e:
            raise classify(e) from None
        check_partial_success(
            RESPONSE_TYPES[self.signal].FromString(response), self.signal, self.log
        )


factory = Factory(
    kind=Kind.EXPORTER,
    type="otlp",
    config=Config,
    create=OTLPExporter,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    aliases=("otlp_grpc",),
    description="Sends OTLP over gRPC to a collector or backend.",
)
