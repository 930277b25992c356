"""The collector's own telemetry pushed over OTLP/HTTP, as `service::telemetry` configures it
in the OTel Collector's newer form:

    telemetry:
      metrics:
        readers:
          - periodic: {interval: 10000, exporter: {otlp: {protocol: http/protobuf, endpoint: http://mon:4318}}}
      logs:
        processors:
          - batch: {exporter: {otlp: {protocol: http/protobuf, endpoint: http://mon:4318}}}

An endpoint without a path gets the signal's (/v1/metrics, /v1/logs), as the OpenTelemetry SDKs
do. Metrics are the own metrics of /metrics (counters as monotonic sums, gauges, histograms),
logs the collector's log lines; both carry the telemetry resource. A push that fails is dropped
and said once on stderr (never through the logs it pushes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections import deque
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from prometheus_client import CollectorRegistry
from pydantic import Field, field_validator

from collector.core import tasks
from collector.core.config_types import ComponentConfig
from collector.core.pdata import Logs, Metrics, set_attr

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_SEVERITY = {
    logging.DEBUG: (SeverityNumber.SEVERITY_NUMBER_DEBUG, "DEBUG"),
    logging.INFO: (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO"),
    logging.WARNING: (SeverityNumber.SEVERITY_NUMBER_WARN, "WARN"),
    logging.ERROR: (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR"),
    logging.CRITICAL: (SeverityNumber.SEVERITY_NUMBER_FATAL, "FATAL"),
}
# The pushes' own failures go to stderr only, through this logger, which the log processors
# leave out: a backend that is down must not feed the logs sent to it.
_log = logging.getLogger("coldtail.telemetry.push")
# The last push at shutdown gives up after this long: a backend that is down must not hold the
# stop (Lambda gives an extension 2 s in all).
_FINAL_PUSH_S = 1.0


class OtlpPushExporter(ComponentConfig):
    protocol: Literal["http/protobuf", "grpc", "http/json"] = "http/protobuf"
    """http/protobuf (default). grpc and http/json are not supported for the own telemetry."""
    endpoint: str
    """The backend's URL, like http://monitoring:4318; without a path, /v1/metrics or /v1/logs
    is added. Required."""
    headers: dict[str, str] | list[dict[str, str]] = Field(default_factory=dict)
    """Request headers: a map, or a list of {name, value} as the declarative config writes
    them."""
    compression: Literal["gzip", "none", ""] = "gzip"
    """gzip (default) or none."""
    timeout: int = Field(10000, ge=0)
    """Time limit of one push in milliseconds (default 10000)."""
    insecure: bool = False
    """Accepted for compatibility: the endpoint's scheme decides."""

    @field_validator("protocol")
    @classmethod
    def _http_protobuf(cls, value: str) -> str:
        if value != "http/protobuf":
            raise ValueError(
                f"protocol {value}: the collector's own telemetry is pushed with http/protobuf"
            )
        return value

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"endpoint {value!r}: expected an http:// or https:// URL")
        return value

    def url(self, path: str) -> str:
        return (
            self.endpoint
            if urlsplit(self.endpoint).path.strip("/")
            else (self.endpoint.rstrip("/") + path)
        )

    def header_map(self) -> dict[str, str]:
        if isinstance(self.headers, dict):
            return dict(self.headers)
        return {h["name"]: h.get("value", "") for h in self.headers if "name" in h}


class PushExporter(ComponentConfig):
    otlp: OtlpPushExporter
    """OTLP over HTTP. Required."""


class PeriodicReader(ComponentConfig):
    interval: int = Field(60000, gt=0)
    """Milliseconds between pushes (default 60000)."""
    timeout: int = Field(30000, ge=0)
    """Accepted for compatibility; the exporter's timeout bounds each push."""
    exporter: PushExporter
    """Where the metrics go. Required."""


class BatchLogProcessor(ComponentConfig):
    exporter: PushExporter
    """Where the log records go. Required."""
    schedule_delay: int = Field(1000, gt=0)
    """Milliseconds between pushes (default 1000)."""
    max_queue_size: int = Field(2048, gt=0)
    """Most records held; older ones are dropped beyond it (default 2048)."""
    max_export_batch_size: int = Field(512, gt=0)
    """Most records in one push (default 512)."""
    export_timeout: int = Field(30000, ge=0)
    """Accepted for compatibility; the exporter's timeout bounds each push."""


class LogProcessor(ComponentConfig):
    batch: BatchLogProcessor
    """Batches records and pushes them every schedule_delay. Required."""


class _Pusher:
    """POSTs OTLP protobuf requests to one URL."""

    def __init__(self, config: OtlpPushExporter, path: str) -> None:
        self.config = config
        self.url = config.url(path)
        self.headers = {**config.header_map(), "Content-Type": "application/x-protobuf"}
        if config.compression == "gzip":
            self.headers["Content-Encoding"] = "gzip"
        self._failing = False

    async def send(self, session: aiohttp.ClientSession, body: bytes) -> None:
        if self.config.compression == "gzip":
            body = gzip.compress(body, compresslevel=6)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout / 1000 or None)
        try:
            async with session.post(
                self.url, data=body, headers=self.headers, timeout=timeout
            ) as response:
                if response.status // 100 != 2:
                    raise aiohttp.ClientError(f"HTTP {response.status}")
            if self._failing:
                self._failing = False
                _log.info("own telemetry pushed again", extra={"kv": {"url": self.url}})
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            if not self._failing:  # said once per outage
                self._failing = True
                _log.warning(
                    "own telemetry not pushed; dropped",
                    extra={"kv": {"url": self.url, "error": str(e) or type(e).__name__}},
                )


def metrics_request(registry: CollectorRegistry, resource: dict[str, str], start: int) -> Metrics:
    """The registry's metrics as one OTLP request; cumulative series start at `start` (ns)."""
    now = time.time_ns()
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for key, value in resource.items():
        set_attr(rm.resource.attributes, key, value)
    sm = rm.scope_metrics.add()
    sm.scope.name = "coldtail"
    for family in registry.collect():
        if family.type in ("counter", "gauge", "unknown"):
            _numbers(sm, family, now, start)
        elif family.type == "histogram":
            _histograms(sm, family, now, start)
    return batch


def _numbers(sm, family, now: int, start: int) -> None:
    counter = family.type == "counter"
    samples = [s for s in family.samples if not s.name.endswith("_created")]
    if not samples:
        return
    metric = sm.metrics.add()
    metric.name, metric.description = family.name, family.documentation
    if counter:
        metric.sum.aggregation_temporality, metric.sum.is_monotonic = _CUMULATIVE, True
    for sample in samples:
        point = metric.sum.data_points.add() if counter else metric.gauge.data_points.add()
        point.time_unix_nano, point.as_double = now, sample.value
        if counter:
            point.start_time_unix_nano = start
        for key, value in sample.labels.items():
            set_attr(point.attributes, key, value)


def _histograms(sm, family, now: int, start: int) -> None:
    series: dict[tuple, dict] = {}
    for sample in family.samples:
        labels = {k: v for k, v in sample.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), {"buckets": []})
        suffix = sample.name[len(family.name) :]
        if suffix == "_bucket":
            entry["buckets"].append((float(sample.labels["le"]), sample.value))
        elif suffix in ("_count", "_sum"):
            entry[suffix] = sample.value
    if not series:
        return
    metric = sm.metrics.add()
    metric.name, metric.description = family.name, family.documentation
    metric.histogram.aggregation_temporality = _CUMULATIVE
    for key, entry in series.items():
        point = metric.histogram.data_points.add()
        point.time_unix_nano, point.start_time_unix_nano = now, start
        point.count, point.sum = int(entry.get("_count", 0)), entry.get("_sum", 0.0)
        previous = 0.0
        for bound, cumulative in sorted(entry["buckets"]):
            point.bucket_counts.append(int(cumulative - previous))
            previous = cumulative
            if bound != float("inf"):
                point.explicit_bounds.append(bound)
        for name, value in key:
            set_attr(point.attributes, name, value)


class _LogBuffer(logging.Handler):
    """Keeps the collector's log records for the log processors, bounded."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.records: deque[logging.LogRecord] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_log.name):
            self.records.append(record)


def logs_request(records: list[logging.LogRecord], resource: dict[str, str]) -> Logs:
    batch = Logs()
    rl = batch.resource_logs.add()
    for key, value in resource.items():
        set_attr(rl.resource.attributes, key, value)
    sl = rl.scope_logs.add()
    sl.scope.name = "coldtail"
    for record in records:
        out = sl.log_records.add()
        out.time_unix_nano = int(record.created * 1e9)
        out.observed_time_unix_nano = time.time_ns()
        number, text = _SEVERITY.get(record.levelno, _SEVERITY[logging.INFO])
        out.severity_number, out.severity_text = number, text
        out.body.string_value = record.getMessage()
        set_attr(out.attributes, "code.namespace", record.name)
        for key, value in (getattr(record, "kv", None) or {}).items():
            set_attr(
                out.attributes,
                str(key),
                value if isinstance(value, bool | int | float) else str(value),
            )
    return batch


class TelemetryPush:
    """Runs the periodic metric readers and the batch log processors of one service."""

    def __init__(
        self,
        registry: CollectorRegistry,
        resource: dict[str, str],
        readers: list[PeriodicReader],
        processors: list[LogProcessor],
    ) -> None:
        self.registry = registry
        self.resource = resource
        self.readers = readers
        self.processors = processors
        self._start = time.time_ns()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._buffers: list[tuple[BatchLogProcessor, _Pusher, _LogBuffer]] = []

    async def start(self) -> None:
        if not self.readers and not self.processors:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": "coldtail"})
        for reader in self.readers:
            pusher = _Pusher(reader.exporter.otlp, "/v1/metrics")
            self._tasks.append(asyncio.create_task(self._metrics(reader, pusher)))
        root = logging.getLogger("coldtail")
        for processor in self.processors:
            batch = processor.batch
            buffer = _LogBuffer(batch.max_queue_size)
            root.addHandler(buffer)
            entry = (batch, _Pusher(batch.exporter.otlp, "/v1/logs"), buffer)
            self._buffers.append(entry)
            self._tasks.append(asyncio.create_task(self._logs(*entry)))

    async def _metrics(self, reader: PeriodicReader, pusher: _Pusher) -> None:
        while True:
            await asyncio.sleep(reader.interval / 1000)
            await self._push_metrics(pusher)

    async def _push_metrics(self, pusher: _Pusher) -> None:
        assert self._session is not None
        request = metrics_request(self.registry, self.resource, self._start)
        await pusher.send(self._session, request.SerializeToString())

    async def _logs(self, batch: BatchLogProcessor, pusher: _Pusher, buffer: _LogBuffer) -> None:
        while True:
            await asyncio.sleep(batch.schedule_delay / 1000)
            await self._push_logs(batch, pusher, buffer)

    async def _push_logs(
        self, batch: BatchLogProcessor, pusher: _Pusher, buffer: _LogBuffer
    ) -> None:
        assert self._session is not None
        while buffer.records:
            size = min(batch.max_export_batch_size, len(buffer.records))
            records = [buffer.records.popleft() for _ in range(size)]
            request = logs_request(records, self.resource)
            await pusher.send(self._session, request.SerializeToString())

    async def shutdown(self, limit: float = _FINAL_PUSH_S) -> None:
        """Push what is left once, within `limit` seconds, then stop."""
        await tasks.cancel(self._tasks)
        self._tasks.clear()
        if self._session is None:
            return
        root = logging.getLogger("coldtail")
        for _, _, buffer in self._buffers:
            root.removeHandler(buffer)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                for reader in self.readers:
                    await self._push_metrics(_Pusher(reader.exporter.otlp, "/v1/metrics"))
                for batch, pusher, buffer in self._buffers:
                    await self._push_logs(batch, pusher, buffer)
        self._buffers.clear()
        await self._session.close()
        self._session = None
