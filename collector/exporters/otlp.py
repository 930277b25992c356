"""Exporter `otlp`: OTLP over gRPC, through the shared sender chain (queue -> retry -> timeout).

Errors are classified as the OTel Collector's otlp exporter does: CANCELLED, DEADLINE_EXCEEDED,
ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried; RESOURCE_EXHAUSTED only when the
server sends RetryInfo (its delay is then honoured); every other code is permanent.
"""

from __future__ import annotations

import functools
from typing import Literal, cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from pydantic import Field, field_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import ConsumerError, PermanentError, RetryableError
from collector.core.pdata import GRPC_SERVICES, RESPONSE_TYPES, Encoded
from collector.core.signals import Signal
from collector.exporters.sender import (
    Exporter,
    SenderConfig,
    TLSClientConfig,
    check_partial_success,
)

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
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
    compression: Literal["gzip", "none"] = "gzip"
    """Request compression: gzip (default) or none."""

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


def _read(path: str) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _retry_delay(metadata) -> float | None:
    """The RetryInfo delay (seconds) in a gRPC status's details, or None."""
    for key, value in metadata or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return info.retry_delay.ToNanoseconds() / 1e9
    return None


def classify(error: grpc.RpcError) -> ConsumerError:
    """The pipeline error for a failed gRPC call (the error is also the call's grpc.Call)."""
    call = cast(grpc.Call, error)
    code = call.code()
    delay = _retry_delay(call.trailing_metadata())
    message = f"gRPC status {code.name}: {call.details()}"
    if code in _RETRYABLE or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableError(message, retry_after=delay)
    return PermanentError(message)


class OTLPExporter(Exporter[Config]):
    """Each call runs on a thread of the exporter's own, on a blocking channel: gRPC compresses
    on the calling thread, with the GIL released, and gzip of an 8192-span batch takes some
    30 ms that would otherwise stall every receiver on the event loop (bench/throughput.py,
    p99 round trip of a receiver's client at half load: 38 ms with grpc.aio calls, 8 ms
    with these threads)."""

    # Requests go out as bytes (pdata.Encoded): a batch processor in front concatenates the
    # receivers' requests instead of merging and re-encoding them.
    accepts_encoded = True

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._channel: grpc.Channel | None = None
        self._export: grpc.UnaryUnaryMultiCallable | None = None

    async def connect(self) -> None:
        cfg = self.config
        target = _strip_scheme(cfg.endpoint)
        options = [("grpc.primary_user_agent", "coldtail")]
        if cfg.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", cfg.tls.server_name_override))
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else None
        if cfg.secure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(cfg.tls.ca_file),
                private_key=_read(cfg.tls.key_file),
                certificate_chain=_read(cfg.tls.cert_file),
            )
            self._channel = grpc.secure_channel(target, credentials, options, compression)
        else:
            self._channel = grpc.insecure_channel(target, options, compression)
        self._export = self._channel.unary_unary(
            f"/{GRPC_SERVICES[self.signal]}/Export",
            response_deserializer=RESPONSE_TYPES[self.signal].FromString,
        )

    async def disconnect(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def push(self, batch) -> None:
        export = self._export
        assert export is not None, "push before connect"
        data = Encoded.of(batch).data
        # The deadline tells the server when to give up too, and ends the thread's call; the
        # sender's own timeout may stop waiting for it first.
        timeout = self.config.timeout or None
        call = functools.partial(export, data, metadata=self._metadata, timeout=timeout)
        try:
            response = await self.run_blocking(call)
        except grpc.RpcError as e:
            raise classify(e) from None
        check_partial_success(response, self.signal, self.log)


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
