"""TLS for listening components: the `tls` block of receivers (as the OTel Collector's
configtls server settings) as an ssl context for their HTTP and gRPC listeners, picking up
renewed certificate files every `reload_interval`."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Literal

from pydantic import Field

from collector.core.config_types import ComponentConfig, Duration


class TLSServerConfig(ComponentConfig):
    cert_file: str
    """The server's certificate chain (PEM). Required."""
    key_file: str
    """The private key of `cert_file` (PEM). Required."""
    client_ca_file: str = ""
    """CA certificates that client certificates must chain to; when set, clients without a
    valid certificate are refused (mutual TLS). Default empty: no client certificates."""
    min_version: Literal["1.2", "1.3"] = "1.2"
    """Lowest TLS version accepted (default 1.2)."""
    reload_interval: Duration = Field(0.0, ge=0)
    """How often changed certificate files are read again, for certificates renewed in place
    (default 0 = never)."""


def _stamp(tls: TLSServerConfig) -> tuple[float, ...]:
    """When the certificate files last changed."""
    paths = [tls.cert_file, tls.key_file, tls.client_ca_file]
    return tuple(os.stat(p).st_mtime if p else 0.0 for p in paths)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"tls::{what}: cannot read {path}: {e.strerror}") from None


class ServerTLS:
    """An ssl context for a listener, and with `reload_interval` a task that loads changed
    files into it, for the handshakes that follow. ValueError at creation naming the key whose
    file is unusable."""

    def __init__(self, tls: TLSServerConfig) -> None:
        self.tls = tls
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = (
            ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
        )
        _load(self.context, tls)
        if tls.client_ca_file:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._watch: asyncio.Task | None = None

    @classmethod
    def of(cls, tls: TLSServerConfig | None) -> ServerTLS | None:
        """Started, for a `tls` block that may be absent."""
        if tls is None:
            return None
        server = cls(tls)
        server.start()
        return server

    @staticmethod
    def context_of(server: ServerTLS | None) -> ssl.SSLContext | None:
        return server.context if server is not None else None

    def start(self) -> None:
        if self.tls.reload_interval and self._watch is None:
            self._watch = asyncio.create_task(self._reload_forever())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def _reload_forever(self) -> None:
        loaded = _stamp(self.tls)
        while True:
            await asyncio.sleep(self.tls.reload_interval)
            try:
                stamp = _stamp(self.tls)  # before loading: a change meanwhile loads again
            except OSError:
                continue  # mid-rotation: keep what works
            if stamp == loaded:
                continue
            try:
                _load(self.context, self.tls)
            except (ValueError, ssl.SSLError):
                continue  # a half-written pair: the next look tries again
            loaded = stamp


def _load(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    _read(tls.cert_file, "cert_file")
    _read(tls.key_file, "key_file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as e:
        raise ValueError(f"tls::cert_file / key_file: not a certificate and its key: {e}") from None
    if tls.client_ca_file:
        _read(tls.client_ca_file, "client_ca_file")
        try:
            context.load_verify_locations(tls.client_ca_file)
        except ssl.SSLError as e:
            raise ValueError(f"tls::client_ca_file: no CA certificates: {e}") from None
