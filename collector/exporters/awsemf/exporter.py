"""Exporter `awsemf`: metrics as CloudWatch embedded metric format (emf.py), written to
CloudWatch Logs with PutLogEvents (creating the log group and stream when missing) or printed to
stdout, where Lambda and the CloudWatch agent take them in without an API call.

The namespace and the log group and stream names may hold placeholders filled from each
resource: {ClusterName}, {TaskId}, {TaskDefinitionFamily}, {ServiceName}, {FaasName}; one the
resource cannot fill becomes `undefined`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
import sys
from typing import Any, Literal

from pydantic import Field, field_validator

from collector.aws.session import call, service_client
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import ConsumerError
from collector.core.pdata import any_value_to_python
from collector.core.signals import Signal
from collector.exporters.awsemf.emf import Declaration, EmfWriter
from collector.exporters.sender import Exporter, SenderConfig

# PutLogEvents' limits: events per call, and bytes per call (each event counts 26 more).
MAX_EVENTS = 10_000
MAX_BYTES = 1_048_576
_EVENT_OVERHEAD = 26
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# Retried besides throttling and 5xx; a group or stream deleted while in use is created again
# by the next attempt.
_RETRYABLE_CODES = frozenset({"ResourceNotFoundException", "ServiceUnavailableException"})


class MetricDeclaration(ComponentConfig):
    dimensions: list[list[str]] = Field(default_factory=list)
    """Dimension sets for the selected metrics; a set is used when the data point has every
    label in it (default empty = only the rollup's sets)."""
    metric_name_selectors: list[str] = Field(min_length=1)
    """Regular expressions (re.search) on metric names; at least one. Required."""

    @field_validator("metric_name_selectors")
    @classmethod
    def _compile(cls, selectors: list[str]) -> list[str]:
        for selector in selectors:
            try:
                re.compile(selector)
            except re.error as e:
                raise ValueError(f"invalid metric_name_selectors pattern {selector!r}: {e}") from e
        return selectors


class ResourceToTelemetry(ComponentConfig):
    enabled: bool = False
    """Resource attributes as labels (and dimensions) of every metric (default false)."""


class Config(SenderConfig):
    namespace: str = "default"
    """CloudWatch namespace of the metrics, placeholders allowed (default `default`)."""
    log_group_name: str = "/metrics/default"
    """Log group of the events, placeholders allowed (default /metrics/default)."""
    log_stream_name: str = "otel-stream"
    """Log stream of the events, placeholders allowed (default otel-stream)."""
    output_destination: Literal["cloudwatch", "stdout"] = "cloudwatch"
    """`cloudwatch` (PutLogEvents, default) or `stdout` (one JSON line per event)."""
    dimension_rollup_option: Literal[
        "NoDimensionRollup", "SingleDimensionRollup", "ZeroAndSingleDimensionRollup"
    ] = "ZeroAndSingleDimensionRollup"
    """Dimension sets besides all labels together (or besides a declaration's sets): none,
    each label alone, or also no label (default ZeroAndSingleDimensionRollup)."""
    metric_declarations: list[MetricDeclaration] = Field(default_factory=list)
    """When set, only the metrics they select become CloudWatch metrics, with their dimension
    sets and the rollup's; the others' values stay in the log events (default empty = every
    metric, with all its labels and the rollup's sets)."""
    resource_to_telemetry_conversion: ResourceToTelemetry = Field(
        default_factory=ResourceToTelemetry
    )
    """Resource attributes as metric labels."""
    retain_initial_value_of_delta_metric: bool = False
    """Send the first point of a cumulative series as its value (default false: it only sets
    the base the next change is measured from)."""
    region: str = ""
    """Region of the CloudWatch Logs endpoint (default empty = AWS_REGION or the shared
    config's)."""
    endpoint: str = ""
    """CloudWatch Logs endpoint URL (default empty = the region's)."""
    role_arn: str = ""
    """Role to assume with STS for the calls (default empty = the credential chain's own)."""


def _fill(template: str, resource: dict[str, object]) -> str:
    cluster = str(resource.get("aws.ecs.cluster.arn") or "").rpartition("/")[2]
    task = resource.get("aws.ecs.task.id") or str(resource.get("aws.ecs.task.arn") or "")
    values = {
        "ClusterName": cluster,
        "TaskId": str(task).rpartition("/")[2],
        "TaskDefinitionFamily": resource.get("aws.ecs.task.family"),
        "ServiceName": resource.get("service.name"),
        "FaasName": resource.get("faas.name"),
    }
    return _PLACEHOLDER.sub(lambda m: str(values.get(m[1]) or "undefined"), template)


class EmfExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        declarations = [
            Declaration(d.dimensions, [re.compile(s) for s in d.metric_name_selectors])
            for d in config.metric_declarations
        ]
        self._writer = EmfWriter(
            config.dimension_rollup_option,
            declarations,
            config.resource_to_telemetry_conversion.enabled,
            config.retain_initial_value_of_delta_metric,
        )
        self._client: Any = None
        self._known: set[tuple[str, str]] = set()  # log streams that exist

    async def connect(self) -> None:
        if self.config.output_destination == "cloudwatch":
            cfg = self.config
            self._client = await asyncio.to_thread(
                service_client, "logs", cfg.region, cfg.role_arn, cfg.endpoint
            )

    async def disconnect(self) -> None:
        self._client = None

    async def push(self, batch) -> None:
        streams: dict[tuple[str, str], list[dict]] = {}
        for rm in batch.resource_metrics:
            resource = {kv.key: any_value_to_python(kv.value) for kv in rm.resource.attributes}
            target = (
                _fill(self.config.log_group_name, resource),
                _fill(self.config.log_stream_name, resource),
            )
            namespace = _fill(self.config.namespace, resource)
            streams.setdefault(target, []).extend(self._writer.events(rm, namespace))
        if self.config.output_destination == "stdout":
            for events in streams.values():
                for event in events:
                    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
            sys.stdout.flush()
            return
        for (group, stream), events in streams.items():
            log_events = sorted(
                ({"timestamp": e["_aws"]["Timestamp"], "message": json.dumps(e)} for e in events),
                key=lambda e: e["timestamp"],
            )
            for chunk in _chunks(log_events):
                await self.run_blocking(self._put, group, stream, chunk)

    def _put(self, group: str, stream: str, events: list[dict]) -> None:
        client = self._client
        try:
            if (group, stream) not in self._known:
                call(lambda: _ensure_stream(client, group, stream), f"{group}/{stream}")
                self._known.add((group, stream))
            put = functools.partial(
                client.put_log_events, logGroupName=group, logStreamName=stream, logEvents=events
            )
            call(put, f"PutLogEvents {group}/{stream}", _RETRYABLE_CODES)
        except ConsumerError:
            self._known.discard((group, stream))  # checked again on the next attempt
            raise


def _ensure_stream(client: Any, group: str, stream: str) -> None:
    """Create the log group and stream unless they exist."""
    for create, kwargs in (
        (client.create_log_group, {"logGroupName": group}),
        (client.create_log_stream, {"logGroupName": group, "logStreamName": stream}),
    ):
        with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
            create(**kwargs)


def _chunks(events: list[dict]) -> list[list[dict]]:
    """PutLogEvents-sized runs of `events`."""
    chunks: list[list[dict]] = [[]]
    size = 0
    for event in events:
        cost = len(event["message"].encode()) + _EVENT_OVERHEAD
        if chunks[-1] and (len(chunks[-1]) >= MAX_EVENTS or size + cost > MAX_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += cost
    return [chunk for chunk in chunks if chunk]


factory = Factory(
    kind=Kind.EXPORTER,
    type="awsemf",
    config=Config,
    create=EmfExporter,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Writes metrics as CloudWatch embedded metric format (CloudWatch Logs, stdout).",
)
