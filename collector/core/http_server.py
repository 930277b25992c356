"""An aiohttp application served on a listen endpoint, with the `tls` block when given: what
the HTTP extensions and the prometheus exporter share."""

from __future__ import annotations

from aiohttp import web

from collector.core.endpoints import ListenError, bound_port, split_endpoint
from collector.core.tls import ServerTLS, TLSServerConfig


class HttpServer:
    """`app` on `endpoint` (host:port; port 0 picks one). After start, `endpoint` is the bound
    host:port (IPv6 hosts in brackets)."""

    def __init__(
        self,
        app: web.Application,
        endpoint: str,
        tls: TLSServerConfig | None,
        auto_decompress: bool = True,
    ) -> None:
        """`auto_decompress` False leaves Content-Encoding to the handlers (http_body)."""
        self.app = app
        self._auto_decompress = auto_decompress
        self.endpoint = endpoint
        self._tls_config = tls
        self._runner: web.AppRunner | None = None
        self._tls: ServerTLS | None = None

    async def start(self) -> str:
        """The bound endpoint. ListenError (port taken), OSError or ValueError (unreadable
        certificates) with nothing left listening."""
        self._runner = web.AppRunner(
            self.app, access_log=None, auto_decompress=self._auto_decompress
        )
        await self._runner.setup()
        address, port = split_endpoint(self.endpoint)
        try:
            self._tls = ServerTLS.of(self._tls_config)
            site = web.TCPSite(
                self._runner, address, port, ssl_context=ServerTLS.context_of(self._tls)
            )
        except (OSError, ValueError):
            await self.stop()
            raise
        try:
            await site.start()
        except OSError as e:
            await self.stop()
            raise ListenError(self.endpoint, e) from None
        bound = bound_port(site)
        self.endpoint = f"[{address}]:{bound}" if ":" in address else f"{address}:{bound}"
        return self.endpoint

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        if self._tls is not None:
            await self._tls.stop()
            self._tls = None
