"""One generic test over the registry: create, start, consume, shutdown for every component
type and every signal it supports."""

from pathlib import Path

import pytest
import yaml
from aiohttp import web

from collector.core.component import Factory, Kind
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.registry import registry
from emulator.ecs_metadata import EcsMetadataServer, EcsTask
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.kafka_cluster import MockCluster
from tests.support.nats_cluster import NatsServer
from tests.support.sinks import SinkConsumer

SAMPLES = yaml.safe_load(
    (Path(__file__).parent / "testdata" / "component_samples.yaml").read_text()
)
BATCHES = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}
METRIC_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}


def sample_config(factory: Factory, **fill: str):
    raw = SAMPLES.get(factory.kind.section, {}).get(factory.type, {})
    text = yaml.safe_dump(raw)
    for key, value in fill.items():
        text = text.replace("{" + key + "}", value)
    return factory.config.model_validate(yaml.safe_load(text))


def all_factories():
    return [pytest.param(f, id=f"{f.kind.value}-{f.type}") for f in registry().factories()]


@pytest.fixture
async def remote_write():
    """A Prometheus remote-write endpoint that accepts every request, as a receiver does."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/v1/write", accept)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/write"
    await runner.cleanup()


@pytest.fixture
async def ecs_task(monkeypatch):
    """The ECS task metadata endpoint, for components that read it."""
    async with EcsMetadataServer(EcsTask()) as server:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", server.uri)
        yield


@pytest.fixture
def nats(request):
    """A NATS JetStream server's URL, started only for the nats components' samples."""
    if request.node.callspec.params["factory"].type != "nats":
        yield "nats://127.0.0.1:1"
        return
    with NatsServer() as server:
        yield server.url


@pytest.fixture
def kafka(request):
    """librdkafka's mock Kafka cluster's bootstrap address, only for the kafka samples."""
    if request.node.callspec.params["factory"].type != "kafka":
        yield "127.0.0.1:1"
        return
    with MockCluster() as cluster:
        yield cluster.bootstrap


@pytest.mark.parametrize("factory", all_factories())
async def test_create_start_consume_shutdown(
    factory: Factory,
    tmp_path,
    backend,
    remote_write,
    moto_server,
    aws_credentials,
    ecs_task,
    nats,
    kafka,
):
    config = sample_config(
        factory,
        tmp=str(tmp_path),
        grpc=backend.grpc_endpoint,
        http=backend.http_endpoint,
        remote_write=remote_write,
        xray=moto_server,
        nats=nats,
        kafka=kafka,
    )
    settings = make_settings(factory.kind, factory.type)
    host = StaticHost()
    if factory.kind is Kind.EXTENSION:
        component = factory.create(settings, config)
        await component.start(host)
        await component.shutdown()
        return
    if factory.kind is Kind.RECEIVER:
        sinks = {s: SinkConsumer() for s in factory.signals}
        component = factory.create(settings, config, sinks)
        await component.start(host)
        await component.shutdown()
        return
    for signal in factory.signals:
        batch = BATCHES[signal](3)
        items = count_items(batch)
        if factory.kind is Kind.PROCESSOR:
            sink = SinkConsumer()
            component = factory.create(settings, config, signal, sink)
        elif factory.kind is Kind.CONNECTOR:
            sinks = {out: SinkConsumer() for out in factory.signals[signal]}
            component = factory.create(settings, config, signal, sinks)
        else:
            component = factory.create(settings, config, signal)
        await component.start(host)
        await component.consume(batch)
        await component.shutdown()
        await component.shutdown()  # idempotent
        if factory.kind is Kind.PROCESSOR:
            assert sink.item_count == items
        elif factory.kind is Kind.CONNECTOR:
            assert all(s.item_count > 0 for s in sinks.values())
        else:
            sent = settings.telemetry.registry.get_sample_value(
                f"otelcol_exporter_sent_{METRIC_NAMES[signal]}_total", {"exporter": factory.type}
            )
            assert sent == items


@pytest.mark.parametrize("factory", all_factories())
async def test_shutdown_without_start_is_safe(factory: Factory, tmp_path):
    config = sample_config(
        factory,
        tmp=str(tmp_path),
        grpc="127.0.0.1:1",
        http="http://127.0.0.1:1",
        remote_write="http://127.0.0.1:1/api/v1/write",
        nats="nats://127.0.0.1:1",
        kafka="127.0.0.1:1",
    )
    settings = make_settings(factory.kind, factory.type)
    signal = next(iter(factory.signals), Signal.TRACES)
    if factory.kind is Kind.EXTENSION:
        component = factory.create(settings, config)
    elif factory.kind is Kind.RECEIVER:
        component = factory.create(settings, config, {signal: SinkConsumer()})
    elif factory.kind is Kind.PROCESSOR:
        component = factory.create(settings, config, signal, SinkConsumer())
    elif factory.kind is Kind.CONNECTOR:
        component = factory.create(settings, config, signal, {Signal.METRICS: SinkConsumer()})
    else:
        component = factory.create(settings, config, signal)
    await component.shutdown()
    await component.shutdown()


def test_every_config_field_is_documented():
    from collector.docs import _nested_model

    def check(model, path):
        for name, field in model.model_fields.items():
            assert field.description, f"{path}{name} has no docstring"
            nested = _nested_model(field.annotation)
            if nested is not None:
                check(nested[0], f"{path}{name}{nested[1]}.")

    for factory in registry().factories():
        check(factory.config, f"{factory.kind.section}::{factory.type}::")


def test_lazy_registry_names_match_the_factories_their_modules_define():
    reg = registry()
    for kind in Kind:
        names = reg.types(kind)
        factories = reg.factories(kind)
        assert sorted(n for f in factories for n in (f.type, *f.aliases)) == names
        for factory in factories:
            for name in (factory.type, *factory.aliases):
                assert reg.get(kind, name) is factory
