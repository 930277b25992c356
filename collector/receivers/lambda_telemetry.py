"""The `lambda_telemetry` receiver: the AWS Lambda Telemetry API (2022-07-01, event schema
2022-12-13) as spans, FaaS metrics, logs and init reports for the coldstart processor.

It is an HTTP listener to which Lambda POSTs JSON arrays of events once the Lambda extension
has subscribed it (collector.awslambda.extension, which subscribes with the destination Lambda
requires, `http://sandbox.localdomain:PORT`). Each delivered array is handled in one go and answered
200 once its data has been pushed into the pipelines, so after a POST returns its data is in the
pipelines. A pipeline refusal is counted and logged, not answered: redelivery would count the
events twice.

Execution environment. Each execution environment runs its own extension, so one receiver
serves one environment, named by its log stream name: the `faas.instance` that instrumentation
puts on the function's spans. Lambda gives functions, but not extensions,
AWS_LAMBDA_LOG_STREAM_NAME; `faas_instance` names it when it is known. Otherwise init reports
are recorded unnamed, which the coldstart processor joins to the next new environment: right
for an extension, which serves exactly one.

Init reports. `platform.initReport` (init type from the record, else from the last
`platform.initStart`) and `platform.restoreReport` (SnapStart, init type `snap-start`) are
recorded in the service's init report store (`collector.awslambda.init_reports`),
keyed by `faas_instance`; the coldstart processor joins them to the environment's first entry
span. Lambda buffers events for up to `buffering.timeout_ms` before delivery: the
default is the least Lambda allows (25 ms), so that the report is recorded before the first
request's spans reach the coldstart processor, and the extension waits for telemetry already
due before it flushes the pipeline ahead of a freeze.

Synthetic spans. A `platform.runtimeDone` with status `timeout` or `failure` (the runtime was
killed or crashed), or such a `platform.report` of an invocation whose runtimeDone never came
(a runtime that died mid-invocation may not get one), becomes an invocation span, because the
function's own span can never have been exported after the handler; at most the
instrumentation's timeout warning snapshot was.
Status `error` (the handler raised) does not: the instrumentation exported that span. The span
is kind SERVER, named after the function, with `faas.invocation_id`, `coldtail.synthetic=true`,
`coldtail.timeout=true` for a timeout, `error.type` from the record's errorType, and status
ERROR with the status as message. It runs from the request's `platform.start` for the
event's durationMs. Its trace id and parent come from the X-Ray trace header in
`tracing`, else the trace id is random. Its span id is derived from the request id alone
(`synthetic_span_id`: the first 8 bytes of SHA-256 of the UTF-8 request id), so every producer
using the same derivation names the same span, and duplicates can be dropped by span id.

FaaS metrics (semantic conventions, cumulative since the receiver was created, no data point
attributes; faas.trigger is not known here). From `platform.report`: faas.invocations (status
success or absent), faas.errors (status error or failure), faas.timeouts, faas.invoke_duration
(durationMs, in s), faas.mem_usage (maxMemoryUsedMB, in By). From `platform.initReport` and
`platform.restoreReport`: faas.init_duration (in s) and faas.coldstarts (on-demand inits only:
provisioned concurrency and SnapStart inits run before any request, as the coldstart processor
judges them). All seven are emitted after each delivery that changed them.

Logs. `function` and `extension` events become log records: a text record is the body (severity
from a leading `[LEVEL]`), a JSON-format record is the body as a map (severity from its `level`,
`faas.invocation_id` from its `requestId`). Every `platform.*` event becomes a log record too,
with the event type as event name (and `event.name` attribute) and the record as body: severity
ERROR for a failure, error or timeout status, WARN for `platform.logsDropped`, else INFO.

Spans, metrics and logs carry the function's resource, built as the instrumentation builds it:
service.name (OTEL_SERVICE_NAME, else the function name), cloud.provider, cloud.platform,
cloud.region (AWS_REGION), faas.name (AWS_LAMBDA_FUNCTION_NAME), faas.version
(AWS_LAMBDA_FUNCTION_VERSION), faas.max_memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE, in bytes),
faas.instance; then the configured `resource` over them.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import Field, field_validator

from collector.awslambda.init_reports import (
    ON_DEMAND,
    SNAP_START,
    UNNAMED,
    InitReports,
    normalize_init_type,
)
from collector.core.attributes import FAAS_INVOCATION_ID, SYNTHETIC, TIMEOUT
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.consumer import Consumer
from collector.core.endpoints import split_endpoint, with_port
from collector.core.pdata import (
    Metrics,
    build_batch,
    count_items,
    iso_time_ns,
    python_to_any_value,
    set_attr,
)
from collector.core.signals import Signal

# The instrumentation scope of everything this receiver makes.
SCOPE_NAME = "coldtail/lambda_telemetry"


_MIB = 1024 * 1024
_DEFAULT_MAX_REQUEST_BODY_SIZE = 4 * _MIB
# Requests whose platform.start is waiting for its runtimeDone; a runtimeDone lost in transit
# must not grow the map forever.
_MAX_PENDING_STARTS = 1000
_SHUTDOWN_GRACE_S = 2.0

_TIMEOUT = "timeout"
# The runtime was killed or crashed: the function could not export its invocation span.
_SPAN_LOST = frozenset({_TIMEOUT, "failure"})
_ERRORS = frozenset({"error", "failure"})

# Semantic convention boundaries for faas.invoke_duration, in s.
# fmt: off
_INVOKE_DURATION_BOUNDS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
)
# fmt: on
# Inits take from tens of milliseconds to Lambda's 10 s limit for on-demand inits.
_INIT_DURATION_BOUNDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10)
# Lambda memory sizes run from 128 MiB to 10240 MiB.
_MEM_USAGE_BOUNDS = tuple(
    mib * _MIB for mib in (32, 64, 128, 256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 10240)
)

_XRAY_ROOT = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_XRAY_PARENT = re.compile(r"[0-9a-fA-F]{16}")
_TEXT_LEVEL = re.compile(r"\[([A-Za-z]+)\]")
_SEVERITIES = {
    "TRACE": SeverityNumber.SEVERITY_NUMBER_TRACE,
    "DEBUG": SeverityNumber.SEVERITY_NUMBER_DEBUG,
    "INFO": SeverityNumber.SEVERITY_NUMBER_INFO,
    "WARN": SeverityNumber.SEVERITY_NUMBER_WARN,
    "WARNING": SeverityNumber.SEVERITY_NUMBER_WARN,
    "ERROR": SeverityNumber.SEVERITY_NUMBER_ERROR,
    "FATAL": SeverityNumber.SEVERITY_NUMBER_FATAL,
    "CRITICAL": SeverityNumber.SEVERITY_NUMBER_FATAL,
}


# --- config -----------------------------------------------------------------------------------


class BufferingConfig(ComponentConfig):
    max_items: int = Field(1000, ge=1000, le=10000)
    """Most events Lambda buffers before delivering them (subscription maxItems). Default 1000,
    Lambda's default; Lambda allows 1000 to 10000."""

    max_bytes: int = Field(262144, ge=262144, le=1048576)
    """Most bytes of events Lambda buffers before delivering them (subscription maxBytes).
    Default 262144 (256 KiB), Lambda's default; Lambda allows 262144 to 1048576."""

    timeout_ms: int = Field(25, ge=25, le=30000)
    """Longest time, in milliseconds, Lambda buffers events before delivering them (subscription
    timeoutMs). Default 25, the least Lambda allows (its own default is 1000), so that init
    reports arrive before the first request's spans pass the coldstart processor; Lambda allows
    25 to 30000."""


class Config(ComponentConfig):
    endpoint: ListenEndpoint = Field(default_factory=lambda: default_endpoint(os.environ))
    """host:port to listen on for Telemetry API deliveries. Default: inside Lambda (where
    AWS_LAMBDA_RUNTIME_API is set) sandbox.localdomain:4325, since Lambda delivers only to
    http://sandbox.localdomain:PORT; elsewhere 127.0.0.1:4325 (local only). Port 0 picks a free
    port."""

    max_request_body_size: int = Field(_DEFAULT_MAX_REQUEST_BODY_SIZE, gt=0)
    """Largest delivery accepted, in bytes; larger ones get 413. Default 4194304 (4 MiB), four
    times the most Lambda buffers."""

    types: list[Literal["platform", "function", "extension"]] = Field(
        ["platform", "function"], min_length=1
    )
    """Telemetry streams to subscribe to: platform (lifecycle events, reports), function (the
    function's logs), extension (extensions' logs). Default [platform, function]: extension
    logs would include this collector's own, which then loop through it."""

    buffering: BufferingConfig = Field(default_factory=BufferingConfig)
    """How Lambda buffers events before each delivery (the subscription's buffering)."""

    faas_instance: str = ""
    """The execution environment's id: its log stream name, as the function's spans carry it in
    faas.instance. Init reports are recorded under it for the coldstart processor, and it is
    faas.instance on everything this receiver makes. Default: empty, meaning
    AWS_LAMBDA_LOG_STREAM_NAME, which Lambda sets for functions but not for extensions; while
    both are empty, init reports go to the next new environment the coldstart processor sees
    (an extension serves one), and nothing this receiver makes carries faas.instance."""

    resource: dict[str, str | int | float | bool] = {}
    """Resource attributes set over the ones detected from the environment (service.name,
    cloud.*, faas.name, faas.version, faas.max_memory), like service.name: checkout. Default:
    empty, the detected ones only. faas.instance is set by faas_instance."""

    @field_validator("types")
    @classmethod
    def _distinct_types(cls, types: list[str]) -> list[str]:
        if len(set(types)) != len(types):
            raise ValueError(f"types must not repeat, got {types}")
        return types

    @field_validator("resource")
    @classmethod
    def _no_instance(cls, resource: dict) -> dict:
        if "faas.instance" in resource:
            raise ValueError("set faas.instance with faas_instance, not in resource")
        return resource


# --- helpers ----------------------------------------------------------------------------------


def default_endpoint(environ: Mapping[str, str]) -> str:
    """Where the receiver listens unless configured: in Lambda, the name Lambda delivers to."""
    host = "sandbox.localdomain" if environ.get("AWS_LAMBDA_RUNTIME_API") else "127.0.0.1"
    return f"{host}:4325"


def synthetic_span_id(request_id: str) -> bytes:
    """The span id of the synthetic invocation span of `request_id`: the first 8 bytes of the
    SHA-256 of its UTF-8 encoding."""
    return hashlib.sha256(request_id.encode()).digest()[:8]


def environment_resource(environ: Mapping[str, str]) -> dict[str, Any]:
    """The function's resource attributes from Lambda's environment variables, as the
    instrumentation detects them (faas.instance aside)."""
    function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
    memory_mib = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    attributes = {
        "service.name": environ.get("OTEL_SERVICE_NAME", "").strip()
        or function_name
        or "unknown_service",
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "cloud.region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        "faas.name": function_name,
        "faas.version": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "faas.max_memory": int(memory_mib) * _MIB if memory_mib.isdigit() else None,
    }
    return {key: value for key, value in attributes.items() if value is not None}


def _number(record: dict, *keys: str) -> float | None:
    """record[keys[0]][keys[1]]..., when it is a number."""
    value: Any = record
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _string(record: dict, key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _xray_ids(tracing: object) -> tuple[bytes, bytes]:
    """(trace id, parent span id) from a TraceContext of type X-Amzn-Trace-Id; empty bytes for
    what it does not hold."""
    if not isinstance(tracing, dict) or not isinstance(tracing.get("value"), str):
        return b"", b""
    trace_id = parent = b""
    for part in tracing["value"].split(";"):
        key, _, value = part.strip().partition("=")
        if key == "Root" and (root := _XRAY_ROOT.fullmatch(value)):
            trace_id = bytes.fromhex(root.group(1) + root.group(2))
        elif key == "Parent" and _XRAY_PARENT.fullmatch(value):
            parent = bytes.fromhex(value)
    return trace_id, parent


class _Histogram:
    """A cumulative explicit-bucket histogram; bucket i holds values in (bounds[i-1], bounds[i]]."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0

    def record(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value


class _FaasMetrics:
    """The FaaS metrics of one execution environment since `start_ns`."""

    _COUNTERS = (
        ("faas.invocations", "{invocation}", "Number of successful invocations"),
        ("faas.errors", "{error}", "Number of invocation errors"),
        ("faas.timeouts", "{timeout}", "Number of invocation timeouts"),
        ("faas.coldstarts", "{coldstart}", "Number of invocation cold starts"),
    )
    _HISTOGRAMS = (
        (
            "faas.invoke_duration",
            "s",
            "Measures the duration of the function's logic execution",
            _INVOKE_DURATION_BOUNDS,
        ),
        (
            "faas.init_duration",
            "s",
            "Measures the duration of the function's initialization, such as a cold start",
            _INIT_DURATION_BOUNDS,
        ),
        (
            "faas.mem_usage",
            "By",
            "Distribution of max memory usage per invocation",
            _MEM_USAGE_BOUNDS,
        ),
    )

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.counters = {name: 0 for name, _, _ in self._COUNTERS}
        self.histograms = {name: _Histogram(bounds) for name, _, _, bounds in self._HISTOGRAMS}
        self.changed = False

    def add(self, name: str) -> None:
        self.counters[name] += 1
        self.changed = True

    def record(self, name: str, value: float) -> None:
        self.histograms[name].record(value)
        self.changed = True

    def collect(self, resource: dict[str, Any], now_ns: int) -> Metrics:
        self.changed = False
        batch = Metrics()
        rm = batch.resource_metrics.add()
        for key, value in resource.items():
            set_attr(rm.resource.attributes, key, value)
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE_NAME
        cumulative = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        for name, unit, description in self._COUNTERS:
            metric = sm.metrics.add(name=name, unit=unit, description=description)
            metric.sum.is_monotonic = True
            metric.sum.aggregation_temporality = cumulative
            metric.sum.data_points.add(
                start_time_unix_nano=self.start_ns,
                time_unix_nano=now_ns,
                as_int=self.counters[name],
            )
        for name, unit, description, bounds in self._HISTOGRAMS:
            histogram = self.histograms[name]
            metric = sm.metrics.add(name=name, unit=unit, description=description)
            metric.histogram.aggregation_temporality = cumulative
            metric.histogram.data_points.add(
                start_time_unix_nano=self.start_ns,
                time_unix_nano=now_ns,
                count=histogram.count,
                sum=histogram.sum,
                bucket_counts=histogram.counts,
                explicit_bounds=bounds,
            )
        return batch


@dataclass(frozen=True, slots=True)
class _Start:
    time_ns: int
    tracing: object


class _Delivery:
    """What one delivered array of events turns into."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.log_records: list[LogRecord] = []


# --- the receiver -----------------------------------------------------------------------------


class LambdaTelemetryReceiver:
    """Serves the Telemetry API destination for the signals in `next`.

    After start, `endpoint` holds the bound "host:port". All state changes happen on the event
    loop."""

    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = dict(next)
        self.log = settings.logger
        self.endpoint: str | None = None
        self.faas_instance = config.faas_instance or os.environ.get(
            "AWS_LAMBDA_LOG_STREAM_NAME", ""
        )
        self._base_resource = {**environment_resource(os.environ), **config.resource}
        self._reports = settings.shared.get(InitReports)
        self._init_type = ON_DEMAND  # from the last platform.initStart
        self._starts: OrderedDict[str, _Start] = OrderedDict()
        # Request ids whose runtimeDone was seen: their report makes no second span.
        self._runtime_done: OrderedDict[str, None] = OrderedDict()
        self._metrics = _FaasMetrics(time.time_ns())
        self._runner: web.AppRunner | None = None
        telemetry, receiver = settings.telemetry, str(settings.id)
        self._counters = {
            signal: telemetry.receiver_counters(signal, receiver, "http") for signal in self.next
        }
        self._handlers = {
            "platform.initStart": self._on_init_start,
            "platform.initReport": self._on_init_report,
            "platform.restoreReport": self._on_restore_report,
            "platform.start": self._on_start,
            "platform.runtimeDone": self._on_runtime_done,
            "platform.report": self._on_report,
        }

    async def start(self, host: Host) -> None:
        app = web.Application(client_max_size=self.config.max_request_body_size)
        app.router.add_post("/", self._deliver)
        runner = self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=_SHUTDOWN_GRACE_S
        )
        try:
            await runner.setup()
            host_name, port = split_endpoint(self.config.endpoint)
            await web.TCPSite(runner, host_name, port).start()
        except BaseException:
            await self.shutdown()
            raise
        self.endpoint = with_port(self.config.endpoint, runner.addresses[0][1])
        self.log.info("Telemetry API listening", extra={"kv": {"endpoint": self.endpoint}})

    async def shutdown(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # --- delivery -----------------------------------------------------------------------------

    async def _deliver(self, request: web.Request) -> web.Response:
        try:
            events = json.loads(await request.read())
        except (ValueError, RecursionError) as e:
            return web.Response(status=400, text=f"invalid JSON: {e}")
        if not isinstance(events, list):
            return web.Response(status=400, text="expected a JSON array of Telemetry API events")
        delivery = _Delivery()
        for event in events:
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                self._handle(event, delivery)
        resource = self._resource()
        if delivery.spans and Signal.TRACES in self.next:
            await self._push(
                Signal.TRACES, build_batch(Signal.TRACES, resource, SCOPE_NAME, delivery.spans)
            )
        if self._metrics.changed and Signal.METRICS in self.next:
            await self._push(Signal.METRICS, self._metrics.collect(resource, time.time_ns()))
        if delivery.log_records:
            await self._push(
                Signal.LOGS, build_batch(Signal.LOGS, resource, SCOPE_NAME, delivery.log_records)
            )
        return web.Response()

    def _handle(self, event: dict, delivery: _Delivery) -> None:
        event_type = event["type"]
        record = event.get("record")
        time_ns = iso_time_ns(event.get("time")) or time.time_ns()
        handler = self._handlers.get(event_type)
        if handler is not None and isinstance(record, dict):
            handler(time_ns, record, delivery)
        if Signal.LOGS in self.next:
            delivery.log_records.append(_log_record(event_type, time_ns, record))

    async def _push(self, signal: Signal, batch) -> None:
        items = count_items(batch)
        accepted, refused = self._counters[signal]
        try:
            await self.next[signal].consume(batch)
        except Exception as e:
            refused.inc(items)
            self.log.warning(
                "Telemetry API data refused by the pipeline",
                extra={"kv": {"signal": signal.value, "items": items, "error": repr(e)}},
            )
            return
        accepted.inc(items)

    # --- events -------------------------------------------------------------------------------

    def _on_init_start(self, _time_ns: int, record: dict, _delivery: _Delivery) -> None:
        self._init_type = normalize_init_type(_string(record, "initializationType") or ON_DEMAND)

    def _on_init_report(self, _time_ns: int, record: dict, _delivery: _Delivery) -> None:
        duration_ms = _number(record, "metrics", "durationMs")
        init_type = _string(record, "initializationType")
        if duration_ms is not None:
            self._record_init(
                duration_ms, normalize_init_type(init_type) if init_type else self._init_type
            )

    def _on_restore_report(self, _time_ns: int, record: dict, _delivery: _Delivery) -> None:
        duration_ms = _number(record, "metrics", "durationMs")
        if duration_ms is not None:
            self._record_init(duration_ms, SNAP_START)

    def _record_init(self, duration_ms: float, init_type: str) -> None:
        self._metrics.record("faas.init_duration", duration_ms / 1e3)
        if init_type == ON_DEMAND:
            self._metrics.add("faas.coldstarts")
        self._reports.record(self.faas_instance or UNNAMED, duration_ms, init_type)

    def _on_start(self, time_ns: int, record: dict, _delivery: _Delivery) -> None:
        request_id = _string(record, "requestId")
        if request_id:
            self._reports.first_invocation(request_id)
            self._starts[request_id] = _Start(time_ns, record.get("tracing"))
            if len(self._starts) > _MAX_PENDING_STARTS:
                self._starts.popitem(last=False)

    def _on_runtime_done(self, time_ns: int, record: dict, delivery: _Delivery) -> None:
        request_id = _string(record, "requestId")
        if request_id:
            self._runtime_done[request_id] = None
            if len(self._runtime_done) > _MAX_PENDING_STARTS:
                self._runtime_done.popitem(last=False)
        self._span_if_lost(time_ns, record, delivery)

    def _span_if_lost(self, time_ns: int, record: dict, delivery: _Delivery) -> None:
        request_id = _string(record, "requestId")
        start = self._starts.pop(request_id, None)
        status = _string(record, "status")
        if request_id and status in _SPAN_LOST and Signal.TRACES in self.next:
            delivery.spans.append(self._synthetic_span(request_id, status, time_ns, record, start))

    def _on_report(self, time_ns: int, record: dict, delivery: _Delivery) -> None:
        if _string(record, "requestId") not in self._runtime_done:
            # Lambda may end an invocation whose runtime died without a runtimeDone.
            self._span_if_lost(time_ns, record, delivery)
        status = _string(record, "status") or "success"
        if status == _TIMEOUT:
            self._metrics.add("faas.timeouts")
        elif status in _ERRORS:
            self._metrics.add("faas.errors")
        else:
            self._metrics.add("faas.invocations")
        duration_ms = _number(record, "metrics", "durationMs")
        if duration_ms is not None:
            self._metrics.record("faas.invoke_duration", duration_ms / 1e3)
        memory_mib = _number(record, "metrics", "maxMemoryUsedMB")
        if memory_mib is not None:
            self._metrics.record("faas.mem_usage", memory_mib * _MIB)

    # --- output -------------------------------------------------------------------------------

    def _resource(self) -> dict[str, Any]:
        if not self.faas_instance:
            return self._base_resource
        return {**self._base_resource, "faas.instance": self.faas_instance}

    def _synthetic_span(
        self, request_id: str, status: str, done_ns: int, record: dict, start: _Start | None
    ) -> Span:
        tracing = record.get("tracing") or (start.tracing if start else None)
        trace_id, parent_span_id = _xray_ids(tracing)
        duration_ms = _number(record, "metrics", "durationMs")
        duration_ns = None if duration_ms is None else int(duration_ms * 1e6)
        if start is not None:
            start_ns = start.time_ns
            end_ns = done_ns if duration_ns is None else start_ns + duration_ns
        else:
            start_ns = done_ns - (duration_ns or 0)
            end_ns = done_ns
        span = Span(
            trace_id=trace_id or secrets.token_bytes(16),
            span_id=synthetic_span_id(request_id),
            parent_span_id=parent_span_id,
            name=str(self._base_resource.get("faas.name") or "invocation"),
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start_ns,
            end_time_unix_nano=end_ns,
            status=Status(code=Status.STATUS_CODE_ERROR, message=status),
        )
        set_attr(span.attributes, FAAS_INVOCATION_ID, request_id)
        set_attr(span.attributes, SYNTHETIC, True)
        if status == _TIMEOUT:
            set_attr(span.attributes, TIMEOUT, True)
        error_type = _string(record, "errorType")
        if error_type:
            set_attr(span.attributes, "error.type", error_type)
        return span


def _log_record(event_type: str, time_ns: int, record: object) -> LogRecord:
    log_record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time.time_ns())
    if record is not None:
        python_to_any_value(record, log_record.body)
    if event_type.startswith("platform."):
        log_record.event_name = event_type
        set_attr(log_record.attributes, "event.name", event_type)
        level = _platform_level(event_type, record)
    elif isinstance(record, dict):
        level = _string(record, "level")
    else:
        match = _TEXT_LEVEL.match(record) if isinstance(record, str) else None
        level = match.group(1) if match else ""
    severity = _SEVERITIES.get(level.upper())
    if severity is not None:
        log_record.severity_number = severity
        log_record.severity_text = level.upper()
    if isinstance(record, dict) and (request_id := _string(record, "requestId")):
        set_attr(log_record.attributes, FAAS_INVOCATION_ID, request_id)
    return log_record


def _platform_level(event_type: str, record: object) -> str:
    if event_type == "platform.logsDropped":
        return "WARN"
    status = _string(record, "status") if isinstance(record, dict) else ""
    return "ERROR" if status in _SPAN_LOST | _ERRORS else "INFO"


factory = Factory(
    kind=Kind.RECEIVER,
    type="lambda_telemetry",
    config=Config,
    create=LambdaTelemetryReceiver,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description=(
        "AWS Lambda Telemetry API events as synthetic spans for lost invocations, FaaS metrics, "
        "logs, and init reports for the coldstart processor."
    ),
)
