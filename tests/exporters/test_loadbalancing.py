"""The loadbalancing exporter against real OTLP backends (tests/support/backend.py) on loopback:
routing by trace, service, resource, metric, stream and attributes; consistent hashing; the
static and DNS resolvers; backends leaving, returning and joining mid-stream with every span
delivered exactly once; and coldtail processes end to end."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from collector.core.component import ComponentID, Kind
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import (
    Encoded,
    Logs,
    Metrics,
    Traces,
    count_items,
    get_attr,
    iter_items,
    metric_points,
    set_attr,
    signal_of,
)
from collector.core.signals import Signal
from collector.docs import _nested_model
from collector.exporters import loadbalancing
from collector.exporters.loadbalancing.config import Config, routing_key_for
from collector.exporters.loadbalancing.resolver import StaticResolver, system_lookup
from collector.exporters.loadbalancing.ring import Ring
from collector.exporters.loadbalancing.routing import router
from collector.extensions import bearertokenauth
from tests.exporters import NO_QUEUE, Harness
from tests.support.backend import Backend, self_signed_cert
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port

TESTDATA = yaml.safe_load(
    (Path(__file__).parent / "testdata" / "loadbalancing_config.yaml").read_text()
)
FACTORY = loadbalancing.factory
INSECURE = {"otlp": {"tls": {"insecure": True}}}


class Member(Backend):
    """A backend that can leave as a scaled-down collector does: it stops taking new calls,
    answers those it has, then closes."""

    async def leave(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=2.0)
            self._grpc = None
        await self.stop()


def static(*endpoints: str, **extra) -> dict:
    return {"resolver": {"static": {"hostnames": list(endpoints)}}, "protocol": INSECURE, **extra}


async def started(config: dict, signal: Signal = Signal.TRACES, **attrs) -> Harness:
    harness = Harness(FACTORY, config, signal)
    for name, value in attrs.items():
        setattr(harness.exporter, name, value)
    await harness.exporter.start(StaticHost())
    return harness


@pytest.fixture
async def cluster():
    """Starts `n` backends (Member keyword arguments alike); stops them all at the end."""
    running: list[Member] = []

    async def start(n: int = 1, **kwargs) -> list[Member]:
        for _ in range(n):
            running.append(Member(**kwargs))
            await running[-1].start()
        return running[-n:]

    yield start
    for backend in running:
        await backend.stop()


def sdk_spans(services: Sequence[str], traces: int, spans_per_trace: int) -> list[ReadableSpan]:
    """Spans the OpenTelemetry SDK made: `traces` traces per service, each a server span with
    `spans_per_trace - 1` children."""
    spans: list[ReadableSpan] = []
    for service in services:
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        tracer = provider.get_tracer("shop.handler", "1.0")
        for t in range(traces):
            with tracer.start_as_current_span(f"GET /{service}/{t}", kind=SpanKind.SERVER):
                for step in range(spans_per_trace - 1):
                    with tracer.start_as_current_span(f"step {step}"):
                        pass
        spans.extend(memory.get_finished_spans())
        provider.shutdown()
    return spans


def interleaved(spans: list[ReadableSpan], batches: int) -> list[Traces]:
    """The spans in `batches` requests, round robin: a trace's spans spread over several."""
    return [encode_spans(spans[i::batches]) for i in range(batches)]


def where_spans_are(backends: Sequence[Backend]) -> tuple[Counter, dict[bytes, set[int]]]:
    """How often each span id arrived over all backends, and which backends each trace
    reached."""
    copies: Counter = Counter()
    traces: dict[bytes, set[int]] = {}
    for index, backend in enumerate(backends):
        for batch in backend.accepted(Signal.TRACES):
            for _, _, span in iter_items(batch):
                copies[span.span_id] += 1
                traces.setdefault(span.trace_id, set()).add(index)
    return copies, traces


def trace_id(span: ReadableSpan) -> bytes:
    return span.context.trace_id.to_bytes(16, "big")


def assert_exactly_once(backends: Sequence[Backend], spans: list[ReadableSpan]) -> None:
    copies, _ = where_spans_are(backends)
    sent = {span.context.span_id.to_bytes(8, "big") for span in spans}
    assert set(copies) == sent, f"{len(sent - set(copies))} spans lost"
    assert max(copies.values()) == 1, "a span arrived twice"


def gauge(h: Harness, name: str, **labels: str) -> float:
    value = h.telemetry.registry.get_sample_value(name, {"exporter": "loadbalancing", **labels})
    return value or 0.0


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TESTDATA["valid"]))
def test_valid_configs(name):
    Config.model_validate(TESTDATA["valid"][name])


@pytest.mark.parametrize("case", TESTDATA["invalid"], ids=lambda case: case["name"])
def test_invalid_configs_say_what_is_wrong(case):
    with pytest.raises(ValidationError) as excinfo:
        Config.model_validate(case["config"])
    assert case["error"] in str(excinfo.value)


def test_config_defaults_and_normalized_hostnames():
    cfg = Config.model_validate(TESTDATA["valid"]["static_default_port"])
    assert cfg.resolver.static is not None
    assert cfg.resolver.static.hostnames == ["endpoint-1:4317", "endpoint-2:55678"]
    assert cfg.protocol.otlp.compression == "gzip"
    assert cfg.timeout == 5.0 and cfg.sending_queue.enabled and cfg.retry_on_failure.enabled
    dns = Config.model_validate(TESTDATA["valid"]["dns_port_as_string"]).resolver.dns
    assert dns is not None and (dns.port, dns.interval, dns.timeout) == (55690, 5.0, 1.0)


def test_routing_key_defaults_and_what_each_signal_supports():
    cfg = Config.model_validate({"resolver": {"static": {"hostnames": ["a"]}}})
    assert routing_key_for(cfg, Signal.TRACES) == "traceID"
    assert routing_key_for(cfg, Signal.METRICS) == "service"
    assert routing_key_for(cfg, Signal.LOGS) == "service"
    trace_id = cfg.model_copy(update={"routing_key": "traceID"})
    assert routing_key_for(trace_id, Signal.LOGS) == "traceID"
    with pytest.raises(ValueError, match="routing_key: traceID is not supported for metrics"):
        routing_key_for(trace_id, Signal.METRICS)
    with pytest.raises(ValueError, match="streamID is not supported for traces"):
        routing_key_for(cfg.model_copy(update={"routing_key": "streamID"}), Signal.TRACES)


async def test_an_unsupported_routing_key_fails_the_start_naming_it():
    h = Harness(FACTORY, static("127.0.0.1:1", routing_key="metric"), Signal.TRACES)
    with pytest.raises(ValueError, match="routing_key: metric is not supported for traces"):
        await h.exporter.start(StaticHost())
    await h.exporter.shutdown()


def test_every_config_field_is_documented():
    def check(model, path):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no docstring"
            nested = _nested_model(field.annotation)
            if nested is not None:
                check(nested[0], f"{path}{name}{nested[1]}.")

    check(Config, "")
    assert (FACTORY.type, FACTORY.aliases) == ("loadbalancing", ("load_balancing",))
    assert set(FACTORY.signals) == set(Signal)


# --- the ring ---------------------------------------------------------------------------------

KEYS = [os.urandom(16) for _ in range(20_000)]


def owners(ring: Ring) -> list[str]:
    return [ring.owner(key) for key in KEYS]


def test_a_joining_member_takes_only_its_share_of_the_keys():
    before = owners(Ring(["a:4317", "b:4317", "c:4317"]))
    after = owners(Ring(["a:4317", "b:4317", "c:4317", "d:4317"]))
    moved = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert {new for _, new in moved} == {"d:4317"}  # every moved key went to the newcomer
    assert 0.22 < len(moved) / len(KEYS) < 0.28  # about 1/4 of the keys


def test_a_leaving_member_hands_over_only_its_own_keys():
    before = owners(Ring(["a:4317", "b:4317", "c:4317", "d:4317"]))
    after = owners(Ring(["a:4317", "c:4317", "d:4317"]))
    moved = [old for old, new in zip(before, after, strict=True) if old != new]
    assert set(moved) == {"b:4317"}
    assert len(moved) == before.count("b:4317")


def test_keys_spread_evenly_and_every_collector_agrees():
    ring = Ring([f"10.0.0.{i}:4317" for i in range(5)])
    shares = Counter(owners(ring))
    assert all(abs(count / len(KEYS) - 0.2) < 0.02 for count in shares.values()), shares
    # Another process, with the members listed in another order, routes each key alike.
    same = Ring(reversed(ring.members))
    assert all(same.owner(key) == ring.owner(key) for key in KEYS[:1000])
    with pytest.raises(LookupError):
        Ring().owner(b"key")


# --- routing (the cut of one batch) -------------------------------------------------------------

RING = Ring(["10.0.0.1:4317", "10.0.0.2:4317", "10.0.0.3:4317"])


def cut(batch, key: str, attributes: Sequence[str] = ()) -> dict[str, Any]:
    """`batch` routed over RING: each backend's part, decoded, holding the items it says."""
    parts = router(signal_of(batch), key, attributes)(batch, RING.lookup())
    if len(parts) == 1:
        assert list(parts.values()) == [batch]  # one backend: the batch itself
        return parts
    decoded = {}
    for endpoint, part in parts.items():
        assert isinstance(part, Encoded)
        decoded[endpoint] = part.decode()
        assert count_items(decoded[endpoint]) == part.items
    return decoded


def two_resources_two_scopes(traces: int = 30, spans_per_trace: int = 3) -> Traces:
    """Two resources with two scopes each, the spans of each trace in every scope."""
    batch = Traces()
    trace_ids = [os.urandom(16) for _ in range(traces)]
    for service in ("cart", "payment"):
        rs = batch.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        set_attr(rs.resource.attributes, "service.name", service)
        for scope_name in ("http", "db"):
            ss = rs.scope_spans.add(schema_url="scope-schema")
            ss.scope.name, ss.scope.version = scope_name, "2.0"
            for trace_id in trace_ids:
                for _ in range(spans_per_trace):
                    span = ss.spans.add(trace_id=trace_id, span_id=os.urandom(8), name=scope_name)
                    set_attr(span.attributes, "tenant", "acme" if trace_id[0] % 2 else "globex")
    return batch


def test_trace_routing_keeps_resources_scopes_and_every_span_once():
    batch = two_resources_two_scopes()
    parts = cut(batch, "traceID")
    assert len(parts) == 3
    seen = []
    for endpoint, part in parts.items():
        for rs in part.resource_spans:
            service = get_attr(rs.resource.attributes, "service.name")
            assert rs.schema_url == "https://opentelemetry.io/schemas/1.26.0"
            assert [ss.scope.name for ss in rs.scope_spans] == ["http", "db"]
            for ss in rs.scope_spans:
                assert ss.scope.version == "2.0" and ss.schema_url == "scope-schema"
                for span in ss.spans:
                    assert span.name == ss.scope.name  # still under its own scope
                    assert RING.owner(span.trace_id) == endpoint
                    seen.append((service, span.span_id))
    original = [
        (get_attr(r.attributes, "service.name"), s.span_id) for r, _, s in iter_items(batch)
    ]
    assert sorted(seen) == sorted(original)


def test_a_batch_for_one_backend_is_passed_on_uncopied():
    trace = os.urandom(16)
    batch = make_traces(5, trace_id=trace)
    parts = router(Signal.TRACES, "traceID")(batch, RING.lookup())
    assert list(parts) == [RING.owner(trace)] and parts[RING.owner(trace)] is batch
    assert router(Signal.TRACES, "traceID")(Traces(), RING.lookup()) == {}


def test_service_routing_moves_whole_resources():
    batch = Traces()
    for service in ("cart", "payment", "search", "auth", "cart"):
        batch.MergeFrom(make_traces(4, resource={"service.name": service}))
    parts = cut(batch, "service")
    for endpoint, part in parts.items():
        for rs in part.resource_spans:
            assert RING.owner(get_attr(rs.resource.attributes, "service.name").encode()) == endpoint
            assert len(rs.scope_spans[0].spans) == 4
    assert sum(count_items(p) for p in parts.values()) == 20


def test_attribute_routing_of_traces_keeps_each_trace_whole():
    batch = two_resources_two_scopes()
    parts = cut(batch, "attributes", ["tenant", "span.kind"])
    trace_owner: dict[bytes, str] = {}
    for endpoint, part in parts.items():
        for _, _, span in iter_items(part):
            assert trace_owner.setdefault(span.trace_id, endpoint) == endpoint
            tenant = get_attr(span.attributes, "tenant")
            assert RING.owner(f"tenant={tenant}|span.kind=Unspecified|".encode()) == endpoint
    assert sum(count_items(p) for p in parts.values()) == count_items(batch)


def metrics_of_services(services: Sequence[str] = ("cart", "payment", "search")) -> Metrics:
    batch = Metrics()
    for service in services:
        for name in ("requests", "errors", "latency"):
            batch.MergeFrom(make_metrics(6, resource={"service.name": service}, name=name))
    return batch


def points(batch: Metrics) -> list[tuple[str, str, int]]:
    """(service, metric, point index) of every data point."""
    return sorted(
        (
            get_attr(rm.resource.attributes, "service.name"),
            metric.name,
            get_attr(point.attributes, "test.index"),
        )
        for rm in batch.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric_points(metric)
    )


@pytest.mark.parametrize("key", ["service", "resource", "metric", "streamID"])
def test_metric_routing_keeps_each_series_on_one_backend(key):
    batch = metrics_of_services()
    parts = cut(batch, key)
    assert sorted(p for part in parts.values() for p in points(part)) == points(batch)
    series: dict[tuple, str] = {}
    for endpoint, part in parts.items():
        for service, metric, index in points(part):
            assert series.setdefault((service, metric, index), endpoint) == endpoint
        for rm in part.resource_metrics:
            for metric in rm.scope_metrics[0].metrics:
                assert metric.unit == "1" and metric.sum.is_monotonic  # the metric's own fields
    if key == "streamID":  # points of one metric spread, each point a stream of its own
        assert len(parts) == 3
        parts_per_metric = Counter(
            (s, m) for part in parts.values() for s, m in {(s, m) for s, m, _ in points(part)}
        )
        assert any(n > 1 for n in parts_per_metric.values())
    if key == "metric":
        for endpoint, part in parts.items():
            names = {m.name for rm in part.resource_metrics for m in rm.scope_metrics[0].metrics}
            assert all(RING.owner(name.encode()) == endpoint for name in names)


def test_metric_attribute_routing_looks_at_resource_scope_then_point():
    batch = make_metrics(12, resource={"service.name": "cart", "region": "eu"})
    set_attr(batch.resource_metrics[0].scope_metrics[0].scope.attributes, "team", "core")
    parts = cut(batch, "attributes", ["region", "team", "test.index", "missing"])
    for endpoint, part in parts.items():
        for point in metric_points(part.resource_metrics[0].scope_metrics[0].metrics[0]):
            index = get_attr(point.attributes, "test.index")
            key = f"region=eu|team=core|test.index={index}|missing=|".encode()
            assert RING.owner(key) == endpoint
    assert sum(count_items(p) for p in parts.values()) == 12


def test_log_routing_by_trace_id_and_attributes():
    batch = make_logs(40)
    trace_ids = [os.urandom(16) for _ in range(5)]
    records = batch.resource_logs[0].scope_logs[0].log_records
    for i, record in enumerate(records):
        record.trace_id = trace_ids[i % 5] if i < 30 else b""  # the last ten have no trace
        record.severity_text = "ERROR" if i % 2 else "INFO"
    parts = cut(batch, "traceID")
    for endpoint, part in parts.items():
        for _, _, record in iter_items(part):
            if record.trace_id:
                assert RING.owner(record.trace_id) == endpoint
    assert sum(count_items(p) for p in parts.values()) == 40
    for endpoint, part in cut(batch, "attributes", ["service.name", "log.severity"]).items():
        for _, _, record in iter_items(part):
            key = f"service.name=checkout|log.severity={record.severity_text}|".encode()
            assert RING.owner(key) == endpoint


# --- real backends --------------------------------------------------------------------------


async def test_each_trace_lands_wholly_on_one_backend(cluster):
    backends = await cluster(3)
    spans = sdk_spans(["cart", "payment"], traces=60, spans_per_trace=5)
    h = await started(static(*(b.grpc_endpoint for b in backends)))
    for batch in interleaved(spans, 7):
        await h.exporter.consume(batch)
    await h.exporter.shutdown()
    assert_exactly_once(backends, spans)
    _, traces = where_spans_are(backends)
    assert len(traces) == 120 and all(len(reached) == 1 for reached in traces.values())
    assert all(b.item_count(Signal.TRACES) > 0 for b in backends)  # all three got traces
    ring = Ring(b.grpc_endpoint for b in backends)
    for trace_id, (index,) in traces.items():
        assert ring.owner(trace_id) == backends[index].grpc_endpoint
    assert h.count("sent") == len(spans) and h.count("send_failed") == 0
    for b in backends:
        assert gauge(
            h,
            "otelcol_loadbalancer_backend_outcome_total",
            endpoint=b.grpc_endpoint,
            success="true",
        )
        assert b.requests[0].headers["user-agent"].startswith("coldtail")
    assert gauge(h, "otelcol_loadbalancer_num_backends", resolver="static") == 3
    assert gauge(h, "otelcol_loadbalancer_num_resolutions_total", resolver="static", success="true")


async def test_service_routing_sends_each_service_to_one_backend(cluster):
    backends = await cluster(3)
    services = ["cart", "payment", "search", "auth", "ads", "email"]
    spans = sdk_spans(services, traces=5, spans_per_trace=3)
    h = await started(static(*(b.grpc_endpoint for b in backends), routing_key="service"))
    for batch in interleaved(spans, 4):
        await h.exporter.consume(batch)
    await h.exporter.shutdown()
    assert_exactly_once(backends, spans)
    reached: dict[str, set[int]] = {}
    for index, backend in enumerate(backends):
        for batch in backend.accepted(Signal.TRACES):
            for rs in batch.resource_spans:
                service = get_attr(rs.resource.attributes, "service.name")
                reached.setdefault(service, set()).add(index)
                assert get_attr(rs.resource.attributes, "telemetry.sdk.language") == "python"
    assert set(reached) == set(services)
    assert all(len(indexes) == 1 for indexes in reached.values())


# Enough keys that all landing on one backend of three (chance 3**-9) does not happen.
SERVICES = ["cart", "payment", "search", "auth", "ads", "email", "shipping", "quote", "ui", "db"]


@pytest.mark.parametrize(
    ("signal", "key"),
    [
        (Signal.METRICS, None),
        (Signal.METRICS, "streamID"),
        (Signal.METRICS, "resource"),
        (Signal.LOGS, None),
        (Signal.LOGS, "traceID"),
        (Signal.LOGS, "resource"),
    ],
)
async def test_metrics_and_logs_reach_the_owner_of_their_key(cluster, signal, key):
    backends = await cluster(3)
    extra = {"routing_key": key} if key else {}
    h = await started(static(*(b.grpc_endpoint for b in backends), **extra), signal)
    batches: list[Metrics | Logs]
    if signal is Signal.METRICS:
        batches = [metrics_of_services(SERVICES[i::3]) for i in range(3)]
    else:
        batches = [make_logs(4, resource={"service.name": s}) for s in SERVICES]
        for record in (r for b in batches for _, _, r in iter_items(b)):
            record.trace_id = os.urandom(16)
    for batch in batches:
        await h.exporter.consume(batch)
    await h.exporter.shutdown()
    arrived = sum(b.item_count(signal) for b in backends)
    assert arrived == sum(count_items(batch) for batch in batches)
    ring, route = Ring(b.grpc_endpoint for b in backends), router(signal, key or "service")
    for index, backend in enumerate(backends):
        for batch in backend.accepted(signal):
            # Routed again, what a backend took stays with that backend.
            assert set(route(batch, ring.lookup())) == {backends[index].grpc_endpoint}
    assert sum(1 for b in backends if b.item_count(signal)) >= 2


async def test_a_backend_leaving_mid_stream_loses_nothing_once_the_list_changes(cluster):
    backends = await cluster(3)
    leaving = backends[2]
    spans = sdk_spans(["cart", "payment"], traces=90, spans_per_trace=4)
    batches = interleaved(spans, 30)
    h = await started(static(*(b.grpc_endpoint for b in backends)))
    for batch in batches[:10]:
        await h.exporter.consume(batch)
    await leaving.leave()  # while its share may still be in flight
    for batch in batches[10:20]:
        await h.exporter.consume(batch)  # its share now fails and waits to be routed again
    await asyncio.sleep(0.1)
    queued = sum(count_items(batch) for batch in batches[:20])
    assert sum(b.item_count(Signal.TRACES) for b in backends) < queued  # its share waits
    assert h.exporter.resolver is not None
    h.exporter.resolver.update([backends[0].grpc_endpoint, backends[1].grpc_endpoint])
    for batch in batches[20:]:
        await h.exporter.consume(batch)
    await h.exporter.flush()
    await h.exporter.shutdown()
    assert_exactly_once(backends, spans)
    assert h.count("sent") == len(spans) and h.count("send_failed") == 0
    # The last third went out once the list had changed: each of its traces wholly on its new
    # owner. (A trace that straddled the change may have spans on both sides of it.)
    early = {trace_id(s) for i in range(20) for s in spans[i::30]}
    late = {trace_id(s) for i in range(20, 30) for s in spans[i::30]} - early
    _, traces = where_spans_are(backends)
    ring = Ring([backends[0].grpc_endpoint, backends[1].grpc_endpoint])
    assert late and all(2 not in traces[t] for t in late)
    # Every trace the departed backend never got is wholly on its owner among the others.
    elsewhere = [t for t, reached in traces.items() if 2 not in reached]
    assert all({backends[i].grpc_endpoint for i in traces[t]} == {ring.owner(t)} for t in elsewhere)
    # Among them, traces the departed backend owned: its share, routed again, not dropped.
    old = Ring([b.grpc_endpoint for b in backends])
    assert any(old.owner(t) == leaving.grpc_endpoint for t in elsewhere)
    assert gauge(h, "otelcol_loadbalancer_num_backends", resolver="static") == 2
    assert gauge(h, "otelcol_loadbalancer_num_backend_updates_total", resolver="static") == 2


async def test_a_backend_joining_takes_only_its_share_and_nothing_is_lost(cluster):
    backends = await cluster(3)
    joining = backends[2]
    spans = sdk_spans(["cart"], traces=120, spans_per_trace=3)
    first, second = spans[: len(spans) // 2], spans[len(spans) // 2 :]
    h = await started(static(backends[0].grpc_endpoint, backends[1].grpc_endpoint))
    for batch in interleaved(first, 5):
        await h.exporter.consume(batch)
    assert isinstance(h.exporter.resolver, StaticResolver)
    with pytest.raises(ValueError, match="expected host:port"):
        h.exporter.resolver.update(["::1:4317"])  # refused; the list stays as it was
    h.exporter.resolver.update([b.grpc_endpoint for b in backends])
    for batch in interleaved(second, 5):
        await h.exporter.consume(batch)
    await h.exporter.shutdown()
    assert_exactly_once(backends, spans)
    before = Ring([backends[0].grpc_endpoint, backends[1].grpc_endpoint])
    after = Ring([b.grpc_endpoint for b in backends])
    _, traces = where_spans_are(backends)
    for trace in {trace_id(s) for s in second}:
        owner = after.owner(trace)
        assert owner in (before.owner(trace), joining.grpc_endpoint)  # moved only to it
        assert {backends[i].grpc_endpoint for i in traces[trace]} == {owner}
    assert joining.item_count(Signal.TRACES) > 0


async def test_a_backend_down_on_a_static_list_gets_its_data_when_back(cluster):
    backends = await cluster(2)
    down = backends[1]
    port = down.grpc_port
    spans = sdk_spans(["cart"], traces=40, spans_per_trace=3)
    batches = interleaved(spans, 6)
    h = await started(static(*(b.grpc_endpoint for b in backends)))
    await down.leave()
    for batch in batches:
        await h.exporter.consume(batch)
    await backends[0].wait_for(Signal.TRACES, 1)
    await asyncio.sleep(0.1)  # several retries, to the same (only) owner
    (back,) = await cluster(grpc_port=port)
    await h.exporter.flush()
    await h.exporter.shutdown()
    assert_exactly_once([backends[0], down, back], spans)
    assert back.item_count(Signal.TRACES) > 0
    assert gauge(
        h,
        "otelcol_loadbalancer_backend_outcome_total",
        endpoint=down.grpc_endpoint,
        success="false",
    )


async def test_the_dns_resolver_follows_the_name_and_reroutes_what_failed(cluster, caplog):
    caplog.set_level(logging.INFO, logger="coldtail")
    (first,) = await cluster()
    port = first.grpc_port
    # A second loopback address, so that one port (as DNS gives it) reaches two backends.
    (second,) = await cluster(host="127.0.0.2", grpc_port=port)
    addresses = ["127.0.0.1"]

    async def lookup(hostname: str) -> list[str]:
        assert hostname == "collectors.internal"
        return list(addresses)

    spans = sdk_spans(["cart"], traces=90, spans_per_trace=3)
    batches = interleaved(spans, 9)
    dns = {"hostname": "collectors.internal", "port": port, "interval": "20ms"}
    h = await started({"resolver": {"dns": dns}, "protocol": INSECURE}, dns_lookup=lookup)
    for batch in batches[:3]:
        await h.exporter.consume(batch)
    await h.exporter.flush()
    assert first.item_count(Signal.TRACES) == sum(count_items(b) for b in batches[:3])
    addresses.append("127.0.0.2")
    await wait_until(lambda: gauge(h, "otelcol_loadbalancer_num_backends", resolver="dns") == 2)
    for batch in batches[3:6]:
        await h.exporter.consume(batch)
    await h.exporter.flush()
    assert second.item_count(Signal.TRACES) > 0
    await first.leave()
    for batch in batches[6:]:
        await h.exporter.consume(batch)  # first's share fails until the name drops it
    addresses.remove("127.0.0.1")
    await h.exporter.flush()
    await h.exporter.shutdown()
    assert_exactly_once([first, second], spans)
    assert gauge(h, "otelcol_loadbalancer_num_backends", resolver="dns") == 1
    assert gauge(h, "otelcol_loadbalancer_num_resolutions_total", resolver="dns", success="true")
    assert any("removed 127.0.0.1:" in r.getMessage() for r in caplog.records)
    # What the first backend owned after it left went to the second.
    owned = Ring([first.grpc_endpoint, second.grpc_endpoint])
    _, traces = where_spans_are([first, second])
    late = {trace_id(s) for i in range(6, 9) for s in spans[i::9]}
    assert any(owned.owner(t) == first.grpc_endpoint and traces[t] == {1} for t in late)


async def test_the_dns_resolver_resolves_localhost_with_the_system_resolver():
    assert "127.0.0.1" in await system_lookup("localhost")
    async with Backend() as backend:
        dns = {"hostname": "localhost", "port": backend.grpc_port, "interval": "1h"}
        h = await started({"resolver": {"dns": dns}, "protocol": INSECURE})
        await h.exporter.consume(make_traces(5))
        await h.exporter.shutdown()
        assert backend.item_count(Signal.TRACES) == 5
    assert gauge(h, "otelcol_loadbalancer_num_backends", resolver="dns") == 1


async def test_a_failed_or_slow_resolution_keeps_the_backends(backend, caplog):
    calls = []

    async def lookup(hostname: str) -> list[str]:
        calls.append(hostname)
        if len(calls) == 2:
            raise OSError(-2, "Name or service not known")
        if len(calls) == 3:
            await asyncio.sleep(1)  # beyond the resolver's timeout
        return ["127.0.0.1"]

    dns = {"hostname": "collectors.internal", "port": backend.grpc_port}
    dns |= {"interval": "10ms", "timeout": "50ms"}
    h = await started({"resolver": {"dns": dns}, "protocol": INSECURE}, dns_lookup=lookup)
    await wait_until(lambda: len(calls) >= 4)
    await h.exporter.consume(make_traces(3))
    await h.exporter.shutdown()
    assert backend.item_count(Signal.TRACES) == 3
    failed = {"resolver": "dns", "success": "false"}
    assert gauge(h, "otelcol_loadbalancer_num_resolutions_total", **failed) == 2
    assert gauge(h, "otelcol_loadbalancer_num_backend_updates_total", resolver="dns") == 1
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("keeping the backends found before: " in m and "not known" in m for m in messages)
    assert any("no answer within 50ms" in m for m in messages)


async def test_what_one_backend_refuses_does_not_hold_back_the_others(cluster):
    backends = await cluster(2)
    batch = two_resources_two_scopes(traces=40, spans_per_trace=2)
    ring = Ring(b.grpc_endpoint for b in backends)
    refused = sum(1 for _, _, s in iter_items(batch) if ring.owner(s.trace_id) == ring.members[0])
    refusing = next(b for b in backends if b.grpc_endpoint == ring.members[0])
    refusing.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT, message="bad span")
    h = await started(static(*ring.members, sending_queue=NO_QUEUE))
    with pytest.raises(PermanentError, match="INVALID_ARGUMENT: bad span") as excinfo:
        await h.exporter.consume(batch)
    assert excinfo.value.rejected == refused
    await h.exporter.shutdown()
    assert sum(b.item_count(Signal.TRACES) for b in backends) == count_items(batch) - refused
    assert refusing.attempts(Signal.TRACES) == 1  # permanent: not retried


async def test_without_backends_the_data_is_refused_as_retryable():
    no_retry = {"enabled": False}
    config = static("127.0.0.1:1", sending_queue=NO_QUEUE, retry_on_failure=no_retry)
    h = await started(config)
    assert h.exporter.resolver is not None
    h.exporter.resolver.update([])
    with pytest.raises(RetryableError, match="no backends"):
        await h.exporter.consume(make_traces(2))
    await h.exporter.shutdown()


async def test_a_slow_backend_is_timed_out_and_the_batch_sent_again(backend):
    backend.fail_next(1, grpc_code=grpc.StatusCode.UNAVAILABLE, delay=2.0)
    config = static(backend.grpc_endpoint, timeout="100ms", sending_queue=NO_QUEUE)
    h = await started(config)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await h.exporter.consume(make_traces(4))
    assert loop.time() - began < 1.5  # not held for the slow answer
    await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 2
    assert backend.item_count(Signal.TRACES) == 4


async def test_headers_compression_and_auth_options_reach_each_backend(cluster):
    backends = await cluster(2, grpc_gzip=False)  # gzip refused: compression none is obeyed
    token = bearertokenauth.factory.create(
        make_settings(Kind.EXTENSION, "bearertokenauth"),
        bearertokenauth.Config.model_validate({"token": "s3cret"}),
    )
    host = StaticHost(extensions={ComponentID("bearertokenauth"): token})
    otlp = {"tls": {"insecure": True}, "compression": "none", "headers": {"X-Tenant": "acme"}}
    otlp |= {"auth": {"authenticator": "bearertokenauth"}, "endpoint": "ignored:4317"}
    otlp |= {"retry_on_failure": {"enabled": False}}
    config = {"resolver": {"static": {"hostnames": [b.grpc_endpoint for b in backends]}}}
    h = Harness(FACTORY, {**config, "protocol": {"otlp": otlp}})
    await h.exporter.start(host)
    await h.exporter.consume(two_resources_two_scopes(traces=20, spans_per_trace=1))
    await h.exporter.shutdown()
    assert sum(b.item_count(Signal.TRACES) for b in backends) == 80
    requests = [r for b in backends for r in b.requests]
    assert all(r.headers["x-tenant"] == "acme" for r in requests)
    assert all(r.headers["authorization"] == "Bearer s3cret" for r in requests)


async def test_tls_to_every_backend(cluster, tmp_path):
    cert, key = self_signed_cert(str(tmp_path))
    backends = await cluster(2, tls_cert=cert, tls_key=key)
    resolver = {"static": {"hostnames": [b.grpc_endpoint for b in backends]}}
    otlp = {"tls": {"ca_file": cert, "server_name_override": "localhost"}}
    h = await started({"resolver": resolver, "protocol": {"otlp": otlp}})
    await h.exporter.consume(two_resources_two_scopes(traces=20, spans_per_trace=1))
    await h.exporter.shutdown()
    assert [b.item_count(Signal.TRACES) > 0 for b in backends] == [True, True]
    assert sum(b.item_count(Signal.TRACES) for b in backends) == 80


# --- end to end -------------------------------------------------------------------------------

AGENT = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  batch: {{timeout: 50ms}}
exporters:
  loadbalancing:
    protocol: {{otlp: {{timeout: 1s, tls: {{insecure: true}}}}}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}
    resolver: {{static: {{hostnames: ["127.0.0.1:{one}", "127.0.0.1:{two}"]}}}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [loadbalancing]}}
"""

BACKEND = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
"""


@pytest.mark.slow
def test_an_agent_balances_traces_over_two_coldtail_backends(tmp_path):
    agent_port, ports = free_port(), [free_port(), free_port()]
    outs = [tmp_path / f"backend-{i}.jsonl" for i in range(2)]
    for i, (port, out) in enumerate(zip(ports, outs, strict=True)):
        (tmp_path / f"backend-{i}.yaml").write_text(BACKEND.format(port=port, out=out))
    agent_cfg = tmp_path / "agent.yaml"
    agent_cfg.write_text(AGENT.format(port=agent_port, one=ports[0], two=ports[1]))
    spans = sdk_spans(["cart", "payment"], traces=50, spans_per_trace=4)
    client = OTLPSpanExporter(endpoint=f"127.0.0.1:{agent_port}", insecure=True)
    with (
        CollectorProcess(tmp_path / "backend-0.yaml") as one,
        CollectorProcess(tmp_path / "backend-1.yaml") as two,
        CollectorProcess(agent_cfg) as agent,
    ):
        for i in range(5):
            assert client.export(spans[i::5]) == SpanExportResult.SUCCESS
        assert agent.stop() == 0  # drains the agent's queue into the backends
        assert one.stop() == 0 and two.stop() == 0
    per_backend = [read_requests(out)[Signal.TRACES] for out in outs]
    traces: dict[bytes, set[int]] = {}
    copies: Counter = Counter()
    for index, requests in enumerate(per_backend):
        for batch in requests:
            for _, _, span in iter_items(batch):
                traces.setdefault(span.trace_id, set()).add(index)
                copies[span.span_id] += 1
    assert len(copies) == len(spans) and set(copies.values()) == {1}
    assert len(traces) == 100 and all(len(reached) == 1 for reached in traces.values())
    assert all(requests for requests in per_backend)  # both backends got traces
