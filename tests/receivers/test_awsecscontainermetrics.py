"""awsecscontainermetrics: the task metadata endpoint v4 served by the emulator (a real HTTP
server with ECS's documents), read every interval into the task's and containers' metrics."""

import asyncio
import logging

import pytest

from collector.core.pdata import any_value_to_python
from collector.core.signals import Signal
from collector.receivers.awsecscontainermetrics import Config, factory
from emulator.ecs_metadata import EcsMetadataServer, EcsTask, Failure
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer


async def started(monkeypatch, uri: str | None, interval: str = "50ms"):
    if uri is None:
        monkeypatch.delenv("ECS_CONTAINER_METADATA_URI_V4", raising=False)
    else:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", uri)
    sink = SinkConsumer()
    receiver = factory.create(
        make_settings("receiver", "awsecscontainermetrics"),
        Config.model_validate({"collection_interval": interval}),
        {Signal.METRICS: sink},
    )
    await receiver.start(StaticHost())
    return receiver, sink


def by_resource(batch) -> dict[str, tuple[dict, dict]]:
    """container.name (or "task") -> (resource attributes, metric name -> (unit, value))."""
    out = {}
    for rm in batch.resource_metrics:
        resource = {kv.key: any_value_to_python(kv.value) for kv in rm.resource.attributes}
        metrics = {}
        for metric in rm.scope_metrics[0].metrics:
            [point] = metric.gauge.data_points
            value = point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
            metrics[metric.name] = (metric.unit, value)
        out[resource.get("container.name", "task")] = (resource, metrics)
    return out


async def test_the_task_and_each_container_get_their_metrics(monkeypatch):
    task = EcsTask(family="checkout", service_name="checkout-api")
    async with EcsMetadataServer(task) as server:
        receiver, sink = await started(monkeypatch, server.uri)
        try:
            await sink.wait_for(1, timeout=5)
        finally:
            await receiver.shutdown()
    found = by_resource(sink.batches[0])
    assert set(found) == {"app", "coldtail", "task"}
    resource, app = found["app"]
    assert resource["aws.ecs.task.family"] == "checkout"
    assert resource["aws.ecs.service.name"] == "checkout-api"
    assert resource["aws.ecs.cluster.name"] == task.cluster
    assert resource["aws.ecs.task.id"] == task.task_id
    assert resource["cloud.region"] == task.region and resource["cloud.account.id"] == task.account
    assert resource["container.id"] == task.container_id
    assert resource["container.image.tag"] == "1.4.2"
    # The emulator's app container used 0.5 s of CPU in the 1 s between preread and read.
    assert app["container.cpu.usage.vcpu"] == ("vCPU", 0.5)
    assert app["container.cpu.utilized"] == ("Percent", 50)
    assert app["container.memory.utilized"] == (
        "Megabytes",
        (2 * 52_428_800 - 2 * 4_194_304) / 2**20,
    )
    assert app["container.memory.usage"] == ("Bytes", 2 * 52_428_800)
    assert app["container.network.rate.rx"] == ("Bytes/Second", 3000)
    assert app["container.storage.read_bytes"] == ("Bytes", 2 * 8_192_000)
    assert app["container.cpu.cores"] == ("Count", 2)
    assert app["container.duration"][0] == "Seconds" and app["container.duration"][1] > 0
    _, sidecar = found["coldtail"]
    _, total = found["task"]
    assert total["ecs.task.cpu.utilized"] == ("Percent", 75)  # 50 + 25
    assert total["ecs.task.memory.usage"][1] == 3 * 52_428_800
    assert total["ecs.task.cpu.cores"] == ("Count", 2)  # the host's, not a sum
    assert total["ecs.task.cpu.reserved"] == ("vCPU", 512)  # 0.5 vCPU of the task's limits
    assert total["ecs.task.memory.reserved"] == ("Megabytes", 1024)
    assert sidecar["container.network.io.usage.tx_bytes"][1] == 1_270_000


@pytest.mark.parametrize("failure", [Failure.ERROR, Failure.GARBAGE])
async def test_a_failed_read_is_one_line_and_the_next_interval_reads_again(
    monkeypatch, caplog, failure
):
    async with EcsMetadataServer(EcsTask()) as server:
        server.fail(failure, "/task/stats")
        with caplog.at_level(logging.WARNING):
            receiver, sink = await started(monkeypatch, server.uri)
            try:
                await asyncio.sleep(0.3)
                assert sink.batches == []
                server.fail(None, "/task/stats")
                await sink.wait_for(1, timeout=5)
            finally:
                await receiver.shutdown()
    assert "ECS task stats not read" in caplog.text


async def test_outside_ecs_the_receiver_does_not_start(monkeypatch):
    with pytest.raises(ValueError, match="ECS_CONTAINER_METADATA_URI_V4 is not set"):
        await started(monkeypatch, None)
