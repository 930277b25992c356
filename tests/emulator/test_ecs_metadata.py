"""The ECS Task Metadata Endpoint v4 emulator answers like AWS's documented Fargate examples."""

import asyncio
import subprocess
import sys
import urllib.request

import aiohttp
import pytest

from emulator.ecs_metadata import EcsMetadataServer, EcsTask, Failure

# Keys and JSON types of AWS's documented example responses for a task on Fargate (task
# metadata v4 examples: "Example container metadata response" and "Example task metadata
# response").
CONTAINER_KEYS = {
    "DockerId": str,
    "Name": str,
    "DockerName": str,
    "Image": str,
    "ImageID": str,
    "Labels": dict,
    "DesiredStatus": str,
    "KnownStatus": str,
    "Limits": dict,
    "CreatedAt": str,
    "StartedAt": str,
    "Type": str,
    "Networks": list,
    "ContainerARN": str,
    "LogOptions": dict,
    "LogDriver": str,
    "Snapshotter": str,
}
LABEL_KEYS = {
    "com.amazonaws.ecs.cluster",
    "com.amazonaws.ecs.container-name",
    "com.amazonaws.ecs.task-arn",
    "com.amazonaws.ecs.task-definition-family",
    "com.amazonaws.ecs.task-definition-version",
}
NETWORK_KEYS = {
    "NetworkMode": str,
    "IPv4Addresses": list,
    "AttachmentIndex": int,
    "MACAddress": str,
    "IPv4SubnetCIDRBlock": str,
    "DomainNameServers": list,
    "DomainNameSearchList": list,
    "PrivateDNSName": str,
    "SubnetGatewayIpv4Address": str,
}
LOG_OPTION_KEYS = {"awslogs-create-group", "awslogs-group", "awslogs-region", "awslogs-stream"}
TASK_KEYS = {
    "Cluster": str,
    "TaskARN": str,
    "Family": str,
    "Revision": str,
    "DesiredStatus": str,
    "KnownStatus": str,
    "Limits": dict,
    "PullStartedAt": str,
    "PullStoppedAt": str,
    "AvailabilityZone": str,
    "Containers": list,
    "LaunchType": str,
    "ClockDrift": dict,
    "EphemeralStorageMetrics": dict,
}


def assert_shape(document: dict, expected: dict) -> None:
    assert set(document) == set(expected)
    for key, kind in expected.items():
        assert isinstance(document[key], kind), key


async def get(url: str) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, body


async def test_container_document_has_the_documented_fargate_shape():
    async with EcsMetadataServer() as server:
        status, container = await get(server.uri)
    assert status == 200
    assert_shape(container, CONTAINER_KEYS)
    assert set(container["Labels"]) == LABEL_KEYS
    assert set(container["Limits"]) == {"CPU", "Memory"}
    assert_shape(container["Networks"][0], NETWORK_KEYS)
    assert set(container["LogOptions"]) == LOG_OPTION_KEYS
    assert container["LogDriver"] == "awslogs"
    assert container["Networks"][0]["NetworkMode"] == "awsvpc"
    # Fargate's DockerId is the task id and a number; the base path carries it.
    assert container["DockerId"].startswith("cd189a933e5849daa93386466019ab50-")
    assert server.uri.endswith("/v4/" + container["DockerId"])


async def test_task_document_has_the_documented_fargate_shape():
    async with EcsMetadataServer() as server:
        status, task = await get(server.uri + "/task")
        _, container = await get(server.uri)
    assert status == 200
    assert_shape(task, TASK_KEYS)
    assert set(task["Limits"]) == {"CPU", "Memory"}
    assert set(task["ClockDrift"]) == {
        "ClockErrorBound",
        "ReferenceTimestamp",
        "ClockSynchronizationStatus",
    }
    assert set(task["EphemeralStorageMetrics"]) == {"Utilized", "Reserved"}
    assert task["LaunchType"] == "FARGATE"
    assert [c["Name"] for c in task["Containers"]] == ["app", "coldtail"]
    assert task["Containers"][0] == container
    sidecar = task["Containers"][1]
    assert set(CONTAINER_KEYS) - set(sidecar) == {"LogDriver", "LogOptions"}


async def test_documents_follow_the_knobs():
    task = EcsTask(
        region="eu-central-1",
        account="210987654321",
        cluster="prod",
        task_id="0123456789abcdef0123456789abcdef",
        family="billing",
        revision="42",
        availability_zone="eu-central-1c",
        launch_type="EC2",
        container_name="api",
        image="registry.example.com:5000/billing/api:2.0",
        log_group="/ecs/billing",
        service_name="billing-api",
        sidecar_name="",
    )
    async with EcsMetadataServer(task) as server:
        _, container = await get(server.uri)
        _, document = await get(server.uri + "/task")
    arn = "arn:aws:ecs:eu-central-1:210987654321"
    assert document["Cluster"] == f"{arn}:cluster/prod"
    assert document["TaskARN"] == f"{arn}:task/prod/0123456789abcdef0123456789abcdef"
    assert (document["Family"], document["Revision"]) == ("billing", "42")
    assert document["AvailabilityZone"] == "eu-central-1c"
    assert document["LaunchType"] == "EC2"
    assert document["ServiceName"] == "billing-api"
    assert [c["Name"] for c in document["Containers"]] == ["api"]
    assert container["Image"] == "registry.example.com:5000/billing/api:2.0"
    assert container["ContainerARN"].startswith(f"{arn}:container/prod/0123456789abcdef")
    assert container["LogOptions"]["awslogs-group"] == "/ecs/billing"
    assert container["LogOptions"]["awslogs-stream"] == ("ecs/api/0123456789abcdef0123456789abcdef")
    assert container["Labels"]["com.amazonaws.ecs.task-definition-version"] == "42"


async def test_no_log_group_means_no_log_configuration():
    async with EcsMetadataServer(EcsTask(log_group="")) as server:
        _, container = await get(server.uri)
    assert "LogDriver" not in container
    assert "LogOptions" not in container


async def test_stats_are_docker_stats_by_container():
    async with EcsMetadataServer() as server:
        status, stats = await get(server.uri + "/stats")
        _, task_stats = await get(server.uri + "/task/stats")
        _, task = await get(server.uri + "/task")
    assert status == 200
    for key in ("read", "preread", "cpu_stats", "precpu_stats", "memory_stats", "networks"):
        assert key in stats
    assert set(task_stats) == {c["DockerId"] for c in task["Containers"]}
    assert task_stats[stats["id"]] == stats


async def test_failure_modes():
    async with EcsMetadataServer() as server:
        server.fail(Failure.ERROR)
        assert (await get(server.uri))[0] == 500

        server.fail(Failure.GARBAGE)
        async with aiohttp.ClientSession() as session, session.get(server.uri) as response:
            assert response.status == 200
            with pytest.raises(ValueError):
                await response.json(content_type=None)

        server.fail(Failure.CLOSE)
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await get(server.uri)

        server.fail(Failure.HANG)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await get(server.uri)

        server.fail(None)
        assert (await get(server.uri))[0] == 200
    assert set(server.requests) == {""}  # paths relative to the URI


async def test_a_failure_can_target_one_path():
    async with EcsMetadataServer() as server:
        server.fail(Failure.ERROR, path="/task")
        assert (await get(server.uri))[0] == 200
        assert (await get(server.uri + "/task"))[0] == 500
        server.fail(None, path="/task")
        assert (await get(server.uri + "/task"))[0] == 200


async def test_stopping_releases_hanging_requests_quickly():
    server = EcsMetadataServer()
    await server.start()
    server.fail(Failure.HANG)
    request = asyncio.ensure_future(get(server.uri))
    while not server.requests:
        await asyncio.sleep(0.01)
    async with asyncio.timeout(5):
        await server.stop()
        with pytest.raises(aiohttp.ClientError):
            await request


def test_runs_as_a_process_and_prints_the_uri():
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulator.ecs_metadata", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = proc.stdout.readline().strip()
        assert uri.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(uri + "/task", timeout=5) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
    assert f"export ECS_CONTAINER_METADATA_URI_V4={uri}" in proc.stderr.read()
