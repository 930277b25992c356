"""coldstart processor: tags the entry spans of AWS Lambda and ECS/Fargate services that paid a
cold start.

Entry spans are the spans where a request enters a process (collector.core.pdata.is_entry_span):
kind SERVER or CONSUMER, or no parent span. Other spans are left untouched. A resource is Lambda
when `cloud.platform` is `aws_lambda` or it has a `faas.*` attribute, ECS/Fargate when
`cloud.platform` is `aws_ecs` or it has an `aws.ecs.*` attribute; other resources pass through
untouched.

Each judged entry span gets `coldtail.cold_start` (bool) and `coldtail.cold_start.source`;
Lambda spans also get `faas.coldstart` when they lack it. The judgement comes from, in order of
trust:

1. `instrumentation`: the span carries `faas.coldstart` or `coldtail.cold_start` (a bool, or the
   string "true" / "false").
2. `telemetry_api`: a Lambda init report (see `InitReports`) was recorded for the span's
   execution environment and this is the first entry span of that environment the processor
   sees. A report for an environment the processor already saw arrived after its cold span had
   been forwarded; it is discarded.
3. `inferred`: the first entry span of an execution environment new to the processor is cold, the
   later ones are warm; for ECS the first `container.first_requests` entry spans are cold.

An execution environment is one Lambda execution environment or one container process, named by
`service.name` and the first resource attribute present of: Lambda `faas.instance`,
`service.instance.id`, `host.id`; ECS `aws.ecs.task.arn`, `service.instance.id`, `container.id`.
Without any of these only instrumentation judges.

Late start: a collector that starts after an environment did (a gateway restarted) cannot know
whether it sees the environment's first requests. The environment's start is the resource's
`process.creation.time` (ISO 8601), or else the start of the first entry span seen from it. When
that is earlier than the collector's start minus `startup_grace`, the environment's first
requests (the ones that would be inferred cold) get no `coldtail.cold_start` and no source at
all; later ones are warm as usual. Without `process.creation.time`, an old environment whose
first span after the restart also started after it is still inferred cold.

Provisioned concurrency, SnapStart and Lambda Managed Instances: when the init type
(`coldtail.init_type` on the span, from a report or init span, or on the resource; values like
AWS_LAMBDA_INITIALIZATION_TYPE: `on-demand`, `provisioned-concurrency`, `snap-start`,
`lambda-managed-instances`) says the init ran ahead of any request, the request is not a
user-facing cold start: `coldtail.cold_start` is false. The span's own
attribute wins over a report or init span, which win over the resource.

`coldtail.init_duration_ms` and `coldtail.init_type` are copied onto an entry span, when it lacks
them, from an init span of its trace in the same batch: a span named `init`, or a span with no
parent, of kind other than SERVER or CONSUMER, carrying `coldtail.init_type`. Init spans are never
judged as requests. A joined report's values replace the span's own: Lambda measures the whole
init phase, extensions included, which instrumentation inside the function cannot see.

A span that already carries `coldtail.cold_start.source` was judged upstream (by instrumentation
or another coldtail) and keeps its judgement; only a joined report's init values are applied.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field

from collector.awslambda.init_reports import (
    AHEAD_OF_REQUESTS,
    InitReport,
    InitReports,
    normalize_init_type,
)
from collector.core.attributes import (
    COLD_START,
    COLD_START_SOURCE,
    FAAS_COLDSTART,
    FAAS_INVOCATION_ID,
    INIT_DURATION_MS,
    INIT_TYPE,
    SOURCE_INSTRUMENTATION,
)
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import ENTRY_KINDS, duration_ns, iso_time_ns
from collector.core.signals import Signal
from collector.processors.internal.base import Processor
from collector.processors.internal.by_resource import ByResource
from collector.processors.internal.entries import INIT_SPAN_NAME, marked_spans

INSTRUMENTATION = SOURCE_INSTRUMENTATION
TELEMETRY_API = "telemetry_api"
INFERRED = "inferred"
SOURCES = (INSTRUMENTATION, TELEMETRY_API, INFERRED)

_SPAN_KEYS = frozenset(
    {FAAS_COLDSTART, COLD_START, COLD_START_SOURCE, INIT_TYPE, INIT_DURATION_MS, FAAS_INVOCATION_ID}
)

_LAMBDA = "lambda"
_ECS = "ecs"
_ENVIRONMENT_KEYS = {
    _LAMBDA: ("faas.instance", "service.instance.id", "host.id"),
    _ECS: ("aws.ecs.task.arn", "service.instance.id", "container.id"),
}
_PLATFORM_PREFIXES = ("faas.", "aws.ecs.")
_RESOURCE_KEYS = frozenset(
    {
        "cloud.platform",
        "service.name",
        "process.creation.time",
        INIT_TYPE,
        *_ENVIRONMENT_KEYS[_LAMBDA],
        *_ENVIRONMENT_KEYS[_ECS],
    }
)


class ContainerConfig(ComponentConfig):
    first_requests: int = Field(1, ge=1)
    """How many entry spans per ECS/Fargate execution environment (per service in a task: keyed
    by aws.ecs.task.arn, else service.instance.id or container.id) are inferred cold, counted from
    the first one the processor sees: a container's first requests often wait for lazy imports,
    connection pools and warming caches. Default 1."""


class Config(ComponentConfig):
    container: ContainerConfig = Field(default_factory=ContainerConfig)
    """ECS/Fargate cold start inference."""

    max_environments: int = Field(100_000, ge=1)
    """Most execution environments remembered for inference; the least recently seen one is
    forgotten first (its next span would be inferred cold). Default 100000."""

    environment_ttl: Duration = Field(7200.0, ge=0)
    """An environment with no entry span for this long is forgotten, like 2h. Lambda execution
    environments live a few hours at most. Default 2h; 0 means never (only max_environments
    bounds the state)."""

    startup_grace: Duration = Field(10.0, ge=0)
    """How long before the collector's start an environment may have started and still have its
    first requests inferred, like 10s: covers a sidecar collector starting a little after its
    application. An environment that started earlier (by the resource's process.creation.time,
    else its first entry span's start) may have served requests the collector never saw: its
    first requests get no coldtail.cold_start. Default 10s; 0 means no grace."""


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["processor", "pipeline"]
        self.environments = Gauge(
            "otelcol_processor_coldstart_environments",
            "Execution environments tracked for cold start inference.",
            labels,
            registry=registry,
        )
        self.evictions = Counter(
            "otelcol_processor_coldstart_evictions",
            "Execution environments forgotten, by reason (lru: over max_environments, ttl: idle "
            "longer than environment_ttl).",
            [*labels, "reason"],
            registry=registry,
        )
        self.cold_starts = Counter(
            "otelcol_processor_coldstart_cold_starts",
            "Entry spans tagged as cold starts, by source.",
            [*labels, "source"],
            registry=registry,
        )


class _Resource(NamedTuple):
    """What the processor needs from one resource, read once per ResourceSpans."""

    platform: str
    key: tuple[str, str] | None  # (service.name, environment id)
    window: int  # entry spans per environment that are cold
    start_ns: int | None  # process.creation.time
    init_type: str | None


class _Environment:
    __slots__ = ("first_cold", "last_seen", "seen")

    def __init__(self, first_cold: bool | None) -> None:
        # True, or None when the environment predates the collector and can't be judged.
        self.first_cold = first_cold
        self.seen = 0  # entry spans seen, counted up to the cold window only
        self.last_seen = 0.0


def _flag(value: AnyValue) -> bool | None:
    kind = value.WhichOneof("value")
    if kind == "bool_value":
        return value.bool_value
    if kind == "string_value":
        text = value.string_value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
    return None


def _instrumented(found: dict) -> bool | None:
    for key in (FAAS_COLDSTART, COLD_START):
        kv = found.get(key)
        if kv is not None:
            flag = _flag(kv.value)
            if flag is not None:
                return flag
    return None


def _scan(attrs) -> dict:
    """The KeyValues of the span attributes this processor reads or writes, in one pass."""
    return {kv.key: kv for kv in attrs if kv.key in _SPAN_KEYS}


def _value(attrs, found: dict, key: str) -> AnyValue:
    """The value of span attribute `key`, added when the span lacks it."""
    kv = found.get(key)
    if kv is None:
        kv = attrs.add()
        kv.key = key
    return kv.value


@functools.cache
def _tags(cold: bool, source: str, with_cold_start: bool, with_faas: bool) -> bytes:
    """A serialized Span holding only the tags to add. Merging it into a span appends them to its
    attributes in one call, several times faster than adding them one by one."""
    span = Span()
    if with_cold_start:
        span.attributes.add(key=COLD_START).value.bool_value = cold
    span.attributes.add(key=COLD_START_SOURCE).value.string_value = source
    if with_faas:
        span.attributes.add(key=FAAS_COLDSTART).value.bool_value = cold
    return span.SerializeToString()


def _init_of(span: Span, found: dict) -> InitReport:
    kv = found.get(INIT_TYPE)
    init_type = normalize_init_type(kv.value.string_value) if kv is not None else None
    return InitReport(duration_ns(span) / 1e6, init_type)


class ColdStartProcessor(Processor):
    mutates_data = True
    attributes_only = True
    marked_spans_only = True

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        next: Consumer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, config, signal, next)
        # Wall-clock seconds; drives the late-start rule and environment_ttl.
        self.clock = clock
        self.reports = settings.shared.get(InitReports)
        self.environments: OrderedDict[tuple[str, str], _Environment] = OrderedDict()
        self._judgeable_from_ns = int((clock() - config.startup_grace) * 1e9)
        metrics = settings.telemetry.metric_set(_Metrics)
        labels = {"processor": str(settings.id), "pipeline": settings.pipeline}
        self._tracked = metrics.environments.labels(**labels)
        self._evicted_lru = metrics.evictions.labels(**labels, reason="lru")
        self._evicted_ttl = metrics.evictions.labels(**labels, reason="ttl")
        self._cold_starts = {s: metrics.cold_starts.labels(**labels, source=s) for s in SOURCES}
        self._lru_evictions = 0  # since the last batch ended
        self._resource = ByResource(self._classify)

    def process(self, batch):
        now = self.clock()
        self._expire(now)
        inits: dict[bytes, InitReport] = {}
        entries = []
        # Init spans are collected first so that an entry span judged before its trace's init
        # span in batch order still gets the init duration and type.
        for rs, spans in marked_spans(batch):
            if not spans:
                continue
            resource = self._resource(rs.resource)
            if resource is None:
                continue
            for span in spans:
                if span.name == INIT_SPAN_NAME:
                    inits[span.trace_id] = _init_of(span, _scan(span.attributes))
                else:
                    found = _scan(span.attributes)
                    if INIT_TYPE in found and span.kind not in ENTRY_KINDS:
                        inits[span.trace_id] = _init_of(span, found)
                    else:
                        entries.append((span, found, resource))
        # Metrics are updated once per batch: a batch from a fleet starting up is all cold.
        cold_starts = dict.fromkeys(SOURCES, 0)
        for span, found, resource in entries:
            init = inits.get(span.trace_id) if inits else None
            source = self._judge(span, found, resource, init, now)
            if source is not None:
                cold_starts[source] += 1
        for source, count in cold_starts.items():
            if count:
                self._cold_starts[source].inc(count)
        if self._lru_evictions:
            self._evicted_lru.inc(self._lru_evictions)
            self._lru_evictions = 0
        self._tracked.set(len(self.environments))
        return batch

    def _classify(self, resource) -> _Resource | None:
        """None for a resource that is neither Lambda nor ECS."""
        values: dict[str, AnyValue] = {}
        faas = ecs = False
        for kv in resource.attributes:
            key = kv.key
            if key in _RESOURCE_KEYS:
                values[key] = kv.value
            if key.startswith(_PLATFORM_PREFIXES):
                if key.startswith("faas."):
                    faas = True
                else:
                    ecs = True
        cloud = values.get("cloud.platform")
        cloud_platform = cloud.string_value if cloud is not None else ""
        if cloud_platform == "aws_lambda" or faas:
            platform, window = _LAMBDA, 1
        elif cloud_platform == "aws_ecs" or ecs:
            platform, window = _ECS, self.config.container.first_requests
        else:
            return None
        key = None
        for name in _ENVIRONMENT_KEYS[platform]:
            value = values.get(name)
            if value is not None and value.string_value:
                service = values.get("service.name")
                key = (service.string_value if service is not None else "", value.string_value)
                break
        created = values.get("process.creation.time")
        init_type = values.get(INIT_TYPE)
        return _Resource(
            platform,
            key,
            window,
            iso_time_ns(created.string_value) if created is not None else None,
            normalize_init_type(init_type.string_value) if init_type is not None else None,
        )

    def _expire(self, now: float) -> None:
        ttl = self.config.environment_ttl
        if not ttl:
            return
        deadline = now - ttl
        environments = self.environments
        while environments:
            key, state = next(iter(environments.items()))
            if state.last_seen > deadline:
                return
            del environments[key]
            self._evicted_ttl.inc()

    def _visit(
        self, key: tuple[str, str], span: Span, resource: _Resource, now: float
    ) -> tuple[int, bool | None]:
        """(entry spans seen before this one, up to the cold window; the cold verdict for the
        window) of the span's environment `key`, which becomes the most recently seen."""
        environments = self.environments
        state = environments.get(key)
        if state is None:
            started = resource.start_ns
            if started is None:
                started = span.start_time_unix_nano
            state = _Environment(True if started >= self._judgeable_from_ns else None)
            environments[key] = state
            if len(environments) > self.config.max_environments:
                environments.popitem(last=False)
                self._lru_evictions += 1
        else:
            environments.move_to_end(key)
        state.last_seen = now
        position = state.seen
        if position < resource.window:
            state.seen = position + 1
        return position, state.first_cold

    def _judge(
        self, span: Span, found: dict, resource: _Resource, init: InitReport | None, now: float
    ) -> str | None:
        """Tag one entry span; the source when it was tagged cold."""
        position = first_cold = report = None
        invocation = found.get(FAAS_INVOCATION_ID)
        invocation_id = invocation.value.string_value if invocation is not None else ""
        if resource.key is not None:
            position, first_cold = self._visit(resource.key, span, resource, now)
            if self.reports:
                report = self.reports.take(resource.key[1], invocation_id)
                if position != 0:
                    report = None  # too late: this environment's cold span is already gone
        elif invocation_id and self.reports:
            report = self.reports.take("", invocation_id)
        if COLD_START_SOURCE in found:
            if report is not None:
                _set_init(span, found, report, replace=True)
            return None

        cold, source = _instrumented(found), INSTRUMENTATION
        if cold is None:
            if report is not None:
                cold, source = True, TELEMETRY_API
            elif position is not None:
                cold, source = (first_cold if position < resource.window else False), INFERRED

        if init is None:
            init = report
        init_type = resource.init_type
        if init is not None and init.init_type is not None:
            init_type = init.init_type
        kv = found.get(INIT_TYPE)
        if kv is not None:
            init_type = normalize_init_type(kv.value.string_value)
        if cold and init_type in AHEAD_OF_REQUESTS:
            cold = False

        if cold is not None:
            kv = found.get(COLD_START)
            if kv is not None:
                kv.value.bool_value = cold
            with_faas = resource.platform == _LAMBDA and FAAS_COLDSTART not in found
            span.MergeFromString(_tags(cold, source, kv is None, with_faas))
        if init is not None:
            _set_init(span, found, init, replace=init is report)
        return source if cold else None


def _set_init(span: Span, found: dict, init: InitReport, replace: bool) -> None:
    """Copy the init's type and duration onto `span`, over its own values when `replace`."""
    attrs = span.attributes
    if init.init_type is not None and (replace or INIT_TYPE not in found):
        _value(attrs, found, INIT_TYPE).string_value = init.init_type
    if replace or INIT_DURATION_MS not in found:
        _value(attrs, found, INIT_DURATION_MS).double_value = init.init_duration_ms


factory = Factory(
    kind=Kind.PROCESSOR,
    type="coldstart",
    config=Config,
    create=ColdStartProcessor,
    signals={Signal.TRACES: Stability.ALPHA},
    description=(
        "Tags entry spans (kind SERVER or CONSUMER, or no parent) of AWS Lambda and ECS/Fargate "
        "resources with whether they paid a cold start (coldtail.cold_start, "
        "coldtail.cold_start.source, faas.coldstart), from instrumentation, Lambda Telemetry API "
        "init reports, or the first requests of each execution environment; provisioned "
        "concurrency and SnapStart inits are not cold starts. Adds coldtail.init_type and "
        "coldtail.init_duration_ms when known."
    ),
)
