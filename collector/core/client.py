"""Who sent the data a consumer is handed, as the OTel Collector's client info: the client's
address and, from a receiver with `include_metadata`, its request headers (gRPC metadata).

A receiver sets it around its `consume` call; being a context variable, it follows that call
down the pipeline and into tasks started from it, and is per request, so concurrent requests
never see each other's. A component that holds data past the call (the batch processor with
`metadata_keys`) keeps what it needs and sets it again when it hands the data on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class ClientInfo:
    addr: str = ""
    # Lower-case header names -> their values, in order.
    metadata: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, addr: str, headers: Iterable[tuple[str, str]]) -> ClientInfo:
        metadata: dict[str, tuple[str, ...]] = {}
        for key, value in headers:
            name = key.lower()
            metadata[name] = (*metadata.get(name, ()), value)
        return cls(addr, MappingProxyType(metadata))

    def get(self, key: str) -> tuple[str, ...]:
        """The values of metadata `key` (any case), empty when absent."""
        return self.metadata.get(key.lower(), ())


_NOBODY = ClientInfo()
_CURRENT: ContextVar[ClientInfo | None] = ContextVar("coldtail_client", default=None)


def current() -> ClientInfo:
    """The client of the data being handled now."""
    return _CURRENT.get() or _NOBODY


@contextlib.contextmanager
def using(info: ClientInfo) -> Iterator[None]:
    """`info` is the current client within the block."""
    token = _CURRENT.set(info)
    try:
        yield
    finally:
        _CURRENT.reset(token)
