"""awsecscontainermetrics: the emulator's task metadata endpoint v4 (a real HTTP server on
127.0.0.1 with ECS's documents), read every interval into the task's and containers' metrics,
with the contrib receiver's names, units and formulas."""

import asyncio
import logging

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

import collector.receivers.awsecscontainermetrics as ecs_metrics
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import any_value_to_python
from collector.core.signals import Signal
from collector.receivers.awsecscontainermetrics import (
    Config,
    collect,
    docker_time_ns,
    factory,
    parse_image,
)
from emulator.ecs_metadata import EcsMetadataServer, EcsTask, Failure
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

MIB = 1024 * 1024
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE

# The contrib receiver's metrics (names without the ecs.task. / container. prefix), units and
# data types: "sum" is a cumulative int sum, "int" an int gauge, "double" a double gauge.
EXPECTED = {
    "memory.usage": ("Bytes", "int"),
    "memory.usage.max": ("Bytes", "int"),
    "memory.usage.limit": ("Bytes", "int"),
    "memory.utilized": ("MiB", "int"),
    "memory.reserved": ("MiB", "int"),
    "cpu.usage.total": ("Nanoseconds", "sum"),
    "cpu.usage.kernelmode": ("Nanoseconds", "sum"),
    "cpu.usage.usermode": ("Nanoseconds", "sum"),
    "cpu.usage.system": ("Nanoseconds", "sum"),
    "cpu.usage.vcpu": ("vCPU", "double"),
    "cpu.cores": ("Count", "int"),
    "cpu.onlines": ("Count", "int"),
    "cpu.reserved": ("None", "double"),
    "cpu.utilized": ("None", "double"),
    "network.rate.rx": ("Bytes/Second", "double"),
    "network.rate.tx": ("Bytes/Second", "double"),
    "network.io.usage.rx_bytes": ("Bytes", "sum"),
    "network.io.usage.rx_packets": ("Count", "sum"),
    "network.io.usage.rx_errors": ("Count", "sum"),
    "network.io.usage.rx_dropped": ("Count", "sum"),
    "network.io.usage.tx_bytes": ("Bytes", "sum"),
    "network.io.usage.tx_packets": ("Count", "sum"),
    "network.io.usage.tx_errors": ("Count", "sum"),
    "network.io.usage.tx_dropped": ("Count", "sum"),
    "storage.read_bytes": ("Bytes", "sum"),
    "storage.write_bytes": ("Bytes", "sum"),
}
TASK_ONLY = {
    "ephemeral_storage.utilized": ("MiB", "int"),
    "ephemeral_storage.reserved": ("MiB", "int"),
}


async def started(monkeypatch, uri: str | None, interval: str = "50ms", sink=None):
    if uri is None:
        monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    else:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", uri)
    sink = sink or SinkConsumer()
    settings = make_settings("receiver", "awsecscontainermetrics")
    receiver = factory.create(
        settings,
        Config.model_validate({"collection_interval": interval}),
        {Signal.METRICS: sink},
    )
    await receiver.start(StaticHost())
    return receiver, sink, settings


def points_counted(settings, outcome: str) -> float:
    return (
        settings.telemetry.registry.get_sample_value(
            f"otelcol_receiver_{outcome}_metric_points_total",
            {"receiver": "awsecscontainermetrics", "transport": "http"},
        )
        or 0.0
    )


def shape(metric) -> str:
    kind = metric.WhichOneof("data")
    if kind == "sum":
        assert metric.sum.aggregation_temporality == CUMULATIVE and metric.sum.is_monotonic
        [point] = metric.sum.data_points
        assert point.WhichOneof("value") == "as_int"
        return "sum"
    assert kind == "gauge"
    [point] = metric.gauge.data_points
    return "int" if point.WhichOneof("value") == "as_int" else "double"


def by_resource(batch) -> dict[str, tuple[dict, dict]]:
    """container.name (or "task") -> (resource attributes, metric name -> (unit, shape, value))."""
    out = {}
    for rm in batch.resource_metrics:
        resource = {kv.key: any_value_to_python(kv.value) for kv in rm.resource.attributes}
        metrics = {}
        for metric in rm.scope_metrics[0].metrics:
            points = getattr(metric, metric.WhichOneof("data")).data_points
            value = getattr(points[0], points[0].WhichOneof("value"))
            assert points[0].time_unix_nano > 0
            metrics[metric.name] = (metric.unit, shape(metric), value)
        out[resource.get("container.name", "task")] = (resource, metrics)
    return out


def values(metrics: dict, prefix: str) -> dict:
    return {name.removeprefix(prefix): value for name, (_, _, value) in metrics.items()}


def expected_container(stats: dict, limits: dict) -> dict:
    """The container.* values the contrib receiver computes from one container's documents."""
    cpu, pre = stats["cpu_stats"], stats["precpu_stats"]
    memory = stats["memory_stats"]
    # The emulator's reads are 1 s apart: CPU ns used in that second / 1e9 ns = vCPUs used.
    vcpu = (cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]) / 1e9
    [network] = stats["networks"].values()
    io = {e["op"]: e["value"] for e in stats["blkio_stats"]["io_service_bytes_recursive"]}
    return {
        "memory.usage": memory["usage"],
        "memory.usage.max": memory["max_usage"],
        "memory.usage.limit": memory["limit"],
        "memory.utilized": (memory["usage"] - memory["stats"]["cache"]) // MIB,
        "memory.reserved": limits["Memory"],
        "cpu.usage.total": cpu["cpu_usage"]["total_usage"],
        "cpu.usage.kernelmode": cpu["cpu_usage"]["usage_in_kernelmode"],
        "cpu.usage.usermode": cpu["cpu_usage"]["usage_in_usermode"],
        "cpu.usage.system": cpu["system_cpu_usage"],
        "cpu.usage.vcpu": vcpu,
        "cpu.cores": len(cpu["cpu_usage"]["percpu_usage"]),
        "cpu.onlines": cpu["online_cpus"],
        "cpu.reserved": limits["CPU"],
        "cpu.utilized": vcpu * 100 / limits["CPU"],
        "network.rate.rx": stats["network_rate_stats"]["rx_bytes_per_sec"],
        "network.rate.tx": stats["network_rate_stats"]["tx_bytes_per_sec"],
        **{f"network.io.usage.{key}": value for key, value in network.items()},
        "storage.read_bytes": io["Read"],
        "storage.write_bytes": io["Write"],
    }


async def test_the_task_and_each_container_get_their_metrics(monkeypatch):
    task = EcsTask(family="checkout", service_name="checkout-api", stopped_name="migrate")
    async with EcsMetadataServer(task) as server:
        receiver, sink, settings = await started(monkeypatch, server.uri)
        try:
            await sink.wait_for(1, timeout=5)
        finally:
            await receiver.shutdown()
        assert {"/task", "/task/stats"} <= set(server.requests)
    document, stats = task.task_document(), task.task_stats_document()
    app_doc, sidecar_doc, migrate_doc = document["Containers"]
    found = by_resource(sink.batches[0])
    assert set(found) == {"app", "coldtail", "migrate", "task"}

    # Names, units and data types: every container metric, and the task's with ephemeral storage.
    for name in ("app", "coldtail"):
        _, metrics = found[name]
        assert {n: (u, s) for n, (u, s, _) in metrics.items()} == {
            "container." + key: unit_shape for key, unit_shape in EXPECTED.items()
        }
    _, task_metrics = found["task"]
    assert {n: (u, s) for n, (u, s, _) in task_metrics.items()} == {
        "ecs.task." + key: unit_shape for key, unit_shape in {**EXPECTED, **TASK_ONLY}.items()
    }

    # Values from the emulator's documents, as the contrib receiver computes them.
    app = values(found["app"][1], "container.")
    sidecar = values(found["coldtail"][1], "container.")
    assert app == pytest.approx(expected_container(stats[task.container_id], app_doc["Limits"]))
    assert sidecar == pytest.approx(
        expected_container(stats[sidecar_doc["DockerId"]], sidecar_doc["Limits"])
    )
    # The same, spelled out for the app container: 0.5 s of CPU in the 1 s between the reads
    # is 0.5 vCPU, 50 % of one vCPU over its 128 CPU units; 100 MiB used, 8 MiB of it cache.
    assert app["cpu.usage.vcpu"] == 0.5
    assert app["cpu.utilized"] == pytest.approx(50 / 128)
    assert app["memory.utilized"] == 92
    assert app["network.rate.rx"] == 3000.0
    assert app["storage.read_bytes"] == 2 * 8_192_000

    total = values(task_metrics, "ecs.task.")
    summed = {key: app[key] + sidecar[key] for key in EXPECTED if key != "cpu.utilized"}
    assert total == pytest.approx(
        {
            **summed,
            # The task's limits: 1024 MiB, and 0.5 vCPU as 512 CPU units.
            "memory.reserved": 1024,
            "cpu.reserved": 512.0,
            # The task's CPU in CPU units: 0.75 vCPU * 1024.
            "cpu.utilized": 0.75 * 1024,
            "ephemeral_storage.utilized": document["EphemeralStorageMetrics"]["Utilized"],
            "ephemeral_storage.reserved": document["EphemeralStorageMetrics"]["Reserved"],
        }
    )
    assert total["memory.utilized"] == 92 + 46

    # A stopped container has no stats (null): only how long it ran.
    migrate_resource, migrate = found["migrate"]
    assert migrate == {"container.duration": ("Seconds", "double", 30.0)}
    assert migrate_resource["aws.ecs.container.exit_code"] == 0
    assert migrate_resource["aws.ecs.container.know_status"] == "STOPPED"
    assert migrate_resource["aws.ecs.container.finished_at"] == migrate_doc["FinishedAt"]
    assert migrate_resource["container.image.tag"] == "latest"  # the image names no tag

    # Resource attributes.
    task_resource, _ = found["task"]
    assert task_resource == {
        "aws.ecs.cluster.name": task.cluster,
        "aws.ecs.task.arn": task.task_arn,
        "aws.ecs.task.id": task.task_id,
        "aws.ecs.task.family": "checkout",
        "aws.ecs.task.revision": task.revision,
        "aws.ecs.task.version": task.revision,
        "aws.ecs.service.name": "checkout-api",
        "aws.ecs.task.known_status": "RUNNING",
        "aws.ecs.task.pull_started_at": document["PullStartedAt"],
        "aws.ecs.task.pull_stopped_at": document["PullStoppedAt"],
        "aws.ecs.task.launch_type": "FARGATE",
        "aws.ecs.launchtype": "fargate",
        "cloud.availability_zone": task.availability_zone,
        "cloud.region": task.region,
        "cloud.account.id": task.account,
    }
    app_resource, _ = found["app"]
    assert app_resource == {
        **task_resource,
        "container.name": "app",
        "container.id": task.container_id,
        "aws.ecs.docker.name": "app",
        "container.image.name": "111122223333.dkr.ecr.us-west-2.amazonaws.com/checkout",
        "container.image.tag": "1.4.2",
        "aws.ecs.container.image.id": app_doc["ImageID"],
        "aws.ecs.container.created_at": app_doc["CreatedAt"],
        "aws.ecs.container.started_at": app_doc["StartedAt"],
        "aws.ecs.container.know_status": "RUNNING",
    }
    assert found["coldtail"][0]["container.id"] == sidecar_doc["DockerId"]

    points = sum(len(metrics) for _, metrics in found.values())
    assert points == 2 * 26 + 1 + 28
    assert points_counted(settings, "accepted") >= points
    assert points_counted(settings, "refused") == 0


async def test_the_first_read_waits_one_interval(monkeypatch):
    async with EcsMetadataServer(EcsTask()) as server:
        receiver, _, _ = await started(monkeypatch, server.uri, interval="1s")
        try:
            await asyncio.sleep(0.1)
        finally:
            await receiver.shutdown()
    assert server.requests == []


async def test_it_reads_every_interval_until_shut_down(monkeypatch):
    async with EcsMetadataServer(EcsTask()) as server:
        receiver, sink, _ = await started(monkeypatch, server.uri, interval="20ms")
        try:
            async with asyncio.timeout(5):
                while len(sink.batches) < 3:
                    await asyncio.sleep(0.01)
        finally:
            await receiver.shutdown()
        reads = server.requests.count("/task/stats")
        await asyncio.sleep(0.1)
        assert server.requests.count("/task/stats") == reads  # stopped reading


@pytest.mark.parametrize(
    ("failure", "path", "error"),
    [
        (Failure.ERROR, "/task/stats", "GET /task/stats: HTTP 500"),
        (Failure.GARBAGE, "/task/stats", "GET /task/stats: not JSON"),
        (Failure.GARBAGE, "/task", "GET /task: not JSON"),
        (Failure.CLOSE, "/task", "ServerDisconnectedError"),
        (Failure.HANG, "/task/stats", "TimeoutError"),
    ],
)
async def test_a_failed_read_is_one_line_and_the_next_interval_reads_again(
    monkeypatch, caplog, failure, path, error
):
    def lines():
        return [r for r in caplog.records if "ECS task stats not read" in r.getMessage()]

    monkeypatch.setattr(ecs_metrics, "_TIMEOUT_S", 0.2)
    async with EcsMetadataServer(EcsTask()) as server:
        server.fail(failure, path)
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            receiver, sink, _ = await started(monkeypatch, server.uri, interval="50ms")
            try:
                async with asyncio.timeout(5):
                    while len(lines()) < 2:  # two reads failed, the receiver still reads
                        await asyncio.sleep(0.01)
                server.fail(None, path)
                await sink.wait_for(1, timeout=5)
            finally:
                await receiver.shutdown()
    failed = lines()
    assert len(sink.batches) >= 1
    # One line per failed read (aiohttp may resend a GET once on a dropped connection).
    assert len(failed) <= server.requests.count(path) - 1
    assert all(error in str(r.__dict__.get("kv", {}).get("error")) for r in failed)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_document_that_is_not_an_object_is_skipped(monkeypatch, caplog):
    task = EcsTask()
    monkeypatch.setattr(task, "task_stats_document", lambda: ["not", "a", "map"])
    async with EcsMetadataServer(task) as server:
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            receiver, sink, _ = await started(monkeypatch, server.uri)
            try:
                async with asyncio.timeout(5):
                    while server.requests.count("/task/stats") < 2:
                        await asyncio.sleep(0.01)
            finally:
                await receiver.shutdown()
    assert sink.batches == []
    errors = [r.__dict__.get("kv", {}).get("error") for r in caplog.records]
    assert errors and set(errors) == {"GET /task/stats: not a JSON object"}


@pytest.mark.parametrize(
    "error", [RetryableError("queue full"), PermanentError("bad"), RuntimeError("boom")]
)
async def test_a_refusing_pipeline_is_counted_and_reading_goes_on(monkeypatch, error):
    sink = ErrorConsumer(error)
    async with EcsMetadataServer(EcsTask()) as server:
        receiver, _, settings = await started(monkeypatch, server.uri, interval="20ms", sink=sink)
        try:
            async with asyncio.timeout(5):
                while len(sink.batches) < 2:
                    await asyncio.sleep(0.01)
        finally:
            await receiver.shutdown()
    assert points_counted(settings, "refused") >= 2 * (2 * 26 + 28)
    assert points_counted(settings, "accepted") == 0


async def test_outside_ecs_the_receiver_does_not_start(monkeypatch):
    with pytest.raises(RuntimeError, match="ECS_CONTAINER_METADATA_URI_V4 is not set"):
        await started(monkeypatch, None)


async def test_shutdown_before_start_and_twice_is_safe():
    receiver = factory.create(
        make_settings("receiver", "awsecscontainermetrics"), Config(), {Signal.METRICS: None}
    )
    await receiver.shutdown()
    await receiver.shutdown()


# --- the computation on documents off the usual path -------------------------------------------


def test_without_limits_cpu_is_a_percentage_of_one_vcpu_and_the_task_has_no_reservation():
    task = {
        "TaskARN": "arn:aws-cn:ecs:cn-north-1:111122223333:task/0123abcd",  # old ARN form
        "Cluster": "default",
        "Containers": [{"DockerId": "a", "Name": "a"}, {"DockerId": "b", "Name": "b"}],
    }
    stats = {
        "a": {
            "id": "a",
            "read": "2024-05-14T09:30:00.250000001Z",
            "preread": "2024-05-14T09:30:00.000000001Z",
            "cpu_stats": {"cpu_usage": {"total_usage": 1_100_000_000}},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000_000}},
        },
        "b": {"id": "b", "memory_stats": {"usage": 3 * MIB}},  # no cpu_stats, no memory stats
    }
    found = by_resource(collect(task, stats, 1))
    a = values(found["a"][1], "container.")
    assert a["cpu.usage.vcpu"] == pytest.approx(0.4)  # 0.1 s of CPU in 0.25 s
    assert a["cpu.utilized"] == pytest.approx(40.0)  # no CPU limit: percent of one vCPU
    assert a["cpu.reserved"] == 0.0 and a["memory.reserved"] == 0
    b = values(found["b"][1], "container.")
    assert b["memory.usage"] == 3 * MIB
    assert b["memory.utilized"] == 0  # without memory_stats.stats, as upstream
    assert b["cpu.usage.total"] == 0
    resource, task_metrics = found["task"]
    total = values(task_metrics, "ecs.task.")
    assert total["cpu.reserved"] == 0.0 and total["cpu.utilized"] == 0.0
    assert total["cpu.usage.vcpu"] == pytest.approx(0.4)
    assert "ecs.task.ephemeral_storage.utilized" not in task_metrics  # not on the document
    assert resource["aws.ecs.task.id"] == "0123abcd"
    assert resource["cloud.region"] == "cn-north-1"
    assert resource["aws.ecs.cluster.name"] == "default"
    assert "aws.ecs.launchtype" not in resource


def test_container_limits_make_the_task_reservation_without_task_limits():
    task = {
        "Containers": [
            {"DockerId": "a", "Name": "a", "Limits": {"CPU": 256, "Memory": 300}},
            {"DockerId": "b", "Name": "b", "Limits": {"CPU": 512, "Memory": 200}},
            {"DockerId": "c", "Name": "c", "Limits": {"CPU": 1024, "Memory": 500}},  # no stats
        ]
    }
    stats = {"a": {"id": "a"}, "b": {"id": "b"}, "c": None}
    found = by_resource(collect(task, stats, 1))
    assert set(found) == {"a", "b", "task"}  # c has neither stats nor a finish time
    total = values(found["task"][1], "ecs.task.")
    assert total["cpu.reserved"] == 768.0 and total["memory.reserved"] == 500


@pytest.mark.parametrize(
    "junk",
    [
        {"id": "a", "cpu_stats": [], "memory_stats": "x", "networks": {"eth0": None}},
        {"id": "a", "memory_stats": {"usage": "12", "stats": {"cache": -5}}},
        {"id": "a", "memory_stats": {"usage": 1, "stats": {"cache": 5 * MIB}}},
        {"id": "a", "blkio_stats": {"io_service_bytes_recursive": [None, {"op": "Read"}]}},
        {"id": "a", "read": "yesterday", "cpu_stats": {"cpu_usage": {}}, "precpu_stats": {}},
        {"id": "a", "network_rate_stats": {"rx_bytes_per_sec": float("nan")}},
        {
            "id": "a",
            "cpu_stats": {"cpu_usage": {"total_usage": 10**30}},
            "precpu_stats": {"cpu_usage": {}},
        },
    ],
)
def test_odd_stats_give_zeros_rather_than_errors(junk):
    task = {"TaskARN": 5, "Containers": [{"DockerId": "a", "Name": "a", "Limits": "x"}, 7]}
    found = by_resource(collect(task, {"a": junk}, 1))
    a = values(found["a"][1], "container.")
    assert set(a) == set(EXPECTED)
    assert all(value >= 0 for value in a.values())
    assert a["memory.utilized"] == 0 and a["storage.read_bytes"] == 0


def test_docker_times_keep_their_nanoseconds():
    assert docker_time_ns("1970-01-01T00:00:01.000000001Z") == 1_000_000_001
    assert docker_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert docker_time_ns("1970-01-01T00:00:02Z") == 2_000_000_000
    assert docker_time_ns("not a time") is None and docker_time_ns(None) is None


@pytest.mark.parametrize(
    ("image", "repository", "tag"),
    [
        ("nginx", "nginx", "latest"),
        ("public.ecr.aws/nginx/nginx:1.25", "public.ecr.aws/nginx/nginx", "1.25"),
        (
            "registry.example.com:5000/billing/api:2.0",
            "registry.example.com:5000/billing/api",
            "2.0",
        ),
        ("localhost:5000/app", "localhost:5000/app", "latest"),
        ("app:v1@sha256:" + "a" * 64, "app", "v1"),
        ("app@sha256:" + "b" * 64, "app", "latest"),
        ("Upper/Case:1", "", ""),
        ("", "", ""),
    ],
)
def test_image_references_split_into_repository_and_tag(image, repository, tag):
    assert parse_image(image) == (repository, tag)
