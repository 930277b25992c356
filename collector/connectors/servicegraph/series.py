"""The service graph's metric series: requests per edge, with latency histograms from both
sides, and the unpaired and dropped span counters. All cumulative, each series from when it
first appeared."""

from __future__ import annotations

import bisect

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ScopeMetrics

from collector.connectors.servicegraph.store import Edge
from collector.core.pdata import Metrics

# The instrumentation scope of the emitted metrics, named as the Collector names it.
SCOPE_NAME = "traces_service_graph"
REQUEST_TOTAL = "traces_service_graph_request_total"
REQUEST_FAILED_TOTAL = "traces_service_graph_request_failed_total"
REQUEST_SERVER = "traces_service_graph_request_server"
REQUEST_CLIENT = "traces_service_graph_request_client"
UNPAIRED_SPANS_TOTAL = "traces_service_graph_unpaired_spans_total"
DROPPED_SPANS_TOTAL = "traces_service_graph_dropped_spans_total"

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


class _Histogram:
    __slots__ = ("bucket_counts", "count", "sum")

    def __init__(self, buckets: int) -> None:
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.sum = 0.0


class _Series:
    """One series: its point attributes (built once), start and last update (ns), and values."""

    __slots__ = ("attributes", "client", "failed", "last_update", "requests", "server", "start")

    def __init__(self, attributes: list[KeyValue], buckets: int, now: int) -> None:
        self.attributes = attributes
        self.start = now
        self.last_update = now
        self.requests = 0  # request series: requests; counter series: the count
        self.failed = 0
        self.server = _Histogram(buckets)
        self.client = _Histogram(buckets)


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


class Series:
    """The series of one connector. `dimension_keys` are the edge dimensions, in the order they
    become point attributes (`client_<d>`, `server_<d>` per configured dimension)."""

    def __init__(self, bounds: list[float], dimension_keys: list[str], extra_label: bool) -> None:
        self.bounds = bounds
        self.dimension_keys = dimension_keys
        self.extra_label = extra_label
        self._requests: dict[tuple, _Series] = {}
        self._unpaired: dict[tuple, _Series] = {}
        self._dropped: dict[tuple, _Series] = {}

    # --- updates ------------------------------------------------------------------------------

    def record(self, edge: Edge, now: int) -> None:
        """Count the request `edge` stands for, with its latency as each side saw it."""
        values = self._dimension_values(edge)
        key = (
            edge.client,
            edge.server,
            edge.connection_type,
            edge.failed,
            edge.virtual_node,
            *values,
        )
        series = self._requests.get(key)
        if series is None:
            series = self._requests[key] = self._new(self._request_attributes(edge, values), now)
        series.last_update = now
        series.requests += 1
        if edge.failed:
            series.failed += 1
        self._observe(series.server, edge.server_latency)
        self._observe(series.client, edge.client_latency)

    def unpaired(self, edge: Edge, now: int) -> None:
        """Count a span whose edge expired without its other side."""
        self._count(self._unpaired, edge, now)

    def dropped(self, edge: Edge, now: int) -> None:
        """Count a span the full store could not take."""
        self._count(self._dropped, edge, now)

    def forget_stale(self, cutoff: int) -> int:
        """Drop the series last updated before `cutoff` (ns); returns how many."""
        dropped = 0
        for table in (self._requests, self._unpaired, self._dropped):
            stale = [k for k, s in table.items() if s.last_update < cutoff]
            for key in stale:
                del table[key]
            dropped += len(stale)
        return dropped

    def _count(self, table: dict[tuple, _Series], edge: Edge, now: int) -> None:
        values = self._dimension_values(edge)
        key = (edge.client, edge.server, edge.connection_type, *values)
        series = table.get(key)
        if series is None:
            series = table[key] = self._new(self._counter_attributes(edge, values), now)
        series.last_update = now
        series.requests += 1

    def _observe(self, histogram: _Histogram, seconds: float) -> None:
        # Bounds are inclusive upper limits, as the Collector's bucket search has them.
        histogram.bucket_counts[bisect.bisect_left(self.bounds, seconds)] += 1
        histogram.count += 1
        histogram.sum += seconds

    def _new(self, attributes: list[KeyValue], now: int) -> _Series:
        buckets = len(self.bounds) + 1
        return _Series(attributes, buckets, now)

    def _dimension_values(self, edge: Edge) -> tuple[str | None, ...]:
        return tuple(edge.dimensions.get(k) for k in self.dimension_keys)

    def _edge_attributes(self, edge: Edge) -> list[KeyValue]:
        return [
            _string("client", edge.client),
            _string("server", edge.server),
            _string("connection_type", edge.connection_type),
        ]

    def _with_dimensions(
        self, attributes: list[KeyValue], values: tuple[str | None, ...]
    ) -> list[KeyValue]:
        for name, value in zip(self.dimension_keys, values, strict=True):
            if value is not None:
                attributes.append(_string(name, value))
        return attributes

    def _request_attributes(self, edge: Edge, values: tuple[str | None, ...]) -> list[KeyValue]:
        attributes = self._edge_attributes(edge)
        attributes.append(KeyValue(key="failed", value=AnyValue(bool_value=edge.failed)))
        self._with_dimensions(attributes, values)
        if self.extra_label:
            attributes.append(_string("virtual_node", edge.virtual_node))
        return attributes

    def _counter_attributes(self, edge: Edge, values: tuple[str | None, ...]) -> list[KeyValue]:
        return self._with_dimensions(self._edge_attributes(edge), values)

    # --- collection ---------------------------------------------------------------------------

    def collect(self, now: int, offset: int = 0) -> Metrics:
        """Every series as one metrics batch whose points are stamped `now` (ns), their times
        and start times moved back by `offset` (ns); metrics without points are left out."""
        batch = Metrics()
        sm = batch.resource_metrics.add().scope_metrics.add()
        sm.scope.name = SCOPE_NAME
        out = _Writer(sm, now, offset, self.bounds)
        requests = list(self._requests.values())
        out.sum(REQUEST_TOTAL, "Requests between two nodes.", [(s, s.requests) for s in requests])
        out.sum(
            REQUEST_FAILED_TOTAL,
            "Failed requests between two nodes.",
            [(s, s.failed) for s in requests if s.failed],
        )
        out.histogram(
            REQUEST_SERVER,
            "Time for a request between two nodes as seen from the server.",
            [(s, s.server) for s in requests],
        )
        out.histogram(
            REQUEST_CLIENT,
            "Time for a request between two nodes as seen from the client.",
            [(s, s.client) for s in requests],
        )
        out.sum(
            UNPAIRED_SPANS_TOTAL,
            "Spans whose other side never came.",
            [(s, s.requests) for s in self._unpaired.values()],
        )
        out.sum(
            DROPPED_SPANS_TOTAL,
            "Spans dropped: the store was full.",
            [(s, s.requests) for s in self._dropped.values()],
        )
        if not sm.metrics:
            del batch.resource_metrics[:]
        return batch


class _Writer:
    """Appends cumulative metrics to one scope; a metric without points is not written."""

    def __init__(self, sm: ScopeMetrics, now: int, offset: int, bounds: list[float]) -> None:
        self.sm = sm
        self.time = now - offset
        self.offset = offset
        self.bounds = bounds

    def sum(self, name: str, description: str, points: list[tuple[_Series, int]]) -> None:
        if not points:
            return
        metric = self.sm.metrics.add(name=name, description=description)
        metric.sum.is_monotonic = True
        metric.sum.aggregation_temporality = _CUMULATIVE
        for series, value in points:
            point = metric.sum.data_points.add(
                start_time_unix_nano=series.start - self.offset,
                time_unix_nano=self.time,
                as_int=value,
            )
            point.attributes.extend(series.attributes)

    def histogram(
        self, name: str, description: str, points: list[tuple[_Series, _Histogram]]
    ) -> None:
        if not points:
            return
        metric = self.sm.metrics.add(name=name, description=description, unit="s")
        metric.histogram.aggregation_temporality = _CUMULATIVE
        for series, histogram in points:
            point = metric.histogram.data_points.add(
                start_time_unix_nano=series.start - self.offset,
                time_unix_nano=self.time,
                count=histogram.count,
                sum=histogram.sum,
            )
            point.attributes.extend(series.attributes)
            point.bucket_counts.extend(histogram.bucket_counts)
            point.explicit_bounds.extend(self.bounds)
