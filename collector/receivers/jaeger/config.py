"""The `jaeger` receiver's config: the `protocols` it serves, as the OTel Collector names them."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from collector.core.auth import AuthConfig
from collector.core.config_types import (
    ComponentConfig,
    Defaulted,
    ListenEndpoint,
    null_is_defaults,
)
from collector.core.tls import TLSServerConfig

_MIB = 1024 * 1024


class GrpcConfig(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:14250"
    """host:port of Jaeger's gRPC collector API (`jaeger.api_v2.CollectorService`). Default
    127.0.0.1:14250 (local only; the OTel Collector listens on 0.0.0.0); port 0 picks a free
    port."""
    max_recv_msg_size_mib: int = Field(4, ge=0)
    """Largest request accepted, in MiB; larger ones get RESOURCE_EXHAUSTED. Default 4; 0 means
    the gRPC default (4 MiB)."""
    max_concurrent_streams: int = Field(0, ge=0)
    """Most concurrent requests per client connection. Default 0: no limit."""
    tls: TLSServerConfig | None = None
    """TLS, and with `client_ca_file` mutual TLS (default none: plaintext)."""
    auth: AuthConfig | None = None
    """Requests authenticated by an extension, as `{authenticator: bearertokenauth}`; others
    get UNAUTHENTICATED (default none)."""


class ThriftHttpConfig(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:14268"
    """host:port of Jaeger's HTTP collector API (`POST /api/traces`, a Thrift `Batch` in the
    binary protocol). Default 127.0.0.1:14268 (local only; the OTel Collector listens on
    0.0.0.0); port 0 picks a free port."""
    max_request_body_size: int = Field(20 * _MIB, ge=1)
    """Largest request body accepted, in bytes, as sent and after decompression; larger ones
    get 413. Default 20971520 (20 MiB)."""
    tls: TLSServerConfig | None = None
    """TLS, and with `client_ca_file` mutual TLS (default none: plaintext)."""
    auth: AuthConfig | None = None
    """Requests authenticated by an extension, as `{authenticator: basicauth}`; others get 401
    (default none)."""


class UdpConfig(ComponentConfig):
    endpoint: ListenEndpoint
    """UDP host:port the agent protocol (`Agent.emitBatch`) arrives on."""
    queue_size: int = Field(1000, ge=1)
    """Most datagrams waiting to be decoded; more are dropped, each counted as one refused
    span (default 1000)."""
    max_packet_size: int = Field(65_000, ge=1, le=65_535)
    """Largest datagram accepted, in bytes; larger ones are dropped (default 65000, what
    Jaeger clients send at most)."""
    workers: int = Field(10, ge=1)
    """How many batches of datagrams may be in the pipeline at once (default 10); datagrams
    waiting together go down it as one batch."""
    socket_buffer_size: int = Field(0, ge=0)
    """The socket's receive buffer (SO_RCVBUF), in bytes, for bursts that arrive faster than
    they are read (default 0: the system's)."""


class ThriftBinaryConfig(UdpConfig):
    endpoint: ListenEndpoint = "127.0.0.1:6832"
    """UDP host:port of the agent protocol in Thrift's binary encoding. Default 127.0.0.1:6832
    (local only; the OTel Collector listens on 0.0.0.0); port 0 picks a free port."""


class ThriftCompactConfig(UdpConfig):
    endpoint: ListenEndpoint = "127.0.0.1:6831"
    """UDP host:port of the agent protocol in Thrift's compact encoding, which Jaeger clients
    and OpenTelemetry's Jaeger exporters send by default. Default 127.0.0.1:6831 (local only;
    the OTel Collector listens on 0.0.0.0); port 0 picks a free port."""


class Protocols(ComponentConfig):
    grpc: Annotated[GrpcConfig | None, Defaulted] = None
    """Jaeger's gRPC collector API. Present (even empty) enables it; absent disables it."""
    thrift_http: Annotated[ThriftHttpConfig | None, Defaulted] = None
    """Jaeger's HTTP collector API (Thrift over HTTP). Present (even empty) enables it."""
    thrift_binary: Annotated[ThriftBinaryConfig | None, Defaulted] = None
    """The Jaeger agent's UDP protocol, Thrift binary encoding. Present (even empty) enables
    it."""
    thrift_compact: Annotated[ThriftCompactConfig | None, Defaulted] = None
    """The Jaeger agent's UDP protocol, Thrift compact encoding. Present (even empty) enables
    it."""


class Config(ComponentConfig):
    protocols: Annotated[Protocols, Defaulted] = Field(default_factory=Protocols)
    """The protocols to serve; at least one of grpc, thrift_http, thrift_binary and
    thrift_compact must be set."""

    @model_validator(mode="before")
    @classmethod
    def _no_remote_sampling(cls, data: object) -> object:
        data = null_is_defaults(data)
        if isinstance(data, dict) and "remote_sampling" in data:
            raise ValueError(
                "remote_sampling is not supported: the Jaeger receiver takes spans only (the "
                "OTel Collector dropped it in v0.61.0); serve sampling strategies from the "
                "jaegerremotesampling extension of an OTel Collector, or use probabilistic "
                "sampling in the clients"
            )
        return data

    @model_validator(mode="after")
    def _some_protocol(self) -> Config:
        protocols = self.protocols
        served = (
            protocols.grpc,
            protocols.thrift_http,
            protocols.thrift_binary,
            protocols.thrift_compact,
        )
        if all(protocol is None for protocol in served):
            raise ValueError(
                "must specify at least one protocol (protocols::grpc, protocols::thrift_http, "
                "protocols::thrift_binary or protocols::thrift_compact) when using the Jaeger "
                "receiver"
            )
        return self
