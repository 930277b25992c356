"""Jaeger's gRPC collector API: `jaeger.api_v2.CollectorService/PostSpans`, as Jaeger agents,
the OTel Collector's `jaeger` exporter and OpenTelemetry's Jaeger protobuf exporters send.

Requests are parsed here (proto.py), not by grpc, so that an undecodable one is answered
INVALID_ARGUMENT. A refusing pipeline or memory limiter is UNAVAILABLE (clients retry), any
other pipeline error INTERNAL; without valid credentials when `auth` is set, UNAUTHENTICATED.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from collector.core.auth import ServerAuthenticator, Unauthenticated, server_authenticator
from collector.core.component import Host
from collector.core.consumer import PermanentError, RetryableError
from collector.core.endpoints import check_free, with_port
from collector.core.pdata import Traces
from collector.core.tls import grpc_server_credentials
from collector.receivers.jaeger.config import GrpcConfig
from collector.receivers.jaeger.intake import GRPC, Intake
from collector.receivers.jaeger.proto import (
    METHOD,
    SERVICE,
    PostSpansResponse,
    decode_post_spans,
)
from collector.receivers.jaeger.translate import traces

if TYPE_CHECKING:
    import grpc

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
        self._server: grpc.aio.Server | None = None
        self._auth: ServerAuthenticator | None = None

    async def start(self, host: Host) -> str:
        """The bound host:port; OSError when the endpoint cannot be listened on."""
        import grpc

        self._auth = server_authenticator(host, self.config.auth)
        endpoint = self.config.endpoint
        # A plain socket tries the port first: grpc reports a taken one only after logging it
        # from its C core, which no setting here can quieten.
        check_free(endpoint, key=_KEY)
        # Without this, grpc binds with SO_REUSEPORT and a second collector on the same port
        # would silently take half the traffic instead of failing to start.
        options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
        if self.config.max_recv_msg_size_mib:
            options.append(
                ("grpc.max_receive_message_length", self.config.max_recv_msg_size_mib * _MIB)
            )
        if self.config.max_concurrent_streams:
            options.append(("grpc.max_concurrent_streams", self.config.max_concurrent_streams))
        server = self._server = grpc.aio.server(options=options)
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            self._post_spans
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {METHOD: handler}),)
        )
        try:
            if self.config.tls is None:
                port = server.add_insecure_port(endpoint)
            else:
                port = server.add_secure_port(endpoint, grpc_server_credentials(self.config.tls))
        except RuntimeError as e:
            check_free(endpoint, key=_KEY)  # taken since: say so, naming the key
            raise OSError(f"cannot listen on {endpoint} for Jaeger gRPC: {e}") from None
        await server.start()
        return with_port(endpoint, port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop(_SHUTDOWN_GRACE_S)

    async def _post_spans(self, data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        import grpc  # already loaded by start

        if self._auth is not None:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            try:
                self._auth.authenticate(metadata)
            except Unauthenticated as e:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        refusal = self.intake.pressure.admits(len(data))
        if refusal is not None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, refusal)
        try:
            if len(data) > _DECODE_INLINE_BYTES:
                batch = await asyncio.to_thread(decode, data)
            else:
                batch = decode(data)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        try:
            await self.intake.consume(batch, GRPC)
        except RetryableError as e:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))
        except PermanentError as e:
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        except Exception as e:
            self.intake.log.error("Jaeger gRPC export failed", exc_info=True)
            await context.abort(grpc.StatusCode.INTERNAL, str(e))
        return _EMPTY_RESPONSE
