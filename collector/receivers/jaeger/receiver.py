"""The `jaeger` receiver: starts the protocols its config names and hands their spans, as
OTLP, to the traces pipeline."""

from __future__ import annotations

from collections.abc import Mapping

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.consumer import Consumer
from collector.core.signals import Signal
from collector.receivers.jaeger.config import Config
from collector.receivers.jaeger.grpc_server import GrpcServer
from collector.receivers.jaeger.intake import THRIFT_BINARY, THRIFT_COMPACT, Intake
from collector.receivers.jaeger.thrift_http import ThriftHttpServer
from collector.receivers.jaeger.udp_agent import AgentServer


class JaegerReceiver:
    """After start, `grpc_endpoint`, `thrift_http_endpoint`, `thrift_binary_endpoint` and
    `thrift_compact_endpoint` hold the bound host:port of each protocol served (None for the
    others)."""

    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.log = settings.logger
        self.intake = Intake(settings, next[Signal.TRACES])
        self.grpc_endpoint: str | None = None
        self.thrift_http_endpoint: str | None = None
        self.thrift_binary_endpoint: str | None = None
        self.thrift_compact_endpoint: str | None = None
        protocols = config.protocols
        self._grpc: GrpcServer | None = None
        self._http: ThriftHttpServer | None = None
        self._binary: AgentServer | None = None
        self._compact: AgentServer | None = None
        if protocols.grpc is not None:
            self._grpc = GrpcServer(protocols.grpc, self.intake)
        if protocols.thrift_http is not None:
            self._http = ThriftHttpServer(protocols.thrift_http, self.intake)
        if protocols.thrift_binary is not None:
            self._binary = AgentServer(protocols.thrift_binary, False, THRIFT_BINARY, self.intake)
        if protocols.thrift_compact is not None:
            self._compact = AgentServer(protocols.thrift_compact, True, THRIFT_COMPACT, self.intake)

    async def start(self, host: Host) -> None:
        try:
            if self._grpc is not None:
                self.grpc_endpoint = await self._grpc.start(host)
                self._listening("gRPC", self.grpc_endpoint)
            if self._http is not None:
                self.thrift_http_endpoint = await self._http.start(host)
                self._listening("Thrift HTTP", self.thrift_http_endpoint)
            if self._binary is not None:
                self.thrift_binary_endpoint = await self._binary.start()
                self._listening("Thrift binary", f"udp {self.thrift_binary_endpoint}")
            if self._compact is not None:
                self.thrift_compact_endpoint = await self._compact.start()
                self._listening("Thrift compact", f"udp {self.thrift_compact_endpoint}")
        except BaseException:
            await self.shutdown()
            raise

    def _listening(self, protocol: str, endpoint: str) -> None:
        self.log.info(f"Jaeger {protocol} listening", extra={"kv": {"endpoint": endpoint}})

    async def shutdown(self) -> None:
        for server in (self._grpc, self._http, self._binary, self._compact):
            if server is not None:
                await server.stop()


factory = Factory(
    kind=Kind.RECEIVER,
    type="jaeger",
    config=Config,
    create=JaegerReceiver,
    signals={Signal.TRACES: Stability.BETA},
    description=(
        "Jaeger spans over gRPC (api_v2), Thrift over HTTP and the agent's UDP protocols "
        "(Thrift compact and binary), as OTLP traces."
    ),
)
