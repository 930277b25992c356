"""Where the backends come from: a static list, or a DNS name resolved every `interval`.

A resolver hands the exporter the full, sorted list of `host:port` endpoints after each
resolution (`on_update`) and reports whether each resolution worked (`on_resolution`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

from collector.core import tasks
from collector.core.config_types import format_duration
from collector.exporters.loadbalancing.config import DNSResolverConfig, check_host_port

OnUpdate = Callable[[list[str]], None]
OnResolution = Callable[[bool], None]
Lookup = Callable[[str], Awaitable[list[str]]]
"""A host name -> its addresses; OSError when it cannot be resolved."""


class StaticResolver:
    """The backends of `resolver::static::hostnames`."""

    kind = "static"

    def __init__(
        self, hostnames: Iterable[str], on_update: OnUpdate, on_resolution: OnResolution
    ) -> None:
        self._hostnames = list(hostnames)
        self._on_update = on_update
        self._on_resolution = on_resolution

    async def start(self) -> None:
        self.update(self._hostnames)

    def update(self, hostnames: Iterable[str]) -> None:
        """Replace the backends (`host:port`; a host alone means port 4317), as a reloaded
        config would; ValueError for an invalid one, and the list stays as it was."""
        endpoints = sorted({check_host_port(h) for h in hostnames})
        self._hostnames = endpoints
        self._on_resolution(True)
        self._on_update(endpoints)

    async def shutdown(self) -> None:
        pass


async def system_lookup(hostname: str) -> list[str]:
    """The addresses the system's resolver gives `hostname` (DNS, /etc/hosts)."""
    infos = await asyncio.get_running_loop().getaddrinfo(hostname, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class DNSResolver:
    """The addresses of `hostname`, each at `port`, resolved at start and every `interval`.
    A failed or timed-out resolution keeps the backends found before."""

    kind = "dns"

    def __init__(
        self,
        config: DNSResolverConfig,
        on_update: OnUpdate,
        on_resolution: OnResolution,
        log,
        lookup: Lookup = system_lookup,
    ) -> None:
        self._config = config
        self._on_update = on_update
        self._on_resolution = on_resolution
        self._log = log
        self._lookup = lookup
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.resolve()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dns-resolver")

    async def resolve(self) -> None:
        cfg = self._config
        try:
            async with asyncio.timeout(cfg.timeout):
                addresses = await self._lookup(cfg.hostname)
        except (OSError, TimeoutError) as e:
            self._on_resolution(False)
            reason = (
                f"no answer within {format_duration(cfg.timeout)}"
                if isinstance(e, TimeoutError)
                else str(e)
            )
            self._log.warning(
                f"cannot resolve {cfg.hostname!r}, keeping the backends found before: {reason}"
            )
            return
        self._on_resolution(True)
        self._on_update(sorted({_endpoint(a, cfg.port) for a in addresses}))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._config.interval)
            await self.resolve()

    async def shutdown(self) -> None:
        await tasks.cancel([self._task])
        self._task = None
