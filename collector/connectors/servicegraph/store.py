"""Edges waiting for the span of their other side.

An edge is one request between two nodes. Its key is the client span's (trace id, span id): a
client span files itself under its own id, a server span under its parent's, so the two halves
of one request meet under one key whichever arrives first, in whatever batch.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

UNSET = ""
MESSAGING_SYSTEM = "messaging_system"
DATABASE = "database"
VIRTUAL_NODE = "virtual_node"

Key = tuple[bytes, bytes]


@dataclass(slots=True)
class Edge:
    """One request, as much of it as has been seen. Latencies are in seconds."""

    key: Key
    expires_at: float  # monotonic seconds
    connection_type: str = UNSET
    client: str = ""
    server: str = ""
    client_latency: float = 0.0
    server_latency: float = 0.0
    failed: bool = False
    # `client_<dimension>` / `server_<dimension>` -> value
    dimensions: dict[str, str] = field(default_factory=dict)
    peer: str | None = None  # the client span's first virtual node peer attribute
    virtual_node: str = ""  # "client" or "server" once a side is a virtual node

    @property
    def complete(self) -> bool:
        return bool(self.client and self.server)

    @property
    def from_root_span(self) -> bool:
        """Filed by a server span without a parent: no client span will ever come."""
        return not self.key[1]


class Store:
    """Edges by key, bounded to `max_items`. Every edge lives `ttl` seconds from its creation,
    so creation order is expiry order and expiring looks only at the oldest edges. Not
    thread-safe: one event loop."""

    def __init__(self, ttl: float, max_items: int) -> None:
        self.ttl = ttl
        self.max_items = max_items
        self._edges: OrderedDict[Key, Edge] = OrderedDict()

    def __len__(self) -> int:
        return len(self._edges)

    @property
    def full(self) -> bool:
        return len(self._edges) >= self.max_items

    def get(self, key: Key) -> Edge | None:
        return self._edges.get(key)

    def add(self, key: Key, now: float) -> Edge:
        """A new edge for `key`, expiring `ttl` after `now`. The caller checks `full` first."""
        edge = self._edges[key] = Edge(key, now + self.ttl)
        return edge

    def pop(self, key: Key) -> Edge | None:
        return self._edges.pop(key, None)

    def expire(self, now: float) -> list[Edge]:
        """Take out and return the edges whose time ran out by `now`, oldest first."""
        expired = []
        while self._edges:
            key, edge = next(iter(self._edges.items()))
            if edge.expires_at > now:
                break
            del self._edges[key]
            expired.append(edge)
        return expired

    def drain(self) -> list[Edge]:
        """Take out and return every edge, oldest first."""
        edges = list(self._edges.values())
        self._edges.clear()
        return edges
