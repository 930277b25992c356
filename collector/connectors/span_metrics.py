"""span_metrics connector: request, error and duration (R.E.D.) metrics from spans, as the OTel
Collector's spanmetrics connector computes them.

Every span counts into the `calls` sum and the `duration` histogram of its series: one series per
distinct (service.name, span.name, span.kind, status.code, configured dimensions). Series are
cumulative (start time = when the series was first seen) and are sent to the metrics pipeline
every `metrics_flush_interval` and once more at shutdown.

Emitted metrics are grouped by resource key: the span resource's service.name plus the
`resource_metrics_key_attributes`; the emitted resource holds only those attributes, so resource
attributes that change per container (instance ids) do not multiply cumulative series. Spans whose
resource has no service.name are not counted, as in the Collector.

State is bounded: at most `resource_metrics_cache_size` resources (least recently seen evicted)
and, with `aggregation_cardinality_limit`, at most that many series per resource plus one
overflow series.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Annotated, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import ConfigDict, Field, field_validator, model_validator

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import (
    ComponentConfig,
    Defaulted,
    Duration,
    histogram_bounds,
    null_is_defaults,
)
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, Traces, count_metric_points, duration_ns
from collector.core.signals import Signal

SERVICE_NAME = "service.name"
SPAN_NAME = "span.name"
SPAN_KIND = "span.kind"
STATUS_CODE = "status.code"
DEFAULT_DIMENSIONS = (SERVICE_NAME, SPAN_NAME, SPAN_KIND, STATUS_CODE)
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"

# fmt: off
DEFAULT_BUCKETS = (
    "2ms", "4ms", "6ms", "8ms", "10ms", "50ms", "100ms", "200ms", "400ms", "800ms", "1s", "1400ms",
    "2s", "5s", "10s", "15s",
)
# fmt: on
# The instrumentation scope of the emitted metrics, named as the Collector names it.
SCOPE_NAME = "spanmetricsconnector"

_UNIT_SCALE = {"ms": 1e3, "s": 1.0}  # seconds -> histogram unit
_NS_PER_UNIT = {"ms": 1e6, "s": 1e9}
_KIND_NAMES = {v: n for n, v in Span.SpanKind.items()}
_STATUS_NAMES = {v: n for n, v in Status.StatusCode.items()}
# Key of the one series per resource that takes every span beyond the cardinality limit.
_OVERFLOW = object()


# --- config ---------------------------------------------------------------------------------


class DimensionConfig(ComponentConfig):
    model_config = ConfigDict(coerce_numbers_to_str=True)

    name: str = Field(min_length=1)
    """Attribute looked up on the span, then on the span's resource; its value becomes a metric
    attribute of the same name. Required."""

    default: str | None = None
    """Value used when neither the span nor its resource has the attribute. Default: none, the
    dimension is then left out of that series."""


class ExplicitHistogramConfig(ComponentConfig):
    buckets: list[Duration] = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS), validate_default=True
    )
    """Upper bounds of the duration histogram buckets, as durations, strictly increasing. Default
    [2ms, 4ms, 6ms, 8ms, 10ms, 50ms, 100ms, 200ms, 400ms, 800ms, 1s, 1400ms, 2s, 5s, 10s, 15s];
    empty means that default."""

    @field_validator("buckets")
    @classmethod
    def _increasing(cls, buckets: list[float]) -> list[float]:
        return histogram_bounds(buckets, DEFAULT_BUCKETS)


class HistogramConfig(ComponentConfig):
    disable: bool = False
    """Leave out the duration histogram and emit only the calls counter. Default false."""

    unit: Literal["ms", "s"] = "ms"
    """Unit of the duration histogram (its bounds and sum): ms or s. Default ms."""

    explicit: Annotated[ExplicitHistogramConfig, Defaulted] = Field(
        default_factory=ExplicitHistogramConfig
    )
    """Explicit-bucket histogram settings (the only histogram type supported)."""


class ExemplarsConfig(ComponentConfig):
    enabled: bool = False
    """Accepted for compatibility with Collector configs; exemplars are not attached (true only
    logs a warning at start). Default false."""


class Config(ComponentConfig):
    histogram: Annotated[HistogramConfig, Defaulted] = Field(default_factory=HistogramConfig)
    """The duration histogram. Default: explicit buckets in ms."""

    dimensions: list[DimensionConfig] = Field(default_factory=list)
    """Extra metric attributes beyond service.name, span.name, span.kind and status.code, each
    `{name, default}`: `name` is looked up on the span's attributes, then its resource's; the
    optional `default` is used when neither has it, and without one the dimension is left out of
    that series. Default empty: only those four."""

    exclude_dimensions: list[Literal["service.name", "span.name", "span.kind", "status.code"]] = (
        Field(default_factory=list)
    )
    """Default dimensions to leave out of the metric attributes (series that differ only in them
    are merged). Default empty: all four kept."""

    namespace: str = "traces.span.metrics"
    """Prefix of the metric names: `<namespace>.calls` and `<namespace>.duration`. Default
    traces.span.metrics; empty means plain `calls` and `duration`."""

    metrics_flush_interval: Duration = Field(15.0, gt=0)
    """How often the metrics are sent to the metrics pipeline. Default 15s; must be greater
    than 0. A final flush always happens at shutdown."""

    metrics_expiration: Duration = Field(0.0, ge=0)
    """How long a series is kept (and sent) without new spans before it is dropped. Default 0:
    series never expire."""

    aggregation_temporality: Literal[
        "AGGREGATION_TEMPORALITY_CUMULATIVE", "AGGREGATION_TEMPORALITY_DELTA"
    ] = "AGGREGATION_TEMPORALITY_CUMULATIVE"
    """CUMULATIVE: each flush sends the counts since a series appeared. DELTA: each flush
    sends only the series with spans since the last flush, counted from it, and starts them
    again. Default AGGREGATION_TEMPORALITY_CUMULATIVE."""

    latency_histogram_buckets: list[Duration] | None = None
    """The older form of `histogram::explicit::buckets` (default none); taken when that is not
    set."""

    @model_validator(mode="after")
    def _old_buckets(self) -> Config:
        if self.latency_histogram_buckets is not None:
            if "explicit" in self.histogram.model_fields_set:
                raise ValueError(
                    "set either latency_histogram_buckets or histogram::explicit::buckets"
                )
            self.histogram.explicit = ExplicitHistogramConfig(
                buckets=self.latency_histogram_buckets
            )
        return self

    aggregation_cardinality_limit: int = Field(10000, ge=0)
    """Most series kept per resource; spans of further series are counted in one overflow series
    whose only attribute is otel.metric.overflow=true. Default 10000 (the OTel Collector's
    default is 0), so a high-cardinality dimension cannot grow memory without bound; 0: no
    limit."""

    resource_metrics_key_attributes: list[str] = Field(default_factory=list)
    """Resource attributes that, with service.name, tell resources apart; the emitted metrics'
    resource holds exactly these. Default empty: service.name only."""

    resource_metrics_cache_size: int = Field(1000, gt=0)
    """Most distinct resources aggregated at once; the least recently seen one (with its series)
    is dropped beyond it. Default 1000; must be greater than 0."""

    dimensions_cache_size: int = Field(1000, ge=0)
    """Accepted for compatibility with Collector configs; no effect here. Default 1000."""

    exemplars: Annotated[ExemplarsConfig, Defaulted] = Field(default_factory=ExemplarsConfig)
    """Exemplars on the histogram: accepted for compatibility, not attached."""

    @model_validator(mode="before")
    @classmethod
    def _null_body(cls, data: object) -> object:
        return null_is_defaults(data)

    @model_validator(mode="after")
    def _unique_dimensions(self) -> Config:
        seen = set(DEFAULT_DIMENSIONS)
        for dimension in self.dimensions:
            if dimension.name in seen:
                raise ValueError(f"duplicate dimension name {dimension.name!r}")
            seen.add(dimension.name)
        return self


# --- aggregation ----------------------------------------------------------------------------


class _Series:
    """Cumulative state of one series; `attributes` are built once, when the series appears."""

    __slots__ = ("attributes", "bucket_counts", "count", "last_seen", "start", "sum")

    def __init__(self, attributes: list[KeyValue], buckets: int, now: int) -> None:
        self.attributes = attributes
        self.count = 0
        self.sum = 0.0
        self.bucket_counts = [0] * buckets
        self.start = now
        self.last_seen = now


class _Resource:
    """The series of one resource key, and the attributes of the resource they are sent with."""

    __slots__ = ("attributes", "series")

    def __init__(self, attributes: list[KeyValue]) -> None:
        self.attributes = attributes
        self.series: dict[object, _Series] = {}


def _key_value(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


def _string(value: str) -> AnyValue:
    return AnyValue(string_value=value)


class SpanMetricsConnector:
    """Consumes traces (read only: nothing of a batch is kept) and sends metrics to
    `next[Signal.METRICS]` from a background task. Not thread-safe: one event loop."""

    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal_in: Signal,
        next: Mapping[Signal, Consumer],
    ) -> None:
        self.settings = settings
        self.config = config
        self.next = next.get(Signal.METRICS)
        self.log = settings.logger
        histogram = config.histogram
        self._histogram = not histogram.disable
        self._unit = histogram.unit
        scale = _UNIT_SCALE[histogram.unit]
        # Rounded so that 100us is 0.1 (ms), not 0.09999999999999999.
        self._bounds = [round(b * scale, 9) for b in histogram.explicit.buckets]
        self._ns_per_unit = _NS_PER_UNIT[histogram.unit]
        prefix = f"{config.namespace}." if config.namespace else ""
        self._calls_name = f"{prefix}calls"
        self._duration_name = f"{prefix}duration"
        excluded = set(config.exclude_dimensions)
        self._with_service = SERVICE_NAME not in excluded
        self._with_name = SPAN_NAME not in excluded
        self._with_kind = SPAN_KIND not in excluded
        self._with_status = STATUS_CODE not in excluded
        self._dimensions = [d.name for d in config.dimensions]
        self._dimension_index = {name: i for i, name in enumerate(self._dimensions)}
        # Dimension values are kept as serialized AnyValues: hashable, cheap to make, and they
        # keep the attribute's type (an int 1 and a bool true stay different series).
        self._defaults = [
            None if d.default is None else _string(d.default).SerializeToString()
            for d in config.dimensions
        ]
        self._resources: OrderedDict[tuple, _Resource] = OrderedDict()
        self._last_collect: int | None = None  # with DELTA: where the next interval starts
        self._evicted = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._shut_down = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: Host) -> None:
        if self.config.exemplars.enabled:
            self.log.warning("exemplars are not supported; metrics are sent without them")
        if self._task is None and not self._shut_down:
            self._task = asyncio.create_task(self._run(), name=f"{self.settings.id} flush")

    async def shutdown(self) -> None:
        if self._shut_down:
            return
        self._shut_down = True
        if self._task is not None:
            # Not cancelled: a flush in progress must finish rather than lose its metrics.
            self._stop.set()
            await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.metrics_flush_interval):
                    await self._stop.wait()
            if not self._stop.is_set():
                await self.flush()

    # --- consume ------------------------------------------------------------------------------

    async def consume(self, batch: Traces) -> None:
        if self.next is None:
            return
        now = time.time_ns()
        for rs in batch.resource_spans:
            self._aggregate(rs, now)

    def _aggregate(self, rs, now: int) -> None:
        resource_attrs = {kv.key: kv.value for kv in rs.resource.attributes}
        service = resource_attrs.get(SERVICE_NAME)
        if service is None:
            return
        resource = self._resource(service, resource_attrs)
        series = resource.series
        limit = self.config.aggregation_cardinality_limit
        index = self._dimension_index
        base = self._resource_dimension_values(resource_attrs) if index else ()
        bounds = self._bounds
        ns_per_unit = self._ns_per_unit
        histogram = self._histogram
        with_name, with_kind, with_status = self._with_name, self._with_kind, self._with_status
        for ss in rs.scope_spans:
            for span in ss.spans:
                values = base
                if index:
                    values = list(base)
                    for kv in span.attributes:
                        i = index.get(kv.key)
                        if i is not None:
                            values[i] = kv.value.SerializeToString()
                    values = tuple(values)
                key: Hashable = (
                    span.name if with_name else "",
                    span.kind if with_kind else 0,
                    span.status.code if with_status else 0,
                    values,
                )
                entry = series.get(key)
                if entry is None:
                    if limit and len(series) >= limit:
                        key = _OVERFLOW
                        entry = series.get(key)
                    if entry is None:
                        entry = series[key] = self._new_series(key, service, now)
                entry.count += 1
                entry.last_seen = now
                if histogram:
                    duration = duration_ns(span) / ns_per_unit
                    entry.sum += duration
                    entry.bucket_counts[bisect.bisect_left(bounds, duration)] += 1

    def _resource(self, service: AnyValue, resource_attrs: dict[str, AnyValue]) -> _Resource:
        """The aggregation state of this resource key, created (evicting the least recently
        seen resource when full) on first sight."""
        key_attrs = [(SERVICE_NAME, service)]
        for name in self.config.resource_metrics_key_attributes:
            value = resource_attrs.get(name)
            if value is not None and name != SERVICE_NAME:
                key_attrs.append((name, value))
        key = tuple((name, value.SerializeToString()) for name, value in key_attrs)
        resource = self._resources.get(key)
        if resource is not None:
            self._resources.move_to_end(key)
            return resource
        if len(self._resources) >= self.config.resource_metrics_cache_size:
            self._resources.popitem(last=False)
            self._evicted += 1
        resource = self._resources[key] = _Resource(
            [_key_value(name, value) for name, value in key_attrs]
        )
        return resource

    def _resource_dimension_values(self, resource_attrs: dict[str, AnyValue]) -> list:
        """Per configured dimension: the resource's value, else the default, else None."""
        values = []
        for name, default in zip(self._dimensions, self._defaults, strict=True):
            value = resource_attrs.get(name)
            values.append(default if value is None else value.SerializeToString())
        return values

    def _new_series(self, key, service: AnyValue, now: int) -> _Series:
        buckets = len(self._bounds) + 1
        if key is _OVERFLOW:
            attrs = [_key_value(OVERFLOW_ATTRIBUTE, AnyValue(bool_value=True))]
            return _Series(attrs, buckets, now)
        name, kind, status, values = key
        attrs = []
        if self._with_service:
            attrs.append(_key_value(SERVICE_NAME, service))
        if self._with_name:
            attrs.append(_key_value(SPAN_NAME, _string(name)))
        if self._with_kind:
            attrs.append(_key_value(SPAN_KIND, _string(_KIND_NAMES.get(kind, str(kind)))))
        if self._with_status:
            attrs.append(_key_value(STATUS_CODE, _string(_STATUS_NAMES.get(status, str(status)))))
        for dimension, value in zip(self._dimensions, values, strict=True):
            if value is not None:
                attrs.append(_key_value(dimension, AnyValue.FromString(value)))
        return _Series(attrs, buckets, now)

    # --- flush --------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Send every live series to the metrics pipeline. Errors of the next consumer are
        logged, not raised: the counts stay, and the next flush sends them again."""
        if self.next is None:
            return
        batch = self.collect(time.time_ns())
        if self._evicted:
            self.log.warning(
                "resources dropped with their series: resource_metrics_cache_size reached",
                extra={"kv": {"evicted": self._evicted}},
            )
            self._evicted = 0
        if not batch.resource_metrics:
            return
        try:
            await self.next.consume(batch)
        except Exception as exc:
            self.log.error(
                "span metrics not sent: the next consumer failed",
                extra={"kv": {"metric_points": count_metric_points(batch), "error": repr(exc)}},
            )

    def collect(self, now: int) -> Metrics:
        """The current state as a metrics batch stamped `now` (ns), after dropping expired
        series and resources."""
        self._expire(now)
        batch = Metrics()
        temporality = AggregationTemporality.Value(self.config.aggregation_temporality)
        delta = temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
        for resource in self._resources.values():
            rm = batch.resource_metrics.add()
            rm.resource.attributes.extend(resource.attributes)
            sm = rm.scope_metrics.add()
            sm.scope.name = SCOPE_NAME
            calls = sm.metrics.add()
            calls.name = self._calls_name
            calls.sum.is_monotonic = True
            calls.sum.aggregation_temporality = temporality
            if self._histogram:
                duration = sm.metrics.add()
                duration.name = self._duration_name
                duration.unit = self._unit
                duration.histogram.aggregation_temporality = temporality
            for series in resource.series.values():
                start = series.start
                if delta and self._last_collect is not None:
                    start = min(start, self._last_collect)
                point = calls.sum.data_points.add()
                point.attributes.extend(series.attributes)
                point.start_time_unix_nano = start
                point.time_unix_nano = now
                point.as_int = series.count
                if self._histogram:
                    bucketed = duration.histogram.data_points.add()
                    bucketed.attributes.extend(series.attributes)
                    bucketed.start_time_unix_nano = start
                    bucketed.time_unix_nano = now
                    bucketed.count = series.count
                    bucketed.sum = series.sum
                    bucketed.bucket_counts.extend(series.bucket_counts)
                    bucketed.explicit_bounds.extend(self._bounds)
        if delta:
            # Sent: series begin again; those that stay without spans are not sent again.
            self._resources.clear()
            self._last_collect = now
        return batch

    def _expire(self, now: int) -> None:
        expiration = self.config.metrics_expiration
        if not expiration:
            return
        cutoff = now - int(expiration * 1e9)
        for key, resource in list(self._resources.items()):
            resource.series = {k: s for k, s in resource.series.items() if s.last_seen >= cutoff}
            if not resource.series:
                del self._resources[key]


factory = Factory(
    kind=Kind.CONNECTOR,
    type="span_metrics",
    aliases=("spanmetrics",),
    config=Config,
    create=SpanMetricsConnector,
    signals={Signal.TRACES: {Signal.METRICS: Stability.ALPHA}},
    description="Request, error and duration (R.E.D.) metrics from spans: a calls counter and "
    "a duration histogram per service, span name, kind, status and configured dimensions.",
)
