"""`host:port` endpoints; standard library only at import, so the Lambda extension can use it
before its init is over."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """("host", port) of "host:port" ("[::1]:4318" included); an empty host is every
    interface. ValueError when the port is not a number."""
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def with_port(endpoint: str, port: int) -> str:
    """`endpoint` with its port replaced: the address a listener bound to port 0 really has."""
    return f"{endpoint.rpartition(':')[0]}:{port}"


def bound_port(site: web.TCPSite) -> int:
    """The port a started aiohttp site listens on: the one the system chose when 0 was asked
    for. aiohttp keeps the server private."""
    server = site._server
    assert isinstance(server, asyncio.Server), "site not started"
    return server.sockets[0].getsockname()[1]
