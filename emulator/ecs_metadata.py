"""A local ECS Task Metadata Endpoint version 4 for tests and local runs, shaped like AWS's
documented responses for a task on Fargate (platform 1.4.0 or later).

Paths under the base URI, which is what a container finds in ECS_CONTAINER_METADATA_URI_V4:

    ${ECS_CONTAINER_METADATA_URI_V4}              the container's own metadata
    ${ECS_CONTAINER_METADATA_URI_V4}/task         the task's metadata, with every container
    ${ECS_CONTAINER_METADATA_URI_V4}/stats        Docker stats of the container
    ${ECS_CONTAINER_METADATA_URI_V4}/task/stats   Docker stats of every container, by DockerId
                                                  (null for a stopped container)

In-process:

    async with EcsMetadataServer(EcsTask(family="checkout")) as server:
        os.environ["ECS_CONTAINER_METADATA_URI_V4"] = server.uri
        server.fail(Failure.HANG, path="/task")

As a process, printing the URI on stdout once it listens:

    python -m emulator.ecs_metadata [--port P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal as signals
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web

from collector.core.endpoints import bound_port

# Fixed instants keep the documents stable between runs; only their format matters.
_PULL_STARTED = "2024-05-14T09:21:02.532811081Z"
_PULL_STOPPED = "2024-05-14T09:21:07.541068435Z"
_CREATED = "2024-05-14T09:21:14.91368314Z"
_STATS_READ = "2024-05-14T09:30:00.000000000Z"
_STATS_PREREAD = "2024-05-14T09:29:59.000000000Z"
_FINISHED = "2024-05-14T09:21:44.91368314Z"  # a stopped container ran for 30 s
_SIDECAR_UUID = "f65b461d-aa09-4acb-a579-9785c0530cbc"
_STOPPED_UUID = "3b0a0e4c-5d3e-4c8e-9f6a-2f1e2d3c4b5a"


@dataclass
class EcsTask:
    """The task the endpoint describes: one application container (whose endpoint this is),
    unless `sidecar_name` is empty a sidecar container beside it, and unless `stopped_name` is
    empty a container that ran before them and exited (a one-off step such as a migration),
    which has no stats any more."""

    region: str = "us-west-2"
    account: str = "111122223333"
    partition: str = "aws"  # aws-cn and aws-us-gov have their own
    cluster: str = "default"  # short name; the documents carry its ARN
    task_id: str = "cd189a933e5849daa93386466019ab50"
    family: str = "checkout"
    revision: str = "7"  # a string in the documents, as AWS sends it
    availability_zone: str = "us-west-2b"
    launch_type: str = "FARGATE"
    container_name: str = "app"
    image: str = "111122223333.dkr.ecr.us-west-2.amazonaws.com/checkout:1.4.2"
    container_id: str = ""  # DockerId; empty: Fargate's "<task id>-<number>" form
    container_uuid: str = "05966557-f16c-49cb-9352-24b3a0dcd0e1"  # last part of ContainerARN
    log_group: str = "/ecs/checkout"  # empty: no awslogs log configuration
    log_stream: str = ""  # empty: "ecs/<container_name>/<task_id>", awslogs-stream-prefix ecs
    service_name: str = ""  # ServiceName, present only for tasks started by a service
    sidecar_name: str = "coldtail"
    sidecar_image: str = "111122223333.dkr.ecr.us-west-2.amazonaws.com/coldtail:0.1.0"
    stopped_name: str = ""
    stopped_image: str = "111122223333.dkr.ecr.us-west-2.amazonaws.com/migrate"

    def __post_init__(self) -> None:
        self.container_id = self.container_id or f"{self.task_id}-2495160603"
        self.log_stream = self.log_stream or f"ecs/{self.container_name}/{self.task_id}"

    def arn(self, resource: str) -> str:
        return f"arn:{self.partition}:ecs:{self.region}:{self.account}:{resource}"

    @property
    def cluster_arn(self) -> str:
        return self.arn(f"cluster/{self.cluster}")

    @property
    def task_arn(self) -> str:
        return self.arn(f"task/{self.cluster}/{self.task_id}")

    @property
    def container_arn(self) -> str:
        return self.arn(f"container/{self.cluster}/{self.task_id}/{self.container_uuid}")

    def container_document(self) -> dict:
        """What GET ${ECS_CONTAINER_METADATA_URI_V4} answers."""
        document = self._container(
            self.container_name, self.image, self.container_id, self.container_arn, cpu=128
        )
        if self.log_group:
            document["LogDriver"] = "awslogs"
            document["LogOptions"] = {
                "awslogs-create-group": "true",
                "awslogs-group": self.log_group,
                "awslogs-region": self.region,
                "awslogs-stream": self.log_stream,
            }
        return document

    def task_document(self) -> dict:
        """What GET ${ECS_CONTAINER_METADATA_URI_V4}/task answers."""
        document: dict = {
            "Cluster": self.cluster_arn,
            "TaskARN": self.task_arn,
            "Family": self.family,
            "Revision": self.revision,
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": {"CPU": 0.5, "Memory": 1024},
            "PullStartedAt": _PULL_STARTED,
            "PullStoppedAt": _PULL_STOPPED,
            "AvailabilityZone": self.availability_zone,
            "Containers": [self.container_document(), *self._sidecars(), *self._stopped()],
            "LaunchType": self.launch_type,
            "ClockDrift": {
                "ClockErrorBound": 0.446931,
                "ReferenceTimestamp": "2024-05-14T09:29:17Z",
                "ClockSynchronizationStatus": "SYNCHRONIZED",
            },
            "EphemeralStorageMetrics": {"Utilized": 261, "Reserved": 20496},
        }
        if self.service_name:
            document["ServiceName"] = self.service_name
        return document

    def stats_document(self) -> dict:
        """What GET ${ECS_CONTAINER_METADATA_URI_V4}/stats answers: Docker's ContainerStats
        (cgroup v1, as Fargate's Linux platform 1.4.0 serves them) with ECS's
        network_rate_stats."""
        return _stats(self.container_name, self.container_id, load=2)

    def task_stats_document(self) -> dict:
        """What GET ${ECS_CONTAINER_METADATA_URI_V4}/task/stats answers: every container's
        stats by DockerId, null for a container that is not running."""
        stats: dict[str, dict | None] = {self.container_id: self.stats_document()}
        for sidecar in self._sidecars():
            stats[sidecar["DockerId"]] = _stats(sidecar["Name"], sidecar["DockerId"])
        for stopped in self._stopped():
            stats[stopped["DockerId"]] = None
        return stats

    def _sidecars(self) -> list[dict]:
        if not self.sidecar_name:
            return []
        docker_id = f"{self.task_id}-3681984407"
        arn = self.arn(f"container/{self.cluster}/{self.task_id}/{_SIDECAR_UUID}")
        return [self._container(self.sidecar_name, self.sidecar_image, docker_id, arn, cpu=256)]

    def _stopped(self) -> list[dict]:
        if not self.stopped_name:
            return []
        docker_id = f"{self.task_id}-1021776474"
        arn = self.arn(f"container/{self.cluster}/{self.task_id}/{_STOPPED_UUID}")
        container = self._container(self.stopped_name, self.stopped_image, docker_id, arn, cpu=0)
        container.update(
            DesiredStatus="STOPPED", KnownStatus="STOPPED", ExitCode=0, FinishedAt=_FINISHED
        )
        return [container]

    def _container(self, name: str, image: str, docker_id: str, arn: str, cpu: int) -> dict:
        return {
            "DockerId": docker_id,
            "Name": name,
            "DockerName": name,
            "Image": image,
            "ImageID": "sha256:25f3695bedfb454a50f12d127839a68ad3caf91e451c1da073db34c542c4d2cb",
            "Labels": {
                "com.amazonaws.ecs.cluster": self.cluster_arn,
                "com.amazonaws.ecs.container-name": name,
                "com.amazonaws.ecs.task-arn": self.task_arn,
                "com.amazonaws.ecs.task-definition-family": self.family,
                "com.amazonaws.ecs.task-definition-version": self.revision,
            },
            "DesiredStatus": "RUNNING",
            "KnownStatus": "RUNNING",
            "Limits": {"CPU": cpu, "Memory": 512},
            "CreatedAt": _CREATED,
            "StartedAt": _CREATED,
            "Type": "NORMAL",
            "Networks": [
                {
                    "NetworkMode": "awsvpc",
                    "IPv4Addresses": ["10.0.2.106"],
                    "AttachmentIndex": 0,
                    "MACAddress": "0a:de:f6:10:51:e5",
                    "IPv4SubnetCIDRBlock": "10.0.2.0/24",
                    "DomainNameServers": ["10.0.0.2"],
                    "DomainNameSearchList": [f"{self.region}.compute.internal"],
                    "PrivateDNSName": f"ip-10-0-2-106.{self.region}.compute.internal",
                    "SubnetGatewayIpv4Address": "10.0.2.1/24",
                }
            ],
            "ContainerARN": arn,
            "Snapshotter": "overlayfs",
        }


def _stats(name: str, docker_id: str, load: int = 1) -> dict:
    """Docker's ContainerStats as ECS serves them, one second after the previous read
    (`preread`): `load` scales the CPU used in that second, the memory and the I/O, so that
    containers differ."""
    cpu_second = 250_000_000 * load  # ns of CPU time used between preread and read
    previous = {
        "cpu_usage": {
            "total_usage": 1_200_000_000,
            "percpu_usage": [700_000_000, 500_000_000],
            "usage_in_kernelmode": 200_000_000,
            "usage_in_usermode": 1_000_000_000,
        },
        "system_cpu_usage": 9_000_000_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    current = {
        "cpu_usage": {
            "total_usage": 1_200_000_000 + cpu_second,
            "percpu_usage": [700_000_000 + cpu_second, 500_000_000],
            "usage_in_kernelmode": 200_000_000 + cpu_second // 5,
            "usage_in_usermode": 1_000_000_000 + cpu_second - cpu_second // 5,
        },
        "system_cpu_usage": 9_000_000_000_000 + 2_000_000_000,
        "online_cpus": 2,
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    return {
        "read": _STATS_READ,
        "preread": _STATS_PREREAD,
        "name": name,
        "id": docker_id,
        "num_procs": 0,
        "pids_stats": {"current": 3},
        "cpu_stats": current,
        "precpu_stats": previous,
        "storage_stats": {},
        "memory_stats": {
            "usage": 52_428_800 * load,
            "max_usage": 62_914_560 * load,
            "limit": 536_870_912,
            "stats": _memory_stats(load),
        },
        "networks": {
            "eth1": {
                "rx_bytes": 5_230_000 * load,
                "rx_packets": 4_100 * load,
                "rx_errors": 0,
                "rx_dropped": 0,
                "tx_bytes": 1_270_000 * load,
                "tx_packets": 2_900 * load,
                "tx_errors": 0,
                "tx_dropped": 0,
            }
        },
        "network_rate_stats": {
            "rx_bytes_per_sec": 1_500.0 * load,
            "tx_bytes_per_sec": 600.0 * load,
        },
        "blkio_stats": {
            "io_service_bytes_recursive": _blkio(8_192_000 * load, 1_024_000 * load),
            "io_serviced_recursive": _blkio(250 * load, 40 * load),
            "io_queue_recursive": [],
            "io_service_time_recursive": [],
            "io_wait_time_recursive": [],
            "io_merged_recursive": [],
            "io_time_recursive": [],
            "sectors_recursive": [],
        },
    }


def _blkio(read: int, write: int) -> list[dict]:
    """One block device's entries of a blkio_stats list, per operation, as cgroup v1 has them."""
    values = {"Read": read, "Write": write, "Sync": write, "Async": read, "Discard": 0}
    values["Total"] = read + write
    return [{"major": 259, "minor": 0, "op": op, "value": v} for op, v in values.items()]


def _memory_stats(load: int) -> dict:
    """memory_stats.stats of cgroup v1 (the hierarchical totals mirror the container's own)."""
    own = {
        "active_anon": 37_748_736 * load,
        "active_file": 2_097_152 * load,
        "cache": 4_194_304 * load,
        "dirty": 0,
        "inactive_anon": 4_194_304 * load,
        "inactive_file": 2_097_152 * load,
        "mapped_file": 1_048_576 * load,
        "pgfault": 24_000 * load,
        "pgmajfault": 3,
        "pgpgin": 15_000 * load,
        "pgpgout": 2_100 * load,
        "rss": 41_943_040 * load,
        "rss_huge": 0,
        "unevictable": 0,
        "writeback": 0,
    }
    return {
        **own,
        "hierarchical_memory_limit": 536_870_912,
        "hierarchical_memsw_limit": 9_223_372_036_854_771_712,
        **{f"total_{key}": value for key, value in own.items()},
    }


class Failure(StrEnum):
    """How the endpoint misbehaves on purpose."""

    ERROR = "error"  # answer 500
    HANG = "hang"  # accept the request and never answer
    CLOSE = "close"  # close the connection without answering
    GARBAGE = "garbage"  # answer 200 with a body that is not JSON


@dataclass
class EcsMetadataServer:
    """The endpoint over HTTP on `host`, port 0 = any free port. `uri` is the value of
    ECS_CONTAINER_METADATA_URI_V4; `requests` records the paths asked for, relative to it."""

    task: EcsTask = field(default_factory=EcsTask)
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[str] = field(default_factory=list, init=False)
    _failures: dict[str | None, Failure] = field(default_factory=dict, init=False)
    _released: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}{self._base}"

    @property
    def _base(self) -> str:
        # Fargate puts the container's DockerId in the base path.
        return f"/v4/{self.task.container_id}"

    def fail(self, failure: Failure | None, path: str | None = None) -> None:
        """Misbehave as `failure` on `path` ("", "/task", "/stats" or "/task/stats"), or on
        every path when None; `failure` None answers normally again."""
        if failure is None:
            self._failures.pop(path, None)
        else:
            self._failures[path] = failure

    async def start(self) -> None:
        app = web.Application()
        documents = {
            "": self.task.container_document,
            "/task": self.task.task_document,
            "/stats": self.task.stats_document,
            "/task/stats": self.task.task_stats_document,
        }
        for path, document in documents.items():
            app.router.add_get(self._base + path, self._handler(path, document))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = bound_port(site)

    async def stop(self) -> None:
        self._released.set()  # lets hanging requests end so that cleanup does not wait
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> EcsMetadataServer:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def _handler(self, path: str, document: Callable[[], dict]):
        async def handle(request: web.Request) -> web.StreamResponse:
            self.requests.append(path)
            failure = self._failures.get(path, self._failures.get(None))
            if failure == Failure.ERROR:
                return web.json_response({"error": "failing on purpose"}, status=500)
            if failure == Failure.GARBAGE:
                return web.Response(text='{"DockerId": "truncated', content_type="text/plain")
            if failure == Failure.HANG:
                await self._released.wait()
            if failure in (Failure.HANG, Failure.CLOSE):
                if request.transport:
                    request.transport.close()
                return web.Response()  # never sent: the connection is gone
            return web.json_response(document())

        return handle


async def _serve(args: argparse.Namespace) -> None:
    server = EcsMetadataServer(host=args.host, port=args.port)
    if args.fail:
        server.fail(Failure(args.fail))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signals.SIGINT, signals.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(server.uri, flush=True)
        print(f"export ECS_CONTAINER_METADATA_URI_V4={server.uri}", file=sys.stderr, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emulator.ecs_metadata",
        description="A local ECS Task Metadata Endpoint v4 describing a Fargate task. Prints "
        "the URI to export as ECS_CONTAINER_METADATA_URI_V4 on stdout once listening.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument(
        "--fail", choices=[f.value for f in Failure], help="misbehave this way on every path"
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
