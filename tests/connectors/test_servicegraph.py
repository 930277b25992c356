import asyncio
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, set_span_in_context
from pydantic import ValidationError

from collector.connectors.servicegraph import Config, ServiceGraphConnector, factory
from collector.connectors.servicegraph import connector as connector_module
from collector.core import otlpjson
from collector.core.component import Factory, Kind
from collector.core.config import validate
from collector.core.confmap import load
from collector.core.consumer import RetryableError
from collector.core.pdata import Metrics, Traces, any_value_to_python, count_metric_points, set_attr
from collector.core.service import Service
from collector.core.signals import Signal
from collector.registry import registry
from tests.support import recording
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port
from tests.support.sinks import ErrorConsumer, SinkConsumer

TESTDATA = Path(__file__).parent / "testdata"
UPSTREAM_CONFIGS = Path(__file__).parents[1] / "testdata" / "upstream_configs"
TOTAL = "traces_service_graph_request_total"
FAILED = "traces_service_graph_request_failed_total"
SERVER = "traces_service_graph_request_server"
CLIENT = "traces_service_graph_request_client"
UNPAIRED = "traces_service_graph_unpaired_spans_total"
DROPPED = "traces_service_graph_dropped_spans_total"
DEFAULT_BOUNDS = [0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1, 1.4, 2, 5, 10, 15]
LATER = 3600.0  # seconds past every store ttl of these tests

# --- spans ------------------------------------------------------------------------------------

_ids = itertools.count(1)
CLIENT_KIND, SERVER_KIND = Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_SERVER
PRODUCER_KIND, CONSUMER_KIND = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER


def new_id(size: int) -> bytes:
    return next(_ids).to_bytes(size, "big")


def span(
    service: str | None,
    kind: Span.SpanKind.ValueType,
    *,
    trace: bytes,
    parent: bytes = b"",
    span_id: bytes | None = None,
    ms: float = 10.0,
    error: bool = False,
    attributes: dict | None = None,
    resource: dict | None = None,
) -> tuple[dict, Span]:
    """(resource attributes, span): one side of a request, `ms` long."""
    s = Span(
        trace_id=trace,
        span_id=span_id or new_id(8),
        parent_span_id=parent,
        name=f"{service} op",
        kind=kind,
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_000_000_000 + int(ms * 1e6),
    )
    if error:
        s.status.code = Status.STATUS_CODE_ERROR
    for key, value in (attributes or {}).items():
        set_attr(s.attributes, key, value)
    res = dict(resource or {})
    if service is not None:
        res["service.name"] = service
    return res, s


def pair(client: str, server: str, **server_kw) -> tuple[tuple[dict, Span], tuple[dict, Span]]:
    """A client span of `client` and the server span of `server` it called."""
    trace = new_id(16)
    c = span(client, CLIENT_KIND, trace=trace, ms=server_kw.pop("client_ms", 20.0))
    s = span(server, SERVER_KIND, trace=trace, parent=c[1].span_id, **server_kw)
    return c, s


def batch(*sides: tuple[dict, Span]) -> Traces:
    """One resource per span, in order."""
    traces = Traces()
    for resource, s in sides:
        rs = traces.resource_spans.add()
        for key, value in resource.items():
            set_attr(rs.resource.attributes, key, value)
        rs.scope_spans.add().spans.append(s)
    return traces


# --- connectors and their output --------------------------------------------------------------


def make_connector(config: dict | None = None, sink=None) -> tuple[ServiceGraphConnector, Any]:
    sink = sink if sink is not None else SinkConsumer()
    connector = factory.create(
        make_settings(Kind.CONNECTOR, "servicegraph"),
        Config.model_validate(config or {}),
        Signal.TRACES,
        {Signal.METRICS: sink},
    )
    return connector, sink


def attrs(kvs) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in kvs}


def points(batch: Metrics, name: str) -> list[tuple[dict, Any]]:
    """(point attributes, point) of every point of metric `name`."""
    out = []
    for rm in batch.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    data = getattr(metric, str(metric.WhichOneof("data"))).data_points
                    out += [(attrs(p.attributes), p) for p in data]
    return out


def by_edge(batch: Metrics, name: str) -> dict:
    """Points of metric `name` by (client, server, connection_type)."""
    found = {}
    for a, p in points(batch, name):
        edge = (a["client"], a["server"], a["connection_type"])
        assert edge not in found, f"two {name} points for {edge}"
        found[edge] = p
    return found


def counts(batch: Metrics, name: str = TOTAL) -> dict:
    return {edge: p.as_int for edge, p in by_edge(batch, name).items()}


async def flushed(connector, sink) -> Metrics:
    """The batch one flush sends."""
    sink.reset()
    await connector.flush()
    (out,) = sink.batches
    return out


def own_metric(connector: ServiceGraphConnector, name: str) -> float | None:
    return connector.settings.telemetry.registry.get_sample_value(
        f"otelcol_connector_servicegraph_{name}_total", {"connector": "servicegraph"}
    )


# --- config and factory -----------------------------------------------------------------------


def test_defaults_are_the_collectors():
    config = Config.model_validate(None)
    assert (config.store.ttl, config.store.max_items) == (2.0, 1000)
    assert config.metrics_flush_interval == 60.0
    assert config.bucket_bounds == DEFAULT_BOUNDS
    assert config.virtual_node_peer_attributes == ["peer.service", "db.name", "db.system"]
    assert config.database_name_attributes == ["db.name"]
    assert (config.cache_loop, config.store_expiration_loop) == (60.0, 2.0)
    assert (config.metrics_timestamp_offset, config.virtual_node_extra_label) == (0.0, False)
    assert config.dimensions == []


def test_factory_shape():
    assert isinstance(factory, Factory)
    assert (factory.kind, factory.type) == (Kind.CONNECTOR, "servicegraph")
    assert factory.connects(Signal.TRACES, Signal.METRICS)
    assert not factory.connects(Signal.TRACES, Signal.TRACES)


def test_testdata_cases():
    cases = yaml.safe_load((TESTDATA / "servicegraph_config.yaml").read_text())
    for config in cases["valid"].values():
        Config.model_validate(config)
    for case in cases["invalid"]:
        with pytest.raises(ValidationError) as excinfo:
            Config.model_validate(case["config"])
        assert case["error"] in str(excinfo.value), case["name"]


def test_database_name_attribute_is_the_older_form():
    assert Config.model_validate(
        {"database_name_attribute": "db.namespace"}
    ).database_name_attributes == ["db.namespace"]
    config = Config.model_validate(
        {"database_name_attribute": "db.namespace", "database_name_attributes": ["db.x"]}
    )
    assert config.database_name_attributes == ["db.x"]


class _WithServiceGraph:
    """The built-in registry, with this module's factory for the servicegraph type."""

    def get(self, kind, type_):
        if (kind, type_) == (Kind.CONNECTOR, "servicegraph"):
            return factory
        return registry().get(kind, type_)

    def missing(self, kind, type_):
        return registry().missing(kind, type_)

    def types(self, kind):
        return registry().types(kind)


def test_the_intro_to_mltp_config_validates():
    # The Grafana intro-to-mltp collector config: a servicegraph block with the deprecated
    # metrics_exporter key, store, cache_loop and store_expiration_loop.
    tree = load([str(UPSTREAM_CONFIGS / "intro-to-mltp-otel.yaml")])
    config = Config.model_validate(tree["connectors"]["servicegraph"])
    assert (config.store.ttl, config.store.max_items) == (2.0, 200)
    assert (config.cache_loop, config.store_expiration_loop) == (120.0, 10.0)
    assert config.virtual_node_peer_attributes == ["db.name"]
    assert config.metrics_exporter == "prometheusremotewrite"
    service = validate(tree, _WithServiceGraph())  # type: ignore[arg-type]  # it reads get, missing, types
    assert {str(p.id) for p in service.pipelines} == {"traces", "metrics"}


# --- pairing ----------------------------------------------------------------------------------


async def test_pairs_a_client_span_with_its_server_span_from_a_later_batch():
    connector, sink = make_connector()
    client, server = pair("frontend", "orders", ms=5, client_ms=12)
    await connector.consume(batch(client))
    assert len(connector.store) == 1
    await connector.flush()
    assert sink.batches == []  # nothing complete yet
    await connector.consume(batch(server))
    assert len(connector.store) == 0

    out = await flushed(connector, sink)
    ((total_attrs, total),) = points(out, TOTAL)
    assert total_attrs == {
        "client": "frontend",
        "server": "orders",
        "connection_type": "",
        "failed": False,
    }
    assert total.as_int == 1
    assert points(out, FAILED) == []
    ((server_attrs, server_hist),) = points(out, SERVER)
    ((_, client_hist),) = points(out, CLIENT)
    assert server_attrs == total_attrs
    assert (server_hist.count, server_hist.sum) == (1, pytest.approx(0.005))
    assert (client_hist.count, client_hist.sum) == (1, pytest.approx(0.012))
    assert list(server_hist.explicit_bounds) == DEFAULT_BOUNDS
    # 5ms falls in the (4ms, 6ms] bucket, 12ms in (10ms, 50ms].
    assert list(server_hist.bucket_counts).index(1) == 2
    assert list(client_hist.bucket_counts).index(1) == 5
    assert own_metric(connector, "total_edges") == 1


async def test_pairs_whichever_side_comes_first_and_within_one_batch():
    connector, sink = make_connector()
    c1, s1 = pair("web", "api")
    c2, s2 = pair("web", "api")
    await connector.consume(batch(s1))
    await connector.consume(batch(c1))
    await connector.consume(batch(s2, c2))
    assert len(connector.store) == 0
    assert counts(await flushed(connector, sink)) == {("web", "api", ""): 2}


async def test_only_the_server_span_whose_parent_is_the_client_span_pairs():
    connector, _ = make_connector({"virtual_node_peer_attributes": []})
    client, _ = pair("web", "api")
    stranger = span("api", SERVER_KIND, trace=client[1].trace_id, parent=new_id(8))
    other_trace = span("api", SERVER_KIND, trace=new_id(16), parent=client[1].span_id)
    internal = span("api", Span.SPAN_KIND_INTERNAL, trace=client[1].trace_id)
    internal[1].parent_span_id = client[1].span_id
    await connector.consume(batch(client, stranger, other_trace, internal))
    assert len(connector.store) == 3
    assert connector.collect(time.time_ns()).resource_metrics == []


async def test_counts_are_cumulative_across_flushes():
    connector, sink = make_connector()
    await connector.consume(batch(*pair("a", "b")))
    first = by_edge(await flushed(connector, sink), TOTAL)["a", "b", ""]
    await asyncio.sleep(0.01)
    for _ in range(2):
        await connector.consume(batch(*pair("a", "b")))
    second_batch = await flushed(connector, sink)
    second = by_edge(second_batch, TOTAL)["a", "b", ""]
    assert (first.as_int, second.as_int) == (1, 3)
    assert second.start_time_unix_nano == first.start_time_unix_nano
    assert first.start_time_unix_nano <= first.time_unix_nano < second.time_unix_nano
    assert by_edge(second_batch, SERVER)["a", "b", ""].count == 3
    # Nothing new: the same totals again.
    assert counts(await flushed(connector, sink)) == {("a", "b", ""): 3}


async def test_a_request_fails_when_either_span_has_status_error():
    connector, sink = make_connector()
    ok = pair("web", "api")
    server_failed = pair("web", "api", error=True)
    client_failed = pair("web", "api")
    client_failed[0][1].status.code = Status.STATUS_CODE_ERROR
    for request in (ok, server_failed, client_failed):
        await connector.consume(batch(*request))
    out = await flushed(connector, sink)
    totals = {a["failed"]: p.as_int for a, p in points(out, TOTAL)}
    assert totals == {False: 1, True: 2}
    ((failed_attrs, failed),) = points(out, FAILED)
    assert failed_attrs["failed"] is True
    assert failed.as_int == 2
    assert {a["failed"]: p.count for a, p in points(out, SERVER)} == {False: 1, True: 2}


async def test_producer_and_consumer_spans_are_a_messaging_system_edge():
    connector, sink = make_connector()
    trace = new_id(16)
    producer = span("checkout", PRODUCER_KIND, trace=trace)
    consumer = span("shipping", CONSUMER_KIND, trace=trace, parent=producer[1].span_id)
    await connector.consume(batch(producer))
    await connector.consume(batch(consumer))
    assert counts(await flushed(connector, sink)) == {
        ("checkout", "shipping", "messaging_system"): 1
    }


async def test_a_client_span_naming_a_database_is_an_edge_on_its_own():
    connector, sink = make_connector()
    trace = new_id(16)
    query = span("orders", CLIENT_KIND, trace=trace, ms=30, attributes={"db.name": "orders-db"})
    await connector.consume(batch(query))
    assert len(connector.store) == 0
    out = await flushed(connector, sink)
    assert counts(out) == {("orders", "orders-db", "database"): 1}
    server = by_edge(out, SERVER)["orders", "orders-db", "database"]
    client = by_edge(out, CLIENT)["orders", "orders-db", "database"]
    assert server.sum == client.sum == pytest.approx(0.03)


async def test_database_name_attributes_in_priority_order_resource_first():
    connector, sink = make_connector({"database_name_attributes": ["db.namespace", "db.name"]})
    trace = new_id(16)
    both = span(
        "a",
        CLIENT_KIND,
        trace=trace,
        attributes={"db.name": "by-name", "db.namespace": "by-namespace"},
    )
    resource_only = span("b", CLIENT_KIND, trace=trace, resource={"db.name": "shared-db"})
    on_both_levels = span(
        "c",
        CLIENT_KIND,
        trace=trace,
        attributes={"db.namespace": "span-db"},
        resource={"db.namespace": "resource-db"},
    )
    await connector.consume(batch(both, resource_only, on_both_levels))
    assert counts(await flushed(connector, sink)) == {
        ("a", "by-namespace", "database"): 1,
        ("b", "shared-db", "database"): 1,
        ("c", "resource-db", "database"): 1,
    }


async def test_dimensions_from_each_side_with_prefixes():
    connector, sink = make_connector({"dimensions": ["deployment.environment", "http.status"]})
    trace = new_id(16)
    client = span(
        "web",
        CLIENT_KIND,
        trace=trace,
        attributes={"http.status": 503, "deployment.environment": "span-value"},
        resource={"deployment.environment": "prod"},
    )
    server = span(
        "api", SERVER_KIND, trace=trace, parent=client[1].span_id, attributes={"http.status": 200}
    )
    await connector.consume(batch(client, server))
    out = await flushed(connector, sink)
    ((point_attrs, _),) = points(out, TOTAL)
    # The resource's value wins over the span's; a side without the attribute leaves it out;
    # values are text.
    assert point_attrs == {
        "client": "web",
        "server": "api",
        "connection_type": "",
        "failed": False,
        "client_deployment.environment": "prod",
        "client_http.status": "503",
        "server_http.status": "200",
    }
    # Other dimension values are another series.
    c2, s2 = pair("web", "api", attributes={"http.status": 500})
    await connector.consume(batch(c2, s2))
    statuses = {
        a.get("server_http.status") for a, _ in points(await flushed(connector, sink), TOTAL)
    }
    assert statuses == {"200", "500"}


# --- expiry and virtual nodes -----------------------------------------------------------------


async def test_edges_wait_for_the_ttl_then_expire():
    connector, sink = make_connector({"store": {"ttl": "1s"}})
    client, server = pair("web", "api")
    start = time.monotonic()
    await connector.consume(batch(client))
    assert connector.expire(start + 0.5) == 0
    assert len(connector.store) == 1
    assert connector.expire(start + 1.5) == 1
    assert own_metric(connector, "expired_edges") == 1
    # Too late: the server span waits on its own now.
    await connector.consume(batch(server))
    assert len(connector.store) == 1
    out = await flushed(connector, sink)
    assert counts(out) == {("web", "unknown", "virtual_node"): 1}


async def test_an_expired_client_span_goes_to_a_virtual_node_named_by_its_peer_attributes():
    connector, sink = make_connector()
    trace = new_id(16)
    by_peer_service = span(
        "web", CLIENT_KIND, trace=trace, attributes={"peer.service": "stripe", "db.system": "x"}
    )
    by_db_system = span("web", CLIENT_KIND, trace=trace, attributes={"db.system": "redis"})
    no_peer = span("web", CLIENT_KIND, trace=trace, ms=7)
    await connector.consume(batch(by_peer_service, by_db_system, no_peer))
    connector.expire(time.monotonic() + LATER)
    out = await flushed(connector, sink)
    assert counts(out) == {
        ("web", "stripe", "virtual_node"): 1,
        ("web", "redis", "virtual_node"): 1,
        ("web", "unknown", "virtual_node"): 1,
    }
    # The missing server side was not measured.
    unknown = by_edge(out, SERVER)["web", "unknown", "virtual_node"]
    assert (unknown.count, unknown.sum) == (1, 0.0)
    assert by_edge(out, CLIENT)["web", "unknown", "virtual_node"].sum == pytest.approx(0.007)
    assert points(out, UNPAIRED) == []


async def test_an_expired_root_server_span_is_called_by_the_user_node():
    connector, sink = make_connector()
    root = span("frontend", SERVER_KIND, trace=new_id(16))
    await connector.consume(batch(root))
    connector.expire(time.monotonic() + LATER)
    out = await flushed(connector, sink)
    assert counts(out) == {("user", "frontend", "virtual_node"): 1}


async def test_virtual_node_extra_label():
    connector, sink = make_connector({"virtual_node_extra_label": True})
    trace = new_id(16)
    await connector.consume(batch(span("frontend", SERVER_KIND, trace=trace)))
    await connector.consume(batch(span("web", CLIENT_KIND, trace=new_id(16))))
    connector.expire(time.monotonic() + LATER)
    await connector.consume(batch(*pair("web", "api")))
    out = await flushed(connector, sink)
    labels = {(a["client"], a["server"]): a["virtual_node"] for a, _ in points(out, TOTAL)}
    assert labels == {
        ("user", "frontend"): "client",
        ("web", "unknown"): "server",
        ("web", "api"): "",
    }


async def test_an_expired_server_span_with_a_parent_counts_as_unpaired():
    connector, sink = make_connector({"dimensions": ["region"]})
    orphan = span("api", SERVER_KIND, trace=new_id(16), parent=new_id(8), resource={"region": "eu"})
    await connector.consume(batch(orphan))
    connector.expire(time.monotonic() + LATER)
    out = await flushed(connector, sink)
    assert points(out, TOTAL) == []
    ((unpaired_attrs, unpaired),) = points(out, UNPAIRED)
    assert unpaired_attrs == {
        "client": "",
        "server": "api",
        "connection_type": "",
        "server_region": "eu",
    }
    assert unpaired.as_int == 1
    assert own_metric(connector, "expired_edges") == 1


async def test_without_peer_attributes_every_expired_edge_counts_as_unpaired():
    connector, sink = make_connector({"virtual_node_peer_attributes": []})
    trace = new_id(16)
    await connector.consume(
        batch(
            span("web", CLIENT_KIND, trace=trace, attributes={"peer.service": "stripe"}),
            span("web", PRODUCER_KIND, trace=trace),
            span("frontend", SERVER_KIND, trace=trace),
        )
    )
    connector.expire(time.monotonic() + LATER)
    out = await flushed(connector, sink)
    assert points(out, TOTAL) == []
    assert counts(out, UNPAIRED) == {
        ("web", "", ""): 1,
        ("web", "", "messaging_system"): 1,
        ("", "frontend", ""): 1,
    }


async def test_a_full_store_drops_spans_once_the_expired_edges_are_out(caplog):
    connector, sink = make_connector({"store": {"max_items": 2}})
    trace = new_id(16)
    start = time.monotonic()
    await connector.consume(batch(span("web", CLIENT_KIND, trace=trace)))
    await connector.consume(batch(span("web", CLIENT_KIND, trace=trace)))
    late = span("api", SERVER_KIND, trace=trace, parent=new_id(8), resource={})
    dropped_client = span("web", CLIENT_KIND, trace=trace)
    await connector.consume(batch(late, dropped_client))
    assert len(connector.store) == 2
    assert own_metric(connector, "dropped_spans") == 2
    # A database request needs no room.
    db = span("web", CLIENT_KIND, trace=trace, attributes={"db.name": "users"})
    await connector.consume(batch(db))
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        out = await flushed(connector, sink)
    assert "spans dropped: the store was full (store::max_items)" in caplog.text
    assert counts(out, DROPPED) == {("", "api", ""): 1, ("web", "", ""): 1}
    assert counts(out) == {("web", "users", "database"): 1}

    # Past the ttl the stored edges expire to make room, and are settled.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(connector_module, "monotonic", lambda: start + LATER)
        await connector.consume(batch(span("web", CLIENT_KIND, trace=trace)))
    assert len(connector.store) == 1
    assert own_metric(connector, "dropped_spans") == 2
    assert counts(await flushed(connector, sink))[("web", "unknown", "virtual_node")] == 2


async def test_spans_without_service_name_or_of_other_kinds_are_not_counted():
    connector, sink = make_connector()
    trace = new_id(16)
    await connector.consume(
        batch(
            span(None, SERVER_KIND, trace=trace, resource={"host.name": "h"}),
            span("", SERVER_KIND, trace=trace),
            span("web", Span.SPAN_KIND_INTERNAL, trace=trace),
            span("web", Span.SPAN_KIND_UNSPECIFIED, trace=trace),
        )
    )
    assert len(connector.store) == 0
    await connector.shutdown()
    assert sink.batches == []


# --- output -----------------------------------------------------------------------------------


async def test_metric_shapes_round_trip_as_valid_otlp():
    connector, sink = make_connector({"latency_histogram_buckets": ["10ms", "1s"]})
    await connector.consume(batch(*pair("web", "api", error=True)))
    await connector.consume(batch(span("api", SERVER_KIND, trace=new_id(16), parent=new_id(8))))
    connector.expire(time.monotonic() + LATER)
    out = await flushed(connector, sink)
    (rm,) = out.resource_metrics
    assert list(rm.resource.attributes) == []
    (sm,) = rm.scope_metrics
    assert sm.scope.name == "traces_service_graph"
    assert [m.name for m in sm.metrics] == [TOTAL, FAILED, SERVER, CLIENT, UNPAIRED]
    cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    for metric in sm.metrics:
        if metric.WhichOneof("data") == "sum":
            assert metric.sum.is_monotonic
            assert metric.sum.aggregation_temporality == cumulative
        else:
            assert metric.unit == "s"
            assert metric.histogram.aggregation_temporality == cumulative
            for point in metric.histogram.data_points:
                assert list(point.explicit_bounds) == [0.01, 1.0]
                assert sum(point.bucket_counts) == point.count == 1
    assert Metrics.FromString(out.SerializeToString()) == out
    assert otlpjson.parse(otlpjson.dumps(out), Metrics) == out
    assert count_metric_points(out) == 5


async def test_metrics_timestamp_offset_moves_point_times_back():
    connector, sink = make_connector({"metrics_timestamp_offset": "10s"})
    await connector.consume(batch(*pair("web", "api")))
    before = time.time_ns()
    point = by_edge(await flushed(connector, sink), TOTAL)["web", "api", ""]
    after = time.time_ns()
    assert before - 10_000_000_000 <= point.time_unix_nano <= after - 10_000_000_000
    assert point.start_time_unix_nano <= point.time_unix_nano


async def test_series_no_request_updated_are_forgotten_and_start_again():
    connector, sink = make_connector()
    await connector.consume(batch(*pair("web", "api")))
    first = by_edge(await flushed(connector, sink), TOTAL)["web", "api", ""]
    assert connector.series.forget_stale(first.start_time_unix_nano) == 0
    assert connector.series.forget_stale(time.time_ns() + 1) == 1
    assert connector.collect(time.time_ns()).resource_metrics == []
    await connector.consume(batch(*pair("web", "api")))
    again = by_edge(await flushed(connector, sink), TOTAL)["web", "api", ""]
    assert again.as_int == 1
    assert again.start_time_unix_nano > first.start_time_unix_nano


async def test_keeps_no_reference_to_the_batch():
    connector, sink = make_connector({"dimensions": ["region"]})
    client, server = pair("web", "api", resource={"region": "eu"})
    incoming = batch(client)
    await connector.consume(incoming)
    incoming.resource_spans[0].resource.attributes[0].value.string_value = "changed"
    incoming.resource_spans[0].scope_spans[0].spans[0].kind = SERVER_KIND
    await connector.consume(batch(server))
    ((point_attrs, _),) = points(await flushed(connector, sink), TOTAL)
    assert (point_attrs["client"], point_attrs["server_region"]) == ("web", "eu")


# --- lifecycle --------------------------------------------------------------------------------


async def test_flushes_every_interval():
    connector, sink = make_connector({"metrics_flush_interval": "30ms"})
    await connector.start(StaticHost())
    await connector.consume(batch(*pair("web", "api")))
    await sink.wait_for(3, timeout=2)  # one edge: a total and two histogram points
    await sink.wait_for(6, timeout=2)  # cumulative: the same again
    await connector.shutdown()


async def test_flush_interval_zero_sends_after_every_batch():
    connector, sink = make_connector({"metrics_flush_interval": "0s"})
    client, server = pair("web", "api")
    await connector.consume(batch(client))
    assert sink.batches == []
    await connector.consume(batch(server))
    (out,) = sink.batches
    assert counts(out) == {("web", "api", ""): 1}


async def test_the_store_expiration_loop_settles_expired_edges():
    connector, sink = make_connector(
        {"store": {"ttl": "20ms"}, "store_expiration_loop": "10ms", "metrics_flush_interval": "0s"}
    )
    await connector.start(StaticHost())
    await connector.consume(batch(span("frontend", SERVER_KIND, trace=new_id(16))))
    await sink.wait_for(3, timeout=2)
    assert counts(sink.batches[-1]) == {("user", "frontend", "virtual_node"): 1}
    assert len(connector.store) == 0
    await connector.shutdown()


async def test_shutdown_settles_waiting_edges_then_flushes_once():
    connector, sink = make_connector({"metrics_flush_interval": "1h"})
    await connector.start(StaticHost())
    await connector.consume(batch(*pair("web", "api")))
    await connector.consume(batch(span("web", CLIENT_KIND, trace=new_id(16))))
    assert sink.batches == []
    await connector.shutdown()
    (out,) = sink.batches
    assert counts(out) == {("web", "api", ""): 1, ("web", "unknown", "virtual_node"): 1}
    await connector.shutdown()
    assert len(sink.batches) == 1


async def test_shutdown_without_start_flushes():
    connector, sink = make_connector()
    await connector.consume(batch(*pair("web", "api")))
    await connector.shutdown()
    assert len(sink.batches) == 1


async def test_next_consumer_error_is_logged_and_counts_are_kept(caplog):
    failing = ErrorConsumer(RetryableError("backend down"))
    connector, _ = make_connector(sink=failing)
    await connector.consume(batch(*pair("web", "api")))
    with caplog.at_level(logging.ERROR, logger="coldtail"):
        await connector.flush()
    assert "service graph metrics not sent" in caplog.text
    await connector.consume(batch(*pair("web", "api")))
    await connector.flush()
    assert [counts(b)["web", "api", ""] for b in failing.batches] == [1, 2]


PIPELINES = """
receivers: {testrecv: }
connectors:
  servicegraph: {metrics_flush_interval: 1h}
exporters: {testexp/traces: , testexp/metrics: }
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces: {receivers: [testrecv], exporters: [servicegraph, testexp/traces]}
    metrics: {receivers: [servicegraph], exporters: [testexp/metrics]}
"""


async def test_through_the_service():
    recording.reset()
    reg = recording.recording_registry()
    reg.register(factory)
    service = Service(validate(yaml.safe_load(PIPELINES), reg))
    await service.start()
    receiver: Any = recording.INSTANCES[(Kind.RECEIVER, "testrecv")]
    client, server = pair("web", "api")
    await receiver.emit(Signal.TRACES, batch(server))
    await receiver.emit(Signal.TRACES, batch(client))
    await service.shutdown()
    exporters: Any = recording.INSTANCES
    assert len(exporters[(Kind.EXPORTER, "testexp/traces", "traces")].batches) == 2
    (metrics,) = exporters[(Kind.EXPORTER, "testexp/metrics", "metrics")].batches
    assert counts(metrics) == {("web", "api", ""): 1}


# --- a real collector, fed by the OpenTelemetry SDK --------------------------------------------

COLLECTOR_CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
connectors:
  servicegraph:
    store: {{ttl: 200ms}}
    store_expiration_loop: 50ms
    metrics_flush_interval: 100ms
exporters:
  file: {{path: "{out}", flush_interval: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [servicegraph]}}
    metrics: {{receivers: [servicegraph], exporters: [file]}}
"""


def sdk_request(endpoint: str):
    """A user's request to `frontend`, which calls `orders` over HTTP (trace context in the
    headers), which queries its database: each service with its own SDK and OTLP exporter, so
    the two halves of the call arrive in separate requests. Returns the finished spans."""
    finished = InMemorySpanExporter()

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        p.add_span_processor(SimpleSpanProcessor(finished))
        return p

    frontend, orders = provider("frontend"), provider("orders")
    front = frontend.get_tracer("frontend.http")
    back = orders.get_tracer("orders.http")

    def orders_handler(headers: dict[str, str]) -> None:
        incoming = propagate.extract(headers)
        with (
            back.start_as_current_span("POST /orders", context=incoming, kind=SpanKind.SERVER),
            back.start_as_current_span("INSERT orders", kind=SpanKind.CLIENT) as query,
        ):
            query.set_attribute("db.system", "postgresql")
            query.set_attribute("db.name", "orders-db")

    with (
        front.start_as_current_span("GET /checkout", kind=SpanKind.SERVER),
        front.start_as_current_span("POST /orders", kind=SpanKind.CLIENT) as call,
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers, context=set_span_in_context(call))
        orders_handler(headers)
    frontend.shutdown()
    orders.shutdown()
    return {
        (s.name, s.resource.attributes["service.name"]): s for s in finished.get_finished_spans()
    }


def complete_lines(path: Path) -> list[str]:
    """The lines the file exporter has finished writing."""
    if not path.exists():
        return []
    return [line for line in path.read_text().split("\n")[:-1] if line.strip()]


def test_a_collector_turns_sdk_spans_of_two_services_into_service_graph_metrics(tmp_path):
    port = free_port()
    out = tmp_path / "metrics.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(COLLECTOR_CONFIG.format(http=port, out=out))
    collector = CollectorProcess(config)
    expected = {
        ("frontend", "orders", ""),
        ("orders", "orders-db", "database"),
        ("user", "frontend", "virtual_node"),
    }
    with collector:
        spans = sdk_request(f"http://127.0.0.1:{port}/v1/traces")
        flushed_every_edge = False
        deadline = time.monotonic() + 10
        while not flushed_every_edge and time.monotonic() < deadline:
            lines = complete_lines(out)
            flushed_every_edge = (
                bool(lines) and set(counts(otlpjson.parse(lines[-1], Metrics))) == expected
            )
            time.sleep(0.05)
        assert collector.stop() == 0, collector.log
    # The periodic flushes sent them, the user edge once the root span's ttl ran out.
    assert flushed_every_edge, collector.log

    last = read_requests(out)[Signal.METRICS][-1]
    assert counts(last) == dict.fromkeys(expected, 1)
    assert points(last, FAILED) == []

    def seconds(name: str, service: str) -> float:
        s = spans[name, service]
        return (s.end_time - s.start_time) / 1e9

    call = ("frontend", "orders", "")
    assert by_edge(last, CLIENT)[call].sum == pytest.approx(seconds("POST /orders", "frontend"))
    assert by_edge(last, SERVER)[call].sum == pytest.approx(seconds("POST /orders", "orders"))
    database = ("orders", "orders-db", "database")
    assert by_edge(last, SERVER)[database].sum == pytest.approx(seconds("INSERT orders", "orders"))
    user = ("user", "frontend", "virtual_node")
    assert by_edge(last, SERVER)[user].sum == pytest.approx(seconds("GET /checkout", "frontend"))
    assert "shutdown complete" in collector.log
