"""`host:port` endpoints; standard library only at import, so the Lambda extension can use it
before its init is over."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr) -> None:
        self.on_datagram(data)


async def listen_udp(
    endpoint: str, on_datagram: Callable[[bytes], None]
) -> tuple[asyncio.DatagramTransport, str]:
    """A UDP listener on `endpoint` that hands every datagram to `on_datagram`, and the
    host:port it bound. OSError naming the endpoint when it cannot listen."""
    hostname, port = split_endpoint(endpoint)
    try:
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(on_datagram), local_addr=(hostname, port)
        )
    except OSError as e:
        raise OSError(f"cannot listen on udp {endpoint}: {e.strerror}") from None
    return transport, f"{hostname}:{transport.get_extra_info('sockname')[1]}"


def bound_port(site: web.TCPSite) -> int:
    """The port a started aiohttp site listens on: the one the system chose when 0 was asked
    for. aiohttp keeps the server private."""
    server = site._server
    assert isinstance(server, asyncio.Server), "site not started"
    return server.sockets[0].getsockname()[1]
