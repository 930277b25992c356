"""One backend: OTLP over gRPC to its `host:port`, over one HTTP/2 connection
(grpc_client.GrpcChannel), with the `protocol::otlp` options.

Errors are classified as the OTel Collector's otlp exporter does: CANCELLED,
DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS are retried;
RESOURCE_EXHAUSTED only when the server sends RetryInfo (its delay is then honoured); every
other code is permanent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable, Sequence

from collector.core.auth import ClientAuthenticator
from collector.core.consumer import RetryableError
from collector.core.pdata import GRPC_SERVICES, RESPONSE_TYPES, Encoded
from collector.core.signals import Signal
from collector.exporters.grpc_client import (
    GrpcCallError,
    GrpcChannel,
    authorized,
    classify,
    gzip_fast,
)
from collector.exporters.loadbalancing.config import OTLPConfig
from collector.exporters.sender import check_partial_success

RunBlocking = Callable[..., Awaitable[bytes]]


def request(parts: Sequence) -> bytes:
    """The batches (messages or pdata.Encoded) as one export request: concatenated requests
    are one request."""
    return b"".join(p.data if isinstance(p, Encoded) else p.SerializeToString() for p in parts)


class Member:
    """A backend the resolver named. Once it leaves (`retire`) no new sends start on it; the
    sends in flight finish, then its connection closes."""

    def __init__(
        self,
        endpoint: str,
        config: OTLPConfig,
        signal: Signal,
        tls: ssl.SSLContext | None,
        auth: ClientAuthenticator | None,
    ) -> None:
        self.endpoint = endpoint
        host, _, port = endpoint.rpartition(":")
        self._config = config
        self._signal = signal
        self._method = f"/{GRPC_SERVICES[signal]}/Export"
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._auth = auth
        self._channel = GrpcChannel(
            host,
            int(port),
            tls=tls,
            server_hostname=config.tls.server_name_override or None,
            user_agent="coldtail",
        )
        self._active = 0
        self._retired = False
        self._closed: asyncio.Task | None = None

    async def send(self, parts: Sequence, run_blocking: RunBlocking, log) -> None:
        """Export `parts` (batches of this member's signal) as one request; PermanentError or
        RetryableError when the backend did not take them."""
        if self._retired:
            raise RetryableError(f"backend {self.endpoint} left")
        self._active += 1
        try:
            await self._send(parts, run_blocking, log)
        finally:
            self._active -= 1
            if self._retired and not self._active:
                self._close_soon()

    async def _send(self, parts: Sequence, run_blocking: RunBlocking, log) -> None:
        data = request(parts)
        compressed = self._config.compression == "gzip"
        if compressed:
            data = await run_blocking(gzip_fast, data)  # ISA-L releases the GIL
        metadata = await authorized(self._auth, self._method, self._metadata, data)
        try:
            response = await self._channel.unary(
                self._method,
                data,
                encoding="gzip" if compressed else "identity",
                metadata=metadata,
                timeout=self._config.timeout or None,
            )
        except GrpcCallError as e:
            raise classify(e) from None
        check_partial_success(RESPONSE_TYPES[self._signal].FromString(response), self._signal, log)

    @property
    def retired(self) -> bool:
        return self._retired

    @property
    def closed(self) -> bool:
        return self._closed is not None and self._closed.done()

    def retire(self) -> None:
        self._retired = True
        if not self._active:
            self._close_soon()

    def _close_soon(self) -> None:
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_task(self._channel.close())

    async def close(self) -> None:
        self._retired = True
        self._close_soon()
        assert self._closed is not None
        with contextlib.suppress(Exception):
            await self._closed
