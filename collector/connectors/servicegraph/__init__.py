"""servicegraph connector: the graph of which service calls which, as metrics, from spans, as
the OTel Collector's servicegraph connector (after Grafana Tempo's service graphs) computes it.

A request between two services shows as a client span (kind CLIENT, or PRODUCER for messaging)
in one and a server span (SERVER, or CONSUMER) in the other, whose parent is that client span.
Each span waits in a bounded store (`store::ttl`, `store::max_items`) until the span of the
other side arrives, in the same batch or a later one; the pair is an edge, counted in
traces_service_graph_request_total (and ..._request_failed_total when either span has status
ERROR) with its latency as the server and as the client saw it (the ..._request_server and
..._request_client histograms, in seconds). A client span naming a database
(`database_name_attributes`) is an edge on its own, to a node named after the database.

An edge that expires unpaired becomes a virtual node edge where it can (a client span to the
peer its `virtual_node_peer_attributes` name, a root server span from the `user` node) and
counts in traces_service_graph_unpaired_spans_total otherwise; spans the full store cannot take
count in traces_service_graph_dropped_spans_total. Every series is cumulative, from when it first
appeared, and is sent every `metrics_flush_interval` and once more at shutdown, when the edges
still waiting are settled as expired.

Modules: `config.py` (options), `store.py` (waiting edges), `series.py` (metric series and
their OTLP form), `connector.py` (pairing, expiry, flushing).
"""

from __future__ import annotations

from collector.connectors.servicegraph.config import Config
from collector.connectors.servicegraph.connector import ServiceGraphConnector
from collector.core.component import Factory, Kind, Stability
from collector.core.signals import Signal

__all__ = ["Config", "ServiceGraphConnector", "factory"]

factory = Factory(
    kind=Kind.CONNECTOR,
    type="servicegraph",
    config=Config,
    create=ServiceGraphConnector,
    signals={Signal.TRACES: {Signal.METRICS: Stability.ALPHA}},
    description="The graph of which service calls which, from pairs of client and server "
    "spans: request, failure and latency metrics per edge (client, server, connection type).",
)
