"""resourcedetection: what each detector finds, against the real host and a local ECS Task
Metadata Endpoint v4, and how the found attributes meet the ones a resource already has."""

import asyncio
import logging
import platform
import socket
import time

import aiohttp
import pytest
from aiohttp import web

from collector.core.pdata import get_attr, resources
from collector.processors.resourcedetection import factory
from emulator.ecs_metadata import EcsMetadataServer, EcsTask, Failure
from tests.processors import make_processor
from tests.support.builders import make_logs, make_traces
from tests.support.imds import HOSTNAME, IDENTITY, ImdsServer

LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "checkout",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/checkout",
    "AWS_LAMBDA_LOG_STREAM_NAME": "2026/12/03/[$LATEST]0123456789abcdef",
    "AWS_REGION": "eu-west-1",
}


async def detected(config: dict, environ: dict, batch=None):
    """The resource attributes of `batch` (default: a span of service checkout) after a
    processor with `config` started in `environ`."""
    processor, sink = make_processor(factory, config, environ=environ)
    await processor.start(None)
    await processor.consume(batch if batch is not None else make_traces(1))
    [out] = sink.batches
    resource = resources(out)[0].resource
    return {kv.key: get_attr(resource.attributes, kv.key) for kv in resource.attributes}


async def test_env_reads_otel_resource_attributes_percent_decoded():
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod, team=pay%20ments"}
    attributes = await detected({}, environ)
    assert attributes["deployment.environment"] == "prod"
    assert attributes["team"] == "pay ments"


async def test_lambda_finds_the_function_from_its_variables():
    attributes = await detected({"detectors": ["lambda"]}, LAMBDA_ENV, make_logs(1))
    assert {k: v for k, v in attributes.items() if k != "service.name"} == {
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "cloud.region": "eu-west-1",
        "faas.name": "checkout",
        "faas.version": "$LATEST",
        "faas.instance": "2026/12/03/[$LATEST]0123456789abcdef",
        "faas.max_memory": 512 * 2**20,
        "aws.log.group.names": ["/aws/lambda/checkout"],
        "aws.log.stream.names": ["2026/12/03/[$LATEST]0123456789abcdef"],
    }


async def test_outside_lambda_and_ecs_their_detectors_add_nothing():
    attributes = await detected({"detectors": ["lambda", "ecs"]}, {})
    assert set(attributes) == {"service.name"}


async def test_system_names_this_host_and_takes_toggles():
    config = {
        "detectors": ["system"],
        "system": {
            "hostname_sources": ["os"],
            "resource_attributes": {"host.arch": {"enabled": True}, "os.type": {"enabled": False}},
        },
    }
    attributes = await detected(config, {})
    assert attributes["host.name"] == socket.gethostname()
    assert attributes["host.arch"] in ("amd64", "arm64", platform.machine().lower())
    assert "os.type" not in attributes

    defaults = await detected({"detectors": ["system"]}, {})
    assert defaults["os.type"] == platform.system().lower()
    assert defaults["host.name"] in (socket.getfqdn(), socket.gethostname())
    assert "host.arch" not in defaults


async def test_ecs_reads_the_task_metadata_endpoint():
    task = EcsTask(family="checkout", revision="7", container_name="coldtail")
    async with EcsMetadataServer(task) as server:
        environ = {"ECS_CONTAINER_METADATA_URI_V4": server.uri}
        attributes = await detected({"detectors": ["ecs"]}, environ)
    assert {k: v for k, v in attributes.items() if k != "service.name"} == {
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
        "cloud.region": task.region,
        "cloud.account.id": task.account,
        "cloud.availability_zone": task.availability_zone,
        "aws.ecs.cluster.arn": task.cluster_arn,
        "aws.ecs.task.arn": task.task_arn,
        "aws.ecs.task.id": task.task_id,
        "aws.ecs.task.family": "checkout",
        "aws.ecs.task.revision": "7",
        "aws.ecs.launchtype": "fargate",
        "aws.ecs.container.arn": task.container_arn,
        "container.name": "coldtail",
        "container.id": task.container_id,
        "aws.log.group.names": [task.log_group],
        "aws.log.stream.names": [task.log_stream],
    }


async def test_the_first_detector_wins_and_override_decides_against_the_sender():
    environ = {**LAMBDA_ENV, "OTEL_RESOURCE_ATTRIBUTES": "cloud.region=us-east-2"}
    batch = make_traces(1, resource={"service.name": "checkout", "faas.name": "sent"})

    overriding = await detected({"detectors": ["env", "lambda"]}, environ, batch)
    assert overriding["cloud.region"] == "us-east-2"  # env came first
    assert overriding["faas.name"] == "checkout"

    batch = make_traces(1, resource={"service.name": "checkout", "faas.name": "sent"})
    keeping = await detected({"detectors": ["lambda"], "override": False}, environ, batch)
    assert keeping["faas.name"] == "sent"
    assert keeping["cloud.region"] == "eu-west-1"


@pytest.mark.parametrize("failure", list(Failure))
async def test_a_failing_detector_logs_one_line_and_the_others_still_apply(failure, caplog):
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "team=payments"}
    async with EcsMetadataServer(EcsTask()) as server:
        server.fail(failure, path="/task")
        environ["ECS_CONTAINER_METADATA_URI_V4"] = server.uri
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="coldtail"):
            attributes = await detected({"detectors": ["env", "ecs"], "timeout": "300ms"}, environ)
        elapsed = time.monotonic() - started
    assert attributes["team"] == "payments"
    assert "cloud.platform" not in attributes
    [line] = [r.getMessage() for r in caplog.records if "resource detection" in r.getMessage()]
    assert line.startswith("resource detection: ecs ")
    assert elapsed < 5  # bounded by the timeout, not by the endpoint


async def test_detection_happens_once_at_start():
    environ = {"OTEL_RESOURCE_ATTRIBUTES": "team=payments"}
    processor, sink = make_processor(factory, {}, environ=environ)
    await processor.start(None)
    environ["OTEL_RESOURCE_ATTRIBUTES"] = "team=changed"
    for _ in range(2):
        await processor.consume(make_traces(1))
        await asyncio.sleep(0)
    assert [get_attr(b.resource_spans[0].resource.attributes, "team") for b in sink.batches] == [
        "payments",
        "payments",
    ]


async def test_ec2_reads_the_instance_over_imdsv2():
    async with ImdsServer() as imds:
        environ = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint}
        attributes = await detected({"detectors": ["ec2"]}, environ)
    assert {k: v for k, v in attributes.items() if k != "service.name"} == {
        "cloud.provider": "aws",
        "cloud.platform": "aws_ec2",
        "cloud.account.id": IDENTITY["accountId"],
        "cloud.region": IDENTITY["region"],
        "cloud.availability_zone": IDENTITY["availabilityZone"],
        "host.id": IDENTITY["instanceId"],
        "host.image.id": IDENTITY["imageId"],
        "host.type": IDENTITY["instanceType"],
        "host.name": HOSTNAME,
    }
    # A session token first, then both reads with it: what IMDSv2-only instances allow.
    assert imds.requests == [
        ("PUT", "/latest/api/token", 200),
        ("GET", "/latest/dynamic/instance-identity/document", 200),
        ("GET", "/latest/meta-data/hostname", 200),
    ]


async def test_the_imds_double_refuses_what_imdsv2_refuses():
    async with ImdsServer() as imds, aiohttp.ClientSession() as session:
        document = f"{imds.endpoint}/latest/dynamic/instance-identity/document"
        token_url = f"{imds.endpoint}/latest/api/token"
        async with session.get(document) as response:
            assert response.status == 401
        async with session.put(token_url) as response:
            assert response.status == 400
        ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21601"}
        async with session.put(token_url, headers=ttl) as response:
            assert response.status == 400
        forwarded = {"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"}
        async with session.put(token_url, headers=forwarded) as response:
            assert response.status == 403
        async with session.get(document, headers={"X-aws-ec2-metadata-token": "x"}) as response:
            assert response.status == 401


async def test_off_ec2_or_disabled_the_ec2_detector_adds_nothing_quickly():
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}"
    started = time.monotonic()
    off = await detected({"detectors": ["ec2"]}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": nobody})
    disabled = await detected({"detectors": ["ec2"]}, {"AWS_EC2_METADATA_DISABLED": "true"})
    assert set(off) == set(disabled) == {"service.name"}
    assert time.monotonic() - started < 5


class DockerDaemon:
    """The Docker Engine API's GET /info on a unix socket, answering with the fields Docker
    documents (a subset), or with `status` and Docker's error body."""

    def __init__(self, path: str, status: int = 200) -> None:
        self.path, self.status = path, status
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _info(self, request):
        self.requests.append(request.path)
        if self.status != 200:
            return web.json_response({"message": "daemon is busy"}, status=self.status)
        return web.json_response(
            {"ID": "7TRN:IPZB", "Name": "docker-host-1", "OSType": "linux", "NCPU": 2}
        )

    async def __aenter__(self):
        app = web.Application()
        app.router.add_get("/info", self._info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.UnixSite(self._runner, self.path).start()
        return self

    async def __aexit__(self, *exc):
        await self._runner.cleanup()


async def test_docker_asks_the_daemon_at_docker_host_for_the_host(tmp_path):
    path = str(tmp_path / "docker.sock")
    async with DockerDaemon(path) as daemon:
        found = await detected({"detectors": ["docker"]}, {"DOCKER_HOST": f"unix://{path}"})
        off = await detected(
            {
                "detectors": ["docker"],
                "docker": {"resource_attributes": {"os.type": {"enabled": False}}},
            },
            {"DOCKER_HOST": f"unix://{path}"},
        )
    assert found == {"service.name": "checkout", "host.name": "docker-host-1", "os.type": "linux"}
    assert "os.type" not in off
    assert daemon.requests == ["/info", "/info"]


async def test_without_a_docker_daemon_the_docker_detector_adds_nothing(tmp_path, caplog):
    gone = {"DOCKER_HOST": f"unix://{tmp_path / 'no.sock'}"}
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = {"DOCKER_HOST": f"tcp://127.0.0.1:{closed.getsockname()[1]}"}
    with caplog.at_level(logging.WARNING):
        assert await detected({"detectors": ["docker"]}, gone) == {"service.name": "checkout"}
        assert await detected({"detectors": ["docker"]}, refused) == {"service.name": "checkout"}
    assert "resource detection" not in caplog.text


async def test_a_docker_daemon_that_fails_is_one_warning(tmp_path, caplog):
    path = str(tmp_path / "docker.sock")
    async with DockerDaemon(path, status=500):
        with caplog.at_level(logging.WARNING):
            found = await detected({"detectors": ["docker"]}, {"DOCKER_HOST": f"unix://{path}"})
    assert found == {"service.name": "checkout"}
    assert "resource detection: docker failed: GET http://docker/info: HTTP 500" in caplog.text
