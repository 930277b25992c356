"""Receiver `awsecscontainermetrics`: the CPU, memory, network and storage of an ECS task and of
each of its containers, read every `collection_interval` from the task metadata endpoint v4,
with the metrics, units and resource attributes of the OTel Collector contrib receiver of that
name, which ADOT's ECS Container Insights configs filter and rename.

Each interval the receiver GETs `${ECS_CONTAINER_METADATA_URI_V4}/task` (the task and its
containers, with their limits) and `/task/stats` (Docker's ContainerStats of every container,
by DockerId), each bounded by a timeout and a size limit, and pushes one batch: a resource per
container with stats (`container.*` metrics), one per stopped container (`container.duration`
only) and one for the task (`ecs.task.*`). A read that fails (connection, timeout, status,
not a JSON object) logs one line and is skipped; the next interval reads again. Containers
without stats (stopped, not started yet: null in /task/stats, or no `id`) get no usage metrics.

Container metrics, from the container's stats and its `Limits` in /task:

    memory.usage, memory.usage.max, memory.usage.limit  Bytes  memory_stats usage, max_usage, limit
    memory.utilized   MiB   (usage - stats.cache) // 1 MiB
    memory.reserved   MiB   Limits.Memory
    cpu.usage.total, cpu.usage.kernelmode, cpu.usage.usermode, cpu.usage.system   Nanoseconds
    cpu.cores         Count  len(cpu_usage.percpu_usage)
    cpu.onlines       Count  online_cpus
    cpu.usage.vcpu    vCPU   CPU time used between the two reads / time between them
    cpu.utilized      None   cpu.usage.vcpu * 100 / Limits.CPU (CPU units), or * 100 alone
    cpu.reserved      None   Limits.CPU, in CPU units (1024 = one vCPU)
    network.rate.rx, network.rate.tx   Bytes/Second   network_rate_stats (computed by ECS)
    network.io.usage.{rx,tx}_{bytes,packets,errors,dropped}   Bytes, Count   summed over interfaces
    storage.read_bytes, storage.write_bytes   Bytes   blkio io_service_bytes_recursive Read, Write

Task metrics are the sums over the containers with stats (host-wide figures such as cores and
system CPU time included, as upstream adds them up), except: `memory.reserved` is the task's
Limits.Memory (MiB) and `cpu.reserved` its Limits.CPU (vCPU) * 1024 when the task has limits;
`cpu.utilized` is the task's cpu.usage.vcpu * 1024, in CPU units (0 without a reservation);
and `ecs.task.ephemeral_storage.utilized` / `.reserved` (MiB) come from the task's
EphemeralStorageMetrics (Fargate), when present. Units are upstream's strings (`MiB`,
`Nanoseconds`, `None`, ...). CPU times, network I/O and storage are cumulative monotonic sums,
everything else gauges.

Resource attributes of the task: aws.ecs.cluster.name, aws.ecs.task.arn, aws.ecs.task.id,
aws.ecs.task.family, aws.ecs.task.revision (and upstream's older aws.ecs.task.version),
aws.ecs.service.name, aws.ecs.task.known_status, aws.ecs.task.pull_started_at,
aws.ecs.task.pull_stopped_at, aws.ecs.task.launch_type (as sent) and aws.ecs.launchtype
(`ec2`, `fargate`), cloud.availability_zone, cloud.region, cloud.account.id (from the task
ARN). A container's resource adds container.name, container.id, aws.ecs.docker.name,
container.image.name, container.image.tag (`latest` when the image names none),
aws.ecs.container.image.id, aws.ecs.container.created_at, aws.ecs.container.started_at,
aws.ecs.container.finished_at, aws.ecs.container.know_status (upstream's spelling) and
aws.ecs.container.exit_code. Attributes the documents do not carry are left out.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from pydantic import Field

from collector.core import tasks
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.pdata import Metrics, count_items, iso_time_ns, set_attr
from collector.core.signals import Signal

SCOPE_NAME = "coldtail/awsecscontainermetrics"
URI_VARIABLE = "ECS_CONTAINER_METADATA_URI_V4"

_MIB = 1024 * 1024
_CPU_UNITS_PER_VCPU = 1024
_INT64_MAX = 2**63 - 1
# Each read of /task or /task/stats; the endpoint is local and answers in milliseconds.
_TIMEOUT_S = 5.0
# A task has at most 10 containers; their stats are a few kilobytes each.
_MAX_DOCUMENT_BYTES = 4 * _MIB

_Shape = Literal["gauge", "double", "sum"]  # int gauge, double gauge, cumulative int sum

# Metric names without the `ecs.task.` / `container.` prefix, in upstream's order.
_METRICS: dict[str, tuple[str, _Shape]] = {
    "memory.usage": ("Bytes", "gauge"),
    "memory.usage.max": ("Bytes", "gauge"),
    "memory.usage.limit": ("Bytes", "gauge"),
    "memory.utilized": ("MiB", "gauge"),
    "memory.reserved": ("MiB", "gauge"),
    "cpu.usage.total": ("Nanoseconds", "sum"),
    "cpu.usage.kernelmode": ("Nanoseconds", "sum"),
    "cpu.usage.usermode": ("Nanoseconds", "sum"),
    "cpu.cores": ("Count", "gauge"),
    "cpu.onlines": ("Count", "gauge"),
    "cpu.usage.system": ("Nanoseconds", "sum"),
    "cpu.utilized": ("None", "double"),
    "cpu.reserved": ("None", "double"),
    "cpu.usage.vcpu": ("vCPU", "double"),
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
_TASK_ONLY: dict[str, tuple[str, _Shape]] = {
    "ephemeral_storage.utilized": ("MiB", "gauge"),
    "ephemeral_storage.reserved": ("MiB", "gauge"),
}
_STOPPED: dict[str, tuple[str, _Shape]] = {"duration": ("Seconds", "double")}
_NETWORK_COUNTERS = [
    f"{direction}_{counter}"
    for direction in ("rx", "tx")
    for counter in ("bytes", "packets", "errors", "dropped")
]

# Docker image references (github.com/distribution/reference): [domain[:port]/]path[:tag][@digest]
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"(?P<name>(?:{_DOMAIN}/)?{_PATH_PART}(?:/{_PATH_PART})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)
_FRACTION = re.compile(r"\.(\d+)")


class Config(ComponentConfig):
    collection_interval: Duration = Field(20.0, gt=0)
    """Time between two reads of the task's stats (default 20s)."""


# --- reading the documents ------------------------------------------------------------------


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _uint(value: object) -> int:
    """A Docker counter as an int64; 0 when absent or not a non-negative number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return min(max(int(value), 0), _INT64_MAX)


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value) if math.isfinite(value) else 0.0


def _present(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def docker_time_ns(text: object) -> int | None:
    """Nanoseconds since the epoch of a Docker RFC 3339 time, keeping all nine fraction digits
    (Docker's `read` and `preread` carry nanoseconds; iso_time_ns keeps microseconds)."""
    if not isinstance(text, str):
        return None
    match = _FRACTION.search(text)
    if match is None:
        return iso_time_ns(text)
    digits = match.group(1)
    base = iso_time_ns(text[: match.start()] + text[match.end() :])
    if base is None:
        return None
    return base + int(digits[:9].ljust(9, "0"))


def parse_image(image: str) -> tuple[str, str]:
    """(repository, tag) of a Docker image reference, the tag `latest` when it names none;
    ("", "") when it is not a valid reference."""
    match = _IMAGE.fullmatch(image)
    if match is None or len(match.group("name")) > 255:
        return "", ""
    return match.group("name"), match.group("tag") or "latest"


def container_values(stats: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, float]:
    """The container.* values (names without the prefix) of one container's Docker stats and
    its Limits from the task document."""
    values: dict[str, float] = dict.fromkeys(_METRICS, 0)
    memory = stats.get("memory_stats")
    if isinstance(memory, dict):
        usage = _uint(memory.get("usage"))
        values["memory.usage"] = usage
        values["memory.usage.max"] = _uint(memory.get("max_usage"))
        values["memory.usage.limit"] = _uint(memory.get("limit"))
        if isinstance(memory.get("stats"), dict):
            # Usage without the page cache, in whole MiB (cgroup v2 stats have no `cache`).
            values["memory.utilized"] = max(usage - _uint(memory["stats"].get("cache")), 0) // _MIB
    cpu, previous = _dict(stats.get("cpu_stats")), _dict(stats.get("precpu_stats"))
    usage_now, usage_before = cpu.get("cpu_usage"), previous.get("cpu_usage")
    if isinstance(usage_now, dict) and isinstance(usage_before, dict):
        # CPU use as upstream computes it: the container's CPU time between the previous read
        # (precpu_stats, at `preread`) and this one (cpu_stats, at `read`) over the wall time
        # between the two reads, both in ns, is the vCPUs it kept busy:
        #   cpu.usage.vcpu = (total_usage - precpu total_usage) / (read - preread)
        #   cpu.utilized   = cpu.usage.vcpu * 100 [/ Limits.CPU, in CPU units, when set]
        # (not Docker CLI's ratio to system_cpu_usage, the host's CPU time).
        read, preread = docker_time_ns(stats.get("read")), docker_time_ns(stats.get("preread"))
        total = _uint(usage_now.get("total_usage"))
        if read is not None and preread is not None and read > preread:
            used = max(total - _uint(usage_before.get("total_usage")), 0)
            values["cpu.usage.vcpu"] = used / (read - preread)
        values["cpu.utilized"] = values["cpu.usage.vcpu"] * 100
        values["cpu.usage.total"] = total
        values["cpu.usage.kernelmode"] = _uint(usage_now.get("usage_in_kernelmode"))
        values["cpu.usage.usermode"] = _uint(usage_now.get("usage_in_usermode"))
        percpu = usage_now.get("percpu_usage")
        values["cpu.cores"] = len(percpu) if isinstance(percpu, list) else 0
        values["cpu.onlines"] = _uint(cpu.get("online_cpus"))
        values["cpu.usage.system"] = _uint(cpu.get("system_cpu_usage"))
    rates = stats.get("network_rate_stats")
    if isinstance(rates, dict):
        values["network.rate.rx"] = _float(rates.get("rx_bytes_per_sec"))
        values["network.rate.tx"] = _float(rates.get("tx_bytes_per_sec"))
    for interface in _dict(stats.get("networks")).values():
        for key in _NETWORK_COUNTERS:
            values[f"network.io.usage.{key}"] += _uint(_dict(interface).get(key))
    for entry in _dict(stats.get("blkio_stats")).get("io_service_bytes_recursive") or []:
        op = _dict(entry).get("op")
        if op in ("Read", "Write"):  # not Sync, Async, Total...
            values[f"storage.{op.lower()}_bytes"] += _uint(entry.get("value"))
    values["memory.reserved"] = _uint(limits.get("Memory"))
    values["cpu.reserved"] = _float(limits.get("CPU"))
    if values["cpu.reserved"] > 0:
        values["cpu.utilized"] /= values["cpu.reserved"]
    return values


def task_values(containers: list[dict[str, float]], task: Mapping[str, Any]) -> dict[str, float]:
    """The ecs.task.* values: the containers' sums, with the task's own limits."""
    values: dict[str, float] = dict.fromkeys(_METRICS, 0)
    for container in containers:
        for key, value in container.items():
            if key != "cpu.utilized":  # percent of each container's own reservation
                values[key] += value
    limits = _dict(task.get("Limits"))
    if _present(limits.get("Memory")):
        values["memory.reserved"] = _uint(limits["Memory"])
    if _present(limits.get("CPU")):
        values["cpu.reserved"] = _float(limits["CPU"]) * _CPU_UNITS_PER_VCPU  # vCPU -> units
    if values["cpu.reserved"] > 0:
        values["cpu.utilized"] = values["cpu.usage.vcpu"] * _CPU_UNITS_PER_VCPU
    ephemeral = task.get("EphemeralStorageMetrics")
    if isinstance(ephemeral, dict):
        values["ephemeral_storage.utilized"] = _uint(ephemeral.get("Utilized"))
        values["ephemeral_storage.reserved"] = _uint(ephemeral.get("Reserved"))
    return values


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def task_resource(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task's resource attributes, named as the contrib receiver names them."""
    arn = _text(task.get("TaskARN"))
    # arn:<partition>:ecs:<region>:<account>:task/[<cluster>/]<id>
    parts = arn.split(":", 5)
    is_task_arn = len(parts) == 6 and parts[0] == "arn" and parts[2] == "ecs"
    cluster = _text(task.get("Cluster"))
    revision = _text(task.get("Revision"))
    launch_type = _text(task.get("LaunchType"))
    attributes = {
        "aws.ecs.cluster.name": cluster.rsplit("/", 1)[-1]
        if cluster.startswith("arn:")
        else cluster,
        "aws.ecs.task.arn": arn,
        "aws.ecs.task.id": arn.rsplit("/", 1)[-1] if is_task_arn else "",
        "aws.ecs.task.family": _text(task.get("Family")),
        "aws.ecs.task.version": revision,
        "aws.ecs.task.revision": revision,
        "aws.ecs.service.name": _text(task.get("ServiceName")),
        "cloud.availability_zone": _text(task.get("AvailabilityZone")),
        "aws.ecs.task.pull_started_at": _text(task.get("PullStartedAt")),
        "aws.ecs.task.pull_stopped_at": _text(task.get("PullStoppedAt")),
        "aws.ecs.task.known_status": _text(task.get("KnownStatus")),
        "aws.ecs.task.launch_type": launch_type,
        "aws.ecs.launchtype": launch_type.lower()
        if launch_type.lower() in ("ec2", "fargate")
        else "",
        "cloud.region": parts[3] if is_task_arn else "",
        "cloud.account.id": parts[4] if is_task_arn else "",
    }
    return {key: value for key, value in attributes.items() if value}


def container_resource(container: Mapping[str, Any]) -> dict[str, Any]:
    """A container's own resource attributes (the task's come on top)."""
    repository, tag = parse_image(_text(container.get("Image")))
    exit_code = container.get("ExitCode")
    attributes: dict[str, Any] = {
        "container.name": _text(container.get("Name")),
        "container.id": _text(container.get("DockerId")),
        "aws.ecs.docker.name": _text(container.get("DockerName")),
        "container.image.name": repository,
        "aws.ecs.container.image.id": _text(container.get("ImageID")),
        "container.image.tag": tag,
        "aws.ecs.container.created_at": _text(container.get("CreatedAt")),
        "aws.ecs.container.started_at": _text(container.get("StartedAt")),
        "aws.ecs.container.finished_at": _text(container.get("FinishedAt")),
        "aws.ecs.container.know_status": _text(container.get("KnownStatus")),
    }
    attributes = {key: value for key, value in attributes.items() if value}
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        attributes["aws.ecs.container.exit_code"] = exit_code
    return attributes


def collect(task: Mapping[str, Any], stats: Mapping[str, Any], now_ns: int) -> Metrics:
    """The task's and its containers' metrics from the /task and /task/stats documents."""
    batch = Metrics()
    base = task_resource(task)
    measured: list[dict[str, float]] = []
    for container in task.get("Containers") or []:
        if not isinstance(container, dict):
            continue
        resource = {**container_resource(container), **base}
        container_stats = stats.get(_text(container.get("DockerId")))
        if isinstance(container_stats, dict) and container_stats.get("id"):
            values = container_values(container_stats, _dict(container.get("Limits")))
            measured.append(values)
            _add_resource(batch, resource, "container.", values, now_ns)
            continue
        # Stopped, or not started yet: no stats; a stopped one gets its run time.
        started = docker_time_ns(container.get("StartedAt"))
        finished = docker_time_ns(container.get("FinishedAt"))
        if started is not None and finished is not None:
            duration = {"duration": max(finished - started, 0) / 1e9}
            _add_resource(batch, resource, "container.", duration, now_ns)
    _add_resource(batch, base, "ecs.task.", task_values(measured, task), now_ns)
    return batch


def _add_resource(
    batch: Metrics, resource: dict[str, Any], prefix: str, values: dict[str, float], now_ns: int
) -> None:
    rm = batch.resource_metrics.add()
    for key, value in resource.items():
        set_attr(rm.resource.attributes, key, value)
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE_NAME
    for key, value in values.items():
        unit, kind = _METRICS.get(key) or _TASK_ONLY.get(key) or _STOPPED[key]
        metric = sm.metrics.add(name=prefix + key, unit=unit)
        if kind == "sum":
            metric.sum.aggregation_temporality = (
                AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
            )
            # Counters since the container started: monotonic (upstream leaves the flag
            # unset), so that exporters which take deltas of counters, as awsemf, do.
            metric.sum.is_monotonic = True
            point = metric.sum.data_points.add(time_unix_nano=now_ns)
        else:
            point = metric.gauge.data_points.add(time_unix_nano=now_ns)
        if kind == "double":
            point.as_double = float(value)
        else:
            point.as_int = min(int(value), _INT64_MAX)


# --- the receiver ---------------------------------------------------------------------------


class _ReadError(Exception):
    """The endpoint did not give a usable document."""


class EcsContainerMetricsReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), "http"
        )
        self._base = ""
        self._http: aiohttp.ClientSession | None = None
        self._loop: asyncio.Task | None = None

    async def start(self, host: Host) -> None:
        self._base = os.environ.get(URI_VARIABLE, "").strip().rstrip("/")
        if not self._base:
            raise RuntimeError(
                f"{URI_VARIABLE} is not set: the awsecscontainermetrics receiver reads the ECS "
                "task metadata endpoint v4, which ECS sets in the containers of a task "
                "(Fargate platform 1.4.0+, EC2 agent 1.39.0+)"
            )
        # No proxy from the environment: the endpoint is link-local.
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S), trust_env=False
        )
        self._loop = asyncio.create_task(self._collect_forever())

    async def shutdown(self) -> None:
        loop, self._loop = self._loop, None
        await tasks.cancel([loop])
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()

    async def _collect_forever(self) -> None:
        # A ticker, as upstream's: the first read one interval after start; a read that takes
        # longer than the interval skips the ticks it missed rather than bunching reads.
        interval = self.config.collection_interval
        next_tick = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(next_tick - time.monotonic(), 0))
            try:
                await self.collect_once()
            except Exception as e:  # whatever happens, the next interval reads again
                self.log.exception("ECS task stats not collected", extra={"kv": {"error": repr(e)}})
            now = time.monotonic()
            next_tick += interval * max(1, math.ceil((now - next_tick) / interval))

    async def collect_once(self) -> None:
        """Read the task and its stats once and push their metrics."""
        try:
            task = await self._document("/task")
            stats = await self._document("/task/stats")
        except (_ReadError, aiohttp.ClientError, TimeoutError) as e:
            self.log.warning(
                "ECS task stats not read; trying again next interval",
                extra={"kv": {"error": str(e) if isinstance(e, _ReadError) else repr(e)}},
            )
            return
        batch = collect(task, stats, time.time_ns())
        points = count_items(batch)
        try:
            await self.next.consume(batch)
        except Exception as e:
            # A read is not retried (PermanentError or RetryableError alike): the next
            # interval brings fresh values.
            self._refused.inc(points)
            self.log.warning(
                "ECS task metrics refused by the pipeline",
                extra={
                    "kv": {
                        "points": points,
                        "error": str(e) or repr(e),
                        "retryable": isinstance(e, RetryableError),
                        "permanent": isinstance(e, PermanentError),
                    }
                },
            )
            return
        self._accepted.inc(points)

    async def _document(self, path: str) -> dict:
        if self._http is None:
            raise _ReadError("the receiver is not started")
        async with self._http.get(self._base + path) as response:
            if response.status != 200:
                raise _ReadError(f"GET {path}: HTTP {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > _MAX_DOCUMENT_BYTES:
                    raise _ReadError(f"GET {path}: more than {_MAX_DOCUMENT_BYTES} bytes")
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise _ReadError(f"GET {path}: not JSON ({e})") from None
        if not isinstance(document, dict):
            raise _ReadError(f"GET {path}: not a JSON object")
        return document


factory = Factory(
    kind=Kind.RECEIVER,
    type="awsecscontainermetrics",
    config=Config,
    create=EcsContainerMetricsReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="CPU, memory, network and storage of the ECS task and its containers.",
)
