"""Jaeger's gRPC collector API: `jaeger.api_v2.CollectorService/PostSpans`, as Jaeger agents,
the OTel Collector's `jaeger` exporter and OpenTelemetry's Jaeger protobuf exporters send.

Requests are parsed here (proto.py), not by grpc, so that an undecodable one is answered
INVALID_ARGUMENT. A refusing pipeline or memory limiter is UNAVAILABLE (clients retry), any
other pipeline error INTERNAL; without valid credentials when `auth` is set, UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio

from google.rpc import code_pb2

from collector.core import grpc_server
from collector.core.auth import server_authenticator
from collector.core.component import Host
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import Traces
from collector.receivers.jaeger.config import GrpcConfig
from collector.receivers.jaeger.intake import GRPC, Intake
from collector.receivers.jaeger.proto import (
    METHOD,
    SERVICE,
    PostSpansResponse,
    decode_post_spans,
)
from collector.receivers.jaeger.translate import traces

_MIB = 1024 * 1024
_KEY = "protocols::grpc::endpoint"
# Long enough for requests in progress to be answered, short enough not to stall a shutdown.
_SHUTDOWN_GRACE_S = 5.0
_EMPTY_RESPONSE = PostSpansResponse().SerializeToString()
# Requests larger than this are decoded on a thread, so that other clients are served meanwhile.
_DECODE_INLINE_BYTES = 256 * 1024


def decode(data: bytes) -> Traces:
    """The OTLP traces of a PostSpansRequest; ValueError saying what is wrong."""
    return traces([decode_post_spans(data)])


class GrpcServer:
    def __init__(self, config: GrpcConfig, intake: Intake) -> None:
        self.config = config
        self.intake = intake
        self._server: grpc_server.GrpcServer | None = None

    async def start(self, host: Host) -> str:
        """The bound host:port; OSError when the endpoint cannot be listened on."""
        limits = grpc_server.ServerLimits(
            max_recv_msg_size=(self.config.max_recv_msg_size_mib or 4) * _MIB,
            max_concurrent_streams=self.config.max_concurrent_streams,
        )
        listener = grpc_server.Listener(
            self.config.endpoint,
            self.config.tls,
            server_authenticator(host, self.config.auth),
            key=_KEY,
        )
        self._server = grpc_server.GrpcServer(
            {f"/{SERVICE}/{METHOD}": self._post_spans}, limits, self.intake.log, listener
        )
        return await self._server.start()

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(_SHUTDOWN_GRACE_S)

    async def _post_spans(self, call: grpc_server.Call) -> bytes:
        data = call.message
        refusal = self.intake.pressure.admits(len(data))
        if refusal is not None:
            raise grpc_server.RpcError(code_pb2.UNAVAILABLE, refusal)
        try:
            if len(data) > _DECODE_INLINE_BYTES:
                batch = await asyncio.to_thread(decode, data)
            else:
                batch = decode(data)
        except ValueError as e:
            raise grpc_server.RpcError(code_pb2.INVALID_ARGUMENT, str(e)) from None
        try:
            await self.intake.consume(batch, GRPC)
        except RetryableError as e:
            raise grpc_server.RpcError(code_pb2.UNAVAILABLE, str(e)) from None
        except PermanentError as e:
            raise grpc_server.RpcError(code_pb2.INTERNAL, str(e)) from None
        except Exception as e:
            self.intake.log.error("Jaeger gRPC export failed", exc_info=True)
            raise grpc_server.RpcError(code_pb2.INTERNAL, str(e)) from None
        return _EMPTY_RESPONSE
