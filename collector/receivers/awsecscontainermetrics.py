"""Receiver `awsecscontainermetrics`: the CPU, memory, network and storage of an ECS task and of
each of its containers, read every `collection_interval` from the task metadata endpoint v4
(`${ECS_CONTAINER_METADATA_URI_V4}/task` and `/task/stats`), with the metric and resource
attribute names of the OTel Collector's receiver of that name, which ADOT's ECS configs use.

Each container's Docker stats give `container.*` metrics; the task's `ecs.task.*` are their sums,
with the task's reserved CPU and memory from its limits (or the containers'). CPU use is the
change of the container's total CPU time since the previous read (`precpu_stats`) over the time
between the two reads: in vCPU, and as a percentage of one vCPU (`cpu.utilized`). Memory
utilized is usage without the page cache. Containers without stats (stopped, not yet started)
are skipped. A failed or malformed read logs one line and the next interval tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from pydantic import Field

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, count_items, iso_time_ns, set_attr
from collector.core.signals import Signal

SCOPE_NAME = "coldtail/awsecscontainermetrics"
_MIB = 1 << 20
_TIMEOUT_S = 5.0
# (name without the ecs.task. / container. prefix, unit, what it adds up).
_METRICS = [
    ("memory.usage", "Bytes"),
    ("memory.usage.max", "Bytes"),
    ("memory.usage.limit", "Bytes"),
    ("memory.utilized", "Megabytes"),
    ("cpu.usage.total", "Nanoseconds"),
    ("cpu.usage.kernelmode", "Nanoseconds"),
    ("cpu.usage.usermode", "Nanoseconds"),
    ("cpu.usage.system", "Nanoseconds"),
    ("cpu.usage.vcpu", "vCPU"),
    ("cpu.cores", "Count"),
    ("cpu.onlines", "Count"),
    ("cpu.utilized", "Percent"),
    ("network.rate.rx", "Bytes/Second"),
    ("network.rate.tx", "Bytes/Second"),
    ("network.io.usage.rx_bytes", "Bytes"),
    ("network.io.usage.rx_packets", "Count"),
    ("network.io.usage.rx_errors", "Count"),
    ("network.io.usage.rx_dropped", "Count"),
    ("network.io.usage.tx_bytes", "Bytes"),
    ("network.io.usage.tx_packets", "Count"),
    ("network.io.usage.tx_errors", "Count"),
    ("network.io.usage.tx_dropped", "Count"),
    ("storage.read_bytes", "Bytes"),
    ("storage.write_bytes", "Bytes"),
]
_UNITS = dict(_METRICS)
_HOST_WIDE = frozenset({"cpu.usage.system", "cpu.cores", "cpu.onlines"})


class Config(ComponentConfig):
    collection_interval: Duration = Field(20.0, gt=0)
    """Time between two reads of the task's stats (default 20s)."""


def container_values(stats: Mapping[str, Any]) -> dict[str, float]:
    """The container.* values (names without the prefix) of one container's Docker stats."""
    cpu, previous = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    usage, previous_usage = cpu.get("cpu_usage") or {}, previous.get("cpu_usage") or {}
    memory = stats.get("memory_stats") or {}
    read, preread = iso_time_ns(stats.get("read")), iso_time_ns(stats.get("preread"))
    vcpu = 0.0
    if read and preread and read > preread and previous_usage.get("total_usage") is not None:
        used = usage.get("total_usage", 0) - previous_usage["total_usage"]
        vcpu = max(used, 0) / (read - preread)  # CPU ns per wall ns
    values = {
        "memory.usage": memory.get("usage", 0),
        "memory.usage.max": memory.get("max_usage", 0),
        "memory.usage.limit": memory.get("limit", 0),
        "memory.utilized": (memory.get("usage", 0) - (memory.get("stats") or {}).get("cache", 0))
        / _MIB,
        "cpu.usage.total": usage.get("total_usage", 0),
        "cpu.usage.kernelmode": usage.get("usage_in_kernelmode", 0),
        "cpu.usage.usermode": usage.get("usage_in_usermode", 0),
        "cpu.usage.system": cpu.get("system_cpu_usage", 0),
        "cpu.usage.vcpu": vcpu,
        "cpu.cores": len(usage.get("percpu_usage") or []) or cpu.get("online_cpus", 0),
        "cpu.onlines": cpu.get("online_cpus", 0),
        "cpu.utilized": vcpu * 100,
    }
    rates = stats.get("network_rate_stats") or {}
    values["network.rate.rx"] = rates.get("rx_bytes_per_sec", 0.0)
    values["network.rate.tx"] = rates.get("tx_bytes_per_sec", 0.0)
    for direction in ("rx", "tx"):
        for counter in ("bytes", "packets", "errors", "dropped"):
            key = f"{direction}_{counter}"
            values[f"network.io.usage.{key}"] = sum(
                (interface or {}).get(key, 0)
                for interface in (stats.get("networks") or {}).values()
            )
    io = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
    values["storage.read_bytes"] = sum(e.get("value", 0) for e in io if e.get("op") == "Read")
    values["storage.write_bytes"] = sum(e.get("value", 0) for e in io if e.get("op") == "Write")
    return values


def task_resource(task: Mapping[str, Any]) -> dict[str, Any]:
    """The task's resource attributes, named as the OTel Collector's receiver names them."""
    arn = str(task.get("TaskARN", ""))
    parts = arn.split(":")
    cluster = str(task.get("Cluster", "")).rsplit("/", 1)[-1]
    attributes = {
        "aws.ecs.cluster.name": cluster,
        "aws.ecs.task.arn": arn,
        "aws.ecs.task.id": arn.rsplit("/", 1)[-1],
        "aws.ecs.task.family": task.get("Family"),
        "aws.ecs.task.version": task.get("Revision"),
        "aws.ecs.service.name": task.get("ServiceName"),
        "aws.ecs.task.known_status": task.get("KnownStatus"),
        "aws.ecs.task.launch_type": task.get("LaunchType"),
        "aws.ecs.task.pull_started_at": task.get("PullStartedAt"),
        "aws.ecs.task.pull_stopped_at": task.get("PullStoppedAt"),
        "cloud.zone": task.get("AvailabilityZone"),
        "cloud.region": parts[3] if len(parts) > 4 else None,
        "cloud.account.id": parts[4] if len(parts) > 4 else None,
    }
    return {k: v for k, v in attributes.items() if v not in (None, "")}


def container_resource(container: Mapping[str, Any]) -> dict[str, Any]:
    image = str(container.get("Image", ""))
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    attributes = {
        "container.name": container.get("Name"),
        "container.id": container.get("DockerId"),
        "aws.ecs.docker.name": container.get("DockerName"),
        "container.image.name": name,
        "container.image.tag": tag,
        "aws.ecs.container.image.id": container.get("ImageID"),
        "aws.ecs.container.exit_code": container.get("ExitCode"),
        "aws.ecs.container.created_at": container.get("CreatedAt"),
        "aws.ecs.container.started_at": container.get("StartedAt"),
        "aws.ecs.container.finished_at": container.get("FinishedAt"),
        "aws.ecs.container.know_status": container.get("KnownStatus"),
    }
    return {k: v for k, v in attributes.items() if v not in (None, "")}


def collect(task: Mapping[str, Any], stats: Mapping[str, Any], now_ns: int) -> Metrics:
    """The task's and its containers' metrics from the /task and /task/stats documents."""
    batch = Metrics()
    base = task_resource(task)
    totals = dict.fromkeys(_UNITS, 0.0)
    memory_reserved = cpu_reserved = 0.0
    for container in task.get("Containers") or []:
        limits = container.get("Limits") or {}
        memory_reserved += limits.get("Memory", 0) or 0
        cpu_reserved += limits.get("CPU", 0) or 0
        container_stats = stats.get(container.get("DockerId", ""))
        if not isinstance(container_stats, dict) or not container_stats.get("cpu_stats"):
            continue  # stopped or not started: no stats
        values = container_values(container_stats)
        for key, value in values.items():
            # The host's: the same for every container, not theirs to add up.
            totals[key] = max(totals[key], value) if key in _HOST_WIDE else totals[key] + value
        started = iso_time_ns(container.get("StartedAt"))
        if started:
            values["duration"] = (now_ns - started) / 1e9
        _add_resource(
            batch, {**base, **container_resource(container)}, "container.", values, now_ns
        )
    limits = task.get("Limits") or {}
    # Task limits: CPU in vCPU and memory in MiB; the containers' CPU is in CPU units (1/1024).
    totals["memory.reserved"] = limits.get("Memory") or memory_reserved
    totals["cpu.reserved"] = limits.get("CPU", 0) * 1024 or cpu_reserved
    _add_resource(batch, base, "ecs.task.", totals, now_ns)
    return batch


_EXTRA_UNITS = {"duration": "Seconds", "memory.reserved": "Megabytes", "cpu.reserved": "vCPU"}


def _add_resource(
    batch: Metrics, resource: dict[str, Any], prefix: str, values: dict[str, float], now_ns: int
) -> None:
    rm = batch.resource_metrics.add()
    for key, value in resource.items():
        set_attr(rm.resource.attributes, key, value)
    sm = rm.scope_metrics.add()
    sm.scope.name = SCOPE_NAME
    for key, value in values.items():
        metric = sm.metrics.add(name=prefix + key, unit=_UNITS.get(key) or _EXTRA_UNITS[key])
        point = metric.gauge.data_points.add(time_unix_nano=now_ns)
        if isinstance(value, int) or float(value).is_integer():
            point.as_int = int(value)
        else:
            point.as_double = float(value)


class EcsContainerMetricsReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        telemetry, receiver = settings.telemetry, str(settings.id)
        self._accepted = telemetry.receiver_accepted[Signal.METRICS].labels(
            receiver=receiver, transport="http"
        )
        self._refused = telemetry.receiver_refused[Signal.METRICS].labels(
            receiver=receiver, transport="http"
        )
        self._base = ""
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None

    async def start(self, host: Host) -> None:
        self._base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4", "").rstrip("/")
        if not self._base:
            raise ValueError(
                "ECS_CONTAINER_METADATA_URI_V4 is not set: this receiver runs in an ECS task"
            )
        timeout = aiohttp.ClientTimeout(total=_TIMEOUT_S)
        self._http = aiohttp.ClientSession(timeout=timeout, trust_env=False)
        self._task = asyncio.create_task(self._collect_forever())

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _collect_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.collection_interval)
            await self.collect_once()

    async def collect_once(self) -> None:
        try:
            task = await self._document("/task")
            stats = await self._document("/task/stats")
            batch = collect(task, stats, time.time_ns())
        except (aiohttp.ClientError, TimeoutError, ValueError, TypeError, AttributeError) as e:
            self.log.warning(
                "ECS task stats not read; trying again next interval",
                extra={"kv": {"error": str(e) or type(e).__name__}},
            )
            return
        points = count_items(batch)
        try:
            await self.next.consume(batch)
        except Exception as e:
            self._refused.inc(points)
            self.log.warning("ECS task metrics refused", extra={"kv": {"error": str(e)}})
            return
        self._accepted.inc(points)

    async def _document(self, path: str) -> dict:
        assert self._http is not None
        async with self._http.get(self._base + path) as response:
            if response.status != 200:
                raise ValueError(f"GET {path}: HTTP {response.status}")
            document = await response.json(content_type=None)
        if not isinstance(document, dict):
            raise ValueError(f"GET {path}: not a JSON object")
        return document


factory = Factory(
    kind=Kind.RECEIVER,
    type="awsecscontainermetrics",
    config=Config,
    create=EcsContainerMetricsReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="CPU, memory, network and storage of the ECS task and its containers.",
)
