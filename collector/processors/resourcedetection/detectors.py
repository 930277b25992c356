"""The resource detectors: what each finds about the place the collector runs, named by the
OpenTelemetry resource semantic conventions. Each is a coroutine from the environment variables
(and its config) to attributes; one that finds it is not where it looks (no Lambda variables,
no ECS metadata endpoint) returns nothing, and one that fails raises DetectionError.
"""

from __future__ import annotations

import json
import platform
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from urllib.parse import unquote

import aiohttp

Attributes = dict[str, object]


class DetectionError(Exception):
    """A detector that applies here could not find its attributes."""


async def env(environ: Mapping[str, str], enabled: Callable[[str], bool]) -> Attributes:
    """OTEL_RESOURCE_ATTRIBUTES: `key1=value1,key2=value2`, percent-decoded."""
    attributes: Attributes = {}
    for item in environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DetectionError(f"OTEL_RESOURCE_ATTRIBUTES: {item.strip()!r} is not key=value")
        attributes[unquote(key.strip())] = unquote(value.strip())
    return attributes


# platform.machine() names -> the conventions' host.arch values.
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


async def system(
    environ: Mapping[str, str], enabled: Callable[[str], bool], hostname_sources: list[str]
) -> Attributes:
    """host.name (the first of `hostname_sources` that answers: dns = the fully qualified
    name, os = the kernel's host name) and os.type; host.arch, host.id and os.description when
    enabled."""
    attributes: Attributes = {}
    if enabled("host.name"):
        for source in hostname_sources:
            name = socket.getfqdn() if source == "dns" else socket.gethostname()
            if name and name != "localhost":
                attributes["host.name"] = name
                break
        else:
            raise DetectionError(f"no host name from {', '.join(hostname_sources)}")
    if enabled("os.type"):
        attributes["os.type"] = platform.system().lower()
    if enabled("os.description"):
        attributes["os.description"] = platform.platform()
    if enabled("host.arch"):
        machine = platform.machine().lower()
        attributes["host.arch"] = _ARCH.get(machine, machine)
    if enabled("host.id"):
        machine_id = Path("/etc/machine-id")
        if machine_id.is_file():
            attributes["host.id"] = machine_id.read_text().strip()
    return {k: v for k, v in attributes.items() if v}


async def aws_lambda(environ: Mapping[str, str], enabled: Callable[[str], bool]) -> Attributes:
    """The function's cloud.*, faas.* and aws.log.* attributes from the variables Lambda sets
    (faas.max_memory in bytes); nothing outside Lambda."""
    name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
    if not name:
        return {}
    memory = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    group, stream = (
        environ.get("AWS_LAMBDA_LOG_GROUP_NAME"),
        environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
    )
    attributes: Attributes = {
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "cloud.region": environ.get("AWS_REGION"),
        "faas.name": name,
        "faas.version": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "faas.instance": stream,
        "faas.max_memory": int(memory) * 2**20 if memory.isdigit() else None,
        "aws.log.group.names": [group] if group else None,
        "aws.log.stream.names": [stream] if stream else None,
    }
    return {k: v for k, v in attributes.items() if v is not None and enabled(k)}


async def ecs(environ: Mapping[str, str], enabled: Callable[[str], bool]) -> Attributes:
    """The task's and the collector's own container's attributes from the ECS Task Metadata
    Endpoint v4 (ECS_CONTAINER_METADATA_URI_V4); nothing outside ECS."""
    base = environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return {}
    # No proxy from the environment: the endpoint is link-local.
    async with aiohttp.ClientSession(trust_env=False) as session:
        container = await _document(session, base)
        task = await _document(session, f"{base}/task")
    task_arn = str(task.get("TaskARN", ""))
    # arn:<partition>:ecs:<region>:<account>:task/<cluster>/<id>
    parts = task_arn.split(":")
    region, account = (parts[3], parts[4]) if len(parts) > 5 else (None, None)
    options = container.get("LogOptions") or {}
    group, stream = options.get("awslogs-group"), options.get("awslogs-stream")
    launch_type = task.get("LaunchType")
    attributes: Attributes = {
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
        "cloud.region": region,
        "cloud.account.id": account,
        "cloud.availability_zone": task.get("AvailabilityZone"),
        "aws.ecs.cluster.arn": task.get("Cluster"),
        "aws.ecs.task.arn": task_arn or None,
        "aws.ecs.task.id": task_arn.rpartition("/")[2] or None,
        "aws.ecs.task.family": task.get("Family"),
        "aws.ecs.task.revision": task.get("Revision"),
        "aws.ecs.launchtype": launch_type.lower() if isinstance(launch_type, str) else None,
        "aws.ecs.container.arn": container.get("ContainerARN"),
        "container.name": container.get("Name"),
        "container.id": container.get("DockerId"),
        "aws.log.group.names": [group] if group else None,
        "aws.log.stream.names": [stream] if stream else None,
    }
    return {k: v for k, v in attributes.items() if v is not None and enabled(k)}


# The AWS SDKs' variables for the instance metadata service.
_IMDS_DEFAULT = "http://169.254.169.254"
_TOKEN_TTL_S = "60"  # the token only serves the two reads below


async def ec2(environ: Mapping[str, str], enabled: Callable[[str], bool]) -> Attributes:
    """The instance's cloud.*, host.* attributes from the EC2 instance metadata service, over
    IMDSv2 (a session token first); nothing where no metadata service answers. The endpoint is
    AWS_EC2_METADATA_SERVICE_ENDPOINT when set; AWS_EC2_METADATA_DISABLED=true turns it off."""
    if environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return {}
    base = environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", _IMDS_DEFAULT).rstrip("/")
    # Off EC2 the address does not answer: give up on connecting after a second.
    timeout = aiohttp.ClientTimeout(sock_connect=1)
    async with aiohttp.ClientSession(trust_env=False, timeout=timeout) as session:
        try:
            async with session.put(
                f"{base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": _TOKEN_TTL_S},
            ) as response:
                token = await response.text()
                status = response.status
        except (aiohttp.ClientConnectionError, TimeoutError):
            return {}
        if status != 200:
            raise DetectionError(f"PUT {base}/latest/api/token: HTTP {status}")
        headers = {"X-aws-ec2-metadata-token": token}
        identity = await _document(
            session, f"{base}/latest/dynamic/instance-identity/document", headers
        )
        hostname = await _read(session, f"{base}/latest/meta-data/hostname", headers)
    attributes: Attributes = {
        "cloud.provider": "aws",
        "cloud.platform": "aws_ec2",
        "cloud.account.id": identity.get("accountId"),
        "cloud.region": identity.get("region"),
        "cloud.availability_zone": identity.get("availabilityZone"),
        "host.id": identity.get("instanceId"),
        "host.image.id": identity.get("imageId"),
        "host.type": identity.get("instanceType"),
        "host.name": hostname.strip() or None,
    }
    return {k: v for k, v in attributes.items() if v is not None and enabled(k)}


_DOCKER_SOCKET = "unix:///var/run/docker.sock"


async def docker(environ: Mapping[str, str], enabled: Callable[[str], bool]) -> Attributes:
    """host.name and os.type of the host whose Docker daemon runs the collector's container,
    from the Docker Engine API's `GET /info` at DOCKER_HOST (a unix:// socket or tcp://
    address; default unix:///var/run/docker.sock); nothing where no daemon answers, as on
    Fargate, where no container reaches one."""
    address = environ.get("DOCKER_HOST") or _DOCKER_SOCKET
    connector: aiohttp.BaseConnector
    if address.startswith("unix://"):
        path = address.removeprefix("unix://")
        if not Path(path).exists():
            return {}
        connector, base = aiohttp.UnixConnector(path=path), "http://docker"
    elif address.startswith("tcp://"):
        connector, base = aiohttp.TCPConnector(), "http://" + address.removeprefix("tcp://")
    else:
        raise DetectionError(f"DOCKER_HOST {address!r}: expected unix:// or tcp://")
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        try:
            info = await _document(session, f"{base}/info")
        except DetectionError as e:
            if isinstance(e.__cause__, aiohttp.ClientConnectionError | OSError):
                return {}  # a socket nobody listens on
            raise
    attributes = {"host.name": info.get("Name"), "os.type": info.get("OSType")}
    return {k: v for k, v in attributes.items() if isinstance(v, str) and v and enabled(k)}


async def _read(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> str:
    try:
        async with session.get(url, headers=headers) as response:
            if response.status != 200:
                raise DetectionError(f"GET {url}: HTTP {response.status}")
            return await response.text()
    except (aiohttp.ClientError, OSError) as e:
        raise DetectionError(f"GET {url}: {e}") from e


async def _document(
    session: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
) -> dict:
    """A JSON object from `url`."""
    text = await _read(session, url, headers)
    try:
        document = json.loads(text)
    except ValueError as e:
        raise DetectionError(f"GET {url}: not JSON: {e}") from e
    if not isinstance(document, dict):
        raise DetectionError(f"GET {url}: not a JSON object")
    return document


Detector = Callable[..., Awaitable[Attributes]]
DETECTORS: dict[str, Detector] = {
    "env": env,
    "system": system,
    "lambda": aws_lambda,
    "ecs": ecs,
    "ec2": ec2,
    "docker": docker,
}
