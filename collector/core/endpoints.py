"""`host:port` endpoints; standard library only at import, so the Lambda extension can use it
before its init is over."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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


_REASONS = {
    errno.EADDRINUSE: "address in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available on this machine",
}


def _system_error(error: OSError) -> OSError:
    """The system's own error behind `error`: uvloop raises its own, without an errno ("could
    not bind to local_addr"), from the system's."""
    while error.errno is None and isinstance(error.__cause__, OSError):
        error = error.__cause__
    return error


def listen_reason(error: OSError) -> str:
    """Why a bind failed, in a few words."""
    error = _system_error(error)
    known = _REASONS.get(error.errno or 0)
    return known or (error.strerror or str(error)).lower()


class ListenError(OSError):
    """A listener could not bind its endpoint. `endpoint` is the host:port as configured,
    `reason` says why in a few words; `key` is the config key of the endpoint within its
    component (`protocols::grpc::endpoint`), when the listener knows it."""

    def __init__(
        self, endpoint: str, error: OSError, transport: str = "tcp", key: str | None = None
    ) -> None:
        system = _system_error(error)
        super().__init__(system.errno, system.strerror or str(system))
        self.endpoint, self.transport, self.key = endpoint, transport, key
        self.reason = listen_reason(system)

    @property
    def address(self) -> str:
        """The endpoint as said to users: `udp ` before a UDP one."""
        return f"udp {self.endpoint}" if self.transport == "udp" else self.endpoint

    def __str__(self) -> str:
        return f"cannot listen on {self.address}: {self.reason}"


def _bind_test(endpoint: str, kind: socket.SocketKind) -> None:
    """Bind and close a socket on every address `endpoint` resolves to, as a server would
    (SO_REUSEADDR, so connections in TIME_WAIT do not count). OSError when one fails."""
    host, port = split_endpoint(endpoint)
    for family, type_, proto, _, address in socket.getaddrinfo(
        host, port, type=kind, flags=socket.AI_PASSIVE
    ):
        with socket.socket(family, type_, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind(address)


def suggest_endpoint(endpoint: str, transport: str = "tcp", reason: str = "") -> str:
    """An endpoint to use instead of `endpoint`, free right now: the port plus 10000 when that
    is free, else one the system picks; loopback when the host is not on this machine."""
    host, _, port_text = endpoint.rpartition(":")
    port = int(port_text)
    if reason == _REASONS[errno.EADDRNOTAVAIL]:
        return f"127.0.0.1:{port}"
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    if port + 10000 <= 65535:
        candidate = with_port(endpoint, port + 10000)
        try:
            _bind_test(candidate, kind)
            return candidate
        except OSError:
            pass
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return f"{host or '127.0.0.1'}:{s.getsockname()[1]}"


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
        raise ListenError(endpoint, e, transport="udp") from None
    return transport, f"{hostname}:{transport.get_extra_info('sockname')[1]}"


def bound_port(site: web.TCPSite) -> int:
    """The port a started aiohttp site listens on: the one the system chose when 0 was asked
    for. aiohttp keeps the server private."""
    server: Any = site._server  # asyncio's Server or uvloop's: both have `sockets`
    assert server is not None, "site not started"
    return server.sockets[0].getsockname()[1]
