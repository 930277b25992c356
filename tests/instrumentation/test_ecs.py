"""ECS resource detection against the local Task Metadata Endpoint v4."""

import asyncio
import logging
import time

import pytest

from emulator.ecs_metadata import EcsMetadataServer, EcsTask, Failure
from instrumentation.container.ecs import detect_ecs_resource

ARN = "arn:aws:ecs:us-west-2:111122223333"
TASK_ID = "cd189a933e5849daa93386466019ab50"
LOGS_ARN = "arn:aws:logs:us-west-2:111122223333:log-group:/ecs/checkout"

EXPECTED = {
    "cloud.provider": "aws",
    "cloud.platform": "aws_ecs",
    "cloud.region": "us-west-2",
    "cloud.account.id": "111122223333",
    "cloud.availability_zone": "us-west-2b",
    "aws.ecs.cluster.arn": f"{ARN}:cluster/default",
    "aws.ecs.task.arn": f"{ARN}:task/default/{TASK_ID}",
    "aws.ecs.task.id": TASK_ID,
    "aws.ecs.task.family": "checkout",
    "aws.ecs.task.revision": "7",
    "aws.ecs.launchtype": "fargate",
    "aws.ecs.container.arn": (
        f"{ARN}:container/default/{TASK_ID}/05966557-f16c-49cb-9352-24b3a0dcd0e1"
    ),
    "container.id": f"{TASK_ID}-2495160603",
    "container.name": "app",
    "container.image.name": "111122223333.dkr.ecr.us-west-2.amazonaws.com/checkout",
    "container.image.tags": ["1.4.2"],
    "aws.log.group.names": ["/ecs/checkout"],
    "aws.log.group.arns": [f"{LOGS_ARN}:*"],
    "aws.log.stream.names": [f"ecs/app/{TASK_ID}"],
    "aws.log.stream.arns": [f"{LOGS_ARN}:log-stream:ecs/app/{TASK_ID}"],
}
# What the container document's labels give when the task document is unavailable.
FROM_CONTAINER_ONLY = {
    key: value
    for key, value in EXPECTED.items()
    if key not in ("cloud.availability_zone", "aws.ecs.launchtype")
}
# Bounds generous enough never to flake: what matters is that detection does not wait for a
# broken endpoint.
QUICK_S = 2.0


@pytest.fixture
def warnings_logged():
    """Warning records of the "coldtail" logger, which the collector's own logging setup may
    have detached from the root logger that caplog watches."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("coldtail")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


async def detect(server: EcsMetadataServer | None, timeout: float = 0.2) -> tuple[dict, float]:
    """Detection in a thread (it blocks, and the server runs on this loop); returns the
    attributes and the seconds it took."""
    environ = {"ECS_CONTAINER_METADATA_URI_V4": server.uri} if server else {}
    started = time.monotonic()
    attributes = await asyncio.to_thread(detect_ecs_resource, timeout, environ)
    return attributes, time.monotonic() - started


async def test_every_attribute_from_a_fargate_task(warnings_logged):
    async with EcsMetadataServer() as server:
        attributes, _ = await detect(server)
    assert attributes == EXPECTED
    assert server.requests == ["", "/task"]
    assert warnings_logged == []


async def test_reads_the_environment_by_default(monkeypatch):
    async with EcsMetadataServer() as server:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", server.uri + "/")
        attributes = await asyncio.to_thread(detect_ecs_resource)
    assert attributes == EXPECTED


async def test_other_partitions_launch_types_and_images():
    task = EcsTask(
        partition="aws-cn",
        region="cn-north-1",
        account="210987654321",
        cluster="prod",
        launch_type="EC2",
        image="registry.example.com:5000/team/api@sha256:25f3695b",
        log_stream="api/main",
        service_name="api",
    )
    async with EcsMetadataServer(task) as server:
        attributes, _ = await detect(server)
    logs = "arn:aws-cn:logs:cn-north-1:210987654321:log-group:/ecs/checkout"
    assert attributes["cloud.region"] == "cn-north-1"
    assert (
        attributes["aws.ecs.cluster.arn"] == "arn:aws-cn:ecs:cn-north-1:210987654321:cluster/prod"
    )
    assert attributes["aws.ecs.launchtype"] == "ec2"
    assert attributes["container.image.name"] == "registry.example.com:5000/team/api"
    assert "container.image.tags" not in attributes
    assert attributes["aws.log.stream.arns"] == [f"{logs}:log-stream:api/main"]


async def test_without_the_variable_nothing_is_detected(warnings_logged):
    attributes, took = await detect(None)
    assert attributes == {}
    assert took < QUICK_S
    assert warnings_logged == []


async def test_a_failing_task_document_keeps_the_container_document(warnings_logged):
    async with EcsMetadataServer() as server:
        server.fail(Failure.ERROR, path="/task")
        attributes, _ = await detect(server)
    assert attributes == FROM_CONTAINER_ONLY
    assert len(warnings_logged) == 1
    assert "task metadata: HTTP 500" in warnings_logged[0].getMessage()


@pytest.mark.parametrize("failure", [Failure.ERROR, Failure.CLOSE, Failure.GARBAGE])
async def test_a_broken_endpoint_degrades_quickly_with_one_warning(failure, warnings_logged):
    async with EcsMetadataServer() as server:
        server.fail(failure)
        attributes, took = await detect(server)
    assert attributes == {"cloud.provider": "aws", "cloud.platform": "aws_ecs"}
    assert took < QUICK_S
    assert len(warnings_logged) == 1
    message = warnings_logged[0].getMessage()
    assert "container metadata" in message
    assert "task metadata" in message


async def test_a_hanging_endpoint_costs_the_timeout_and_no_more(warnings_logged):
    async with EcsMetadataServer() as server:
        server.fail(Failure.HANG)
        attributes, took = await detect(server, timeout=0.2)
    assert attributes == {"cloud.provider": "aws", "cloud.platform": "aws_ecs"}
    assert took < QUICK_S
    assert len(warnings_logged) == 1
    assert "timed out" in warnings_logged[0].getMessage()


async def test_an_unreachable_endpoint_degrades(warnings_logged):
    async with EcsMetadataServer() as server:
        uri = server.uri
    attributes = await asyncio.to_thread(
        detect_ecs_resource, 0.2, {"ECS_CONTAINER_METADATA_URI_V4": uri}
    )
    assert attributes == {"cloud.provider": "aws", "cloud.platform": "aws_ecs"}
    assert len(warnings_logged) == 1


def test_a_uri_that_is_not_http_degrades(warnings_logged):
    environ = {"ECS_CONTAINER_METADATA_URI_V4": "https://169.254.170.2/v4/abc"}
    assert detect_ecs_resource(0.2, environ) == {
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
    }
    assert "not an http:// URL" in warnings_logged[0].getMessage()
