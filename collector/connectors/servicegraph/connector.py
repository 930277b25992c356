"""The servicegraph connector: pairs client and server spans into edges and counts them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic, time_ns

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status
from prometheus_client import CollectorRegistry, Counter

from collector.connectors.servicegraph.config import (
    DEFAULT_CACHE_LOOP,
    DEFAULT_STORE_EXPIRATION_LOOP,
    Config,
)
from collector.connectors.servicegraph.series import Series
from collector.connectors.servicegraph.store import (
    DATABASE,
    MESSAGING_SYSTEM,
    VIRTUAL_NODE,
    Edge,
    Key,
    Store,
)
from collector.core.component import Host, Settings
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, Traces, count_metric_points, duration_ns, value_text
from collector.core.signals import Signal

SERVICE_NAME = "service.name"
USER_NODE = "user"  # the client of a root server span
UNKNOWN_NODE = "unknown"  # the server of a client span without any peer attribute
# A series no request updated for this long is dropped at the next cache loop.
SERIES_STALE_AFTER_NS = 15 * 60 * 1_000_000_000

_CLIENT_KINDS = (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER)
_SERVER_KINDS = (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER)
_MESSAGING_KINDS = (Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER)
_ERROR = Status.STATUS_CODE_ERROR

Attributes = dict[str, AnyValue]


class _Metrics:
    """The connector's own metrics, made once per service and labelled per instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        prefix = "otelcol_connector_servicegraph_"
        self.total_edges = Counter(
            prefix + "total_edges",
            "Total number of unique edges.",
            ["connector"],
            registry=registry,
        )
        self.expired_edges = Counter(
            prefix + "expired_edges",
            "Number of edges that expired before finding its matching span.",
            ["connector"],
            registry=registry,
        )
        self.dropped_spans = Counter(
            prefix + "dropped_spans",
            "Number of spans dropped when trying to add edges.",
            ["connector"],
            registry=registry,
        )


def _attributes(kvs) -> Attributes:
    return {kv.key: kv.value for kv in kvs}


def _first_text(names: list[str], *sources: Attributes) -> str | None:
    """The value, as text, of the first of `names` one of `sources` has (earlier names win,
    then earlier sources)."""
    for name in names:
        for source in sources:
            value = source.get(name)
            if value is not None:
                return value_text(value)
    return None


class ServiceGraphConnector:
    """Consumes traces (read only: nothing of a batch is kept) and sends metrics to
    `next[Signal.METRICS]` from background tasks. Not thread-safe: one event loop."""

    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal_in: Signal,
        next: Mapping[Signal, Consumer],
    ) -> None:
        self.settings = settings
        self.config = config
        self.next = next.get(Signal.METRICS)
        self.log = settings.logger
        self.store = Store(config.store.ttl, config.store.max_items)
        dimension_keys = [f"{side}_{d}" for d in config.dimensions for side in ("client", "server")]
        self.series = Series(config.bucket_bounds, dimension_keys, config.virtual_node_extra_label)
        self._peer_attributes = config.virtual_node_peer_attributes
        self._database_attributes = config.database_name_attributes
        metrics = settings.telemetry.metric_set(_Metrics)
        connector = str(settings.id)
        self._total_edges = metrics.total_edges.labels(connector=connector)
        self._expired_edges = metrics.expired_edges.labels(connector=connector)
        self._dropped_spans = metrics.dropped_spans.labels(connector=connector)
        self._dropped_since_flush = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._shut_down = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self._tasks or self._shut_down:
            return
        config = self.config
        loops: list[tuple[str, float, Callable[[], Awaitable[None]]]] = [
            (
                "store expiration",
                config.store_expiration_loop or DEFAULT_STORE_EXPIRATION_LOOP,
                self._expire_now,
            ),
            ("cache", config.cache_loop or DEFAULT_CACHE_LOOP, self._forget_stale),
        ]
        if config.metrics_flush_interval:
            loops.append(("flush", config.metrics_flush_interval, self.flush))
        self._tasks = [
            asyncio.create_task(self._every(interval, action), name=f"{self.settings.id} {name}")
            for name, interval, action in loops
        ]

    async def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        # Not cancelled: a flush in progress must finish rather than lose its metrics.
        self._stop.set()
        await asyncio.gather(*self._tasks)
        self._tasks = []
        # No span arrives any more: every waiting edge is settled as expired, then sent.
        self._settle(self.store.drain())
        await self.flush()

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._stop.wait()
            if not self._stop.is_set():
                await action()

    async def _expire_now(self) -> None:
        if self.expire() and not self.config.metrics_flush_interval:
            await self.flush()

    async def _forget_stale(self) -> None:
        self.series.forget_stale(time_ns() - SERIES_STALE_AFTER_NS)

    # --- consume ------------------------------------------------------------------------------

    async def consume(self, batch: Traces) -> None:
        if self.next is None:
            return
        now = monotonic()
        for rs in batch.resource_spans:
            self._consume_resource(rs, now)
        if not self.config.metrics_flush_interval:
            await self.flush()

    def _consume_resource(self, rs: ResourceSpans, now: float) -> None:
        resource = _attributes(rs.resource.attributes)
        service_value = resource.get(SERVICE_NAME)
        service = value_text(service_value) if service_value is not None else ""
        if not service:
            return  # no node to draw
        for ss in rs.scope_spans:
            for span in ss.spans:
                if span.kind in _CLIENT_KINDS:
                    self._client_span(span, service, resource, now)
                elif span.kind in _SERVER_KINDS:
                    self._server_span(span, service, resource, now)

    def _client_span(self, span: Span, service: str, resource: Attributes, now: float) -> None:
        attributes = _attributes(span.attributes)
        key = (span.trace_id, span.span_id)
        database = _first_text(self._database_attributes, resource, attributes)
        edge: Edge | None
        if database is not None:
            # A database request has only this span: its edge is complete at once and needs no
            # room in the store.
            edge = self.store.pop(key) or self._new_edge(key, now)
        else:
            edge = self._edge(key, now)
        if edge is None:
            self._drop(Edge(key, now), "client", service, span, resource, attributes)
            return
        self._fill(edge, "client", service, span, resource, attributes)
        if self._peer_attributes:
            edge.peer = _first_text(self._peer_attributes, attributes)
        if database is not None:
            edge.connection_type = DATABASE
            edge.server = database
            edge.server_latency = edge.client_latency
        self._complete_if_paired(edge)

    def _server_span(self, span: Span, service: str, resource: Attributes, now: float) -> None:
        attributes = _attributes(span.attributes) if self.config.dimensions else {}
        key = (span.trace_id, span.parent_span_id)
        edge = self._edge(key, now)
        if edge is None:
            self._drop(Edge(key, now), "server", service, span, resource, attributes)
            return
        self._fill(edge, "server", service, span, resource, attributes)
        self._complete_if_paired(edge)

    def _fill(
        self,
        edge: Edge,
        side: str,
        service: str,
        span: Span,
        resource: Attributes,
        attributes: Attributes,
    ) -> None:
        """Write what the `side` ("client" or "server") span tells into its edge."""
        latency = duration_ns(span) / 1e9
        if side == "client":
            edge.client, edge.client_latency = service, latency
        else:
            edge.server, edge.server_latency = service, latency
        edge.failed = edge.failed or span.status.code == _ERROR
        if span.kind in _MESSAGING_KINDS:
            edge.connection_type = MESSAGING_SYSTEM
        for name in self.config.dimensions:
            # The resource's value wins over the span's, as in the Collector.
            value = _first_text([name], resource, attributes)
            if value is not None:
                edge.dimensions[f"{side}_{name}"] = value

    def _edge(self, key: Key, now: float) -> Edge | None:
        """The waiting edge of `key`, or a new one in the store; None when the store stays
        full once the expired edges are out."""
        edge = self.store.get(key)
        if edge is not None:
            return edge
        if self.store.full:
            self._settle(self.store.expire(now))
            if self.store.full:
                return None
        self._total_edges.inc()
        return self.store.add(key, now)

    def _new_edge(self, key: Key, now: float) -> Edge:
        self._total_edges.inc()
        return Edge(key, now + self.store.ttl)

    def _complete_if_paired(self, edge: Edge) -> None:
        if edge.complete:
            self.store.pop(edge.key)
            self.series.record(edge, time_ns())

    def _drop(
        self,
        edge: Edge,
        side: str,
        service: str,
        span: Span,
        resource: Attributes,
        attributes: Attributes,
    ) -> None:
        """Count a span the full store cannot take, with what it tells of its edge."""
        self._fill(edge, side, service, span, resource, attributes)
        self._dropped_spans.inc()
        self._dropped_since_flush += 1
        self.series.dropped(edge, time_ns())

    # --- expiry -------------------------------------------------------------------------------

    def expire(self, now: float | None = None) -> int:
        """Settle the edges whose `store::ttl` ran out by `now` (monotonic seconds, default
        the current time); returns how many."""
        expired = self.store.expire(monotonic() if now is None else now)
        self._settle(expired)
        return len(expired)

    def _settle(self, edges: list[Edge]) -> None:
        """Edges that will not be paired any more: virtual node edges where the config and the
        spans allow, unpaired spans otherwise."""
        now = time_ns()
        for edge in edges:
            self._expired_edges.inc()
            if self._peer_attributes and self._to_virtual_node(edge):
                self.series.record(edge, now)
            else:
                self.series.unpaired(edge, now)

    @staticmethod
    def _to_virtual_node(edge: Edge) -> bool:
        if not edge.client and edge.from_root_span:
            edge.client, edge.virtual_node = USER_NODE, "client"
        elif edge.client and not edge.server:
            edge.server, edge.virtual_node = edge.peer or UNKNOWN_NODE, "server"
        else:
            return False
        edge.connection_type = VIRTUAL_NODE
        return True

    # --- flush --------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send every series to the metrics pipeline. Errors of the next consumer are logged,
        not raised: the counts stay, and the next flush sends them again."""
        if self.next is None:
            return
        if self._dropped_since_flush:
            self.log.warning(
                "spans dropped: the store was full (store::max_items)",
                extra={"kv": {"dropped_spans": self._dropped_since_flush}},
            )
            self._dropped_since_flush = 0
        batch = self.collect(time_ns())
        if not batch.resource_metrics:
            return
        try:
            await self.next.consume(batch)
        except Exception as exc:
            self.log.error(
                "service graph metrics not sent: the next consumer failed",
                extra={"kv": {"metric_points": count_metric_points(batch), "error": repr(exc)}},
            )

    def collect(self, now: int) -> Metrics:
        """The series as a metrics batch for a flush at `now` (ns), with
        `metrics_timestamp_offset` applied."""
        return self.series.collect(now, int(self.config.metrics_timestamp_offset * 1e9))
