"""OTTL contexts: what a path names in each, and the enums each signal knows.

A context is the level statements run at: `resource`, `scope`, `span`, `spanevent`, `metric`,
`datapoint` or `log`. A context reaches its own fields and those of the levels above it (a
span event reaches its span, scope and resource). Paths are written either with the context
first (`span.attributes["k"]`, `resource.attributes["k"]`) or, in a context given by name,
without it (`attributes["k"]`, `name`); `instrumentation_scope` is the older name of `scope`.

Each path compiles to a getter `get(ctx)` and, where the field can be written, a setter
`set(ctx, value)`; `ctx` is a `TransformContext` whose slots hold the current item and its
parents, so reading a field costs one attribute lookup and nothing is built per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.core.pdata import metric_points, value_text
from collector.core.signals import Signal
from collector.processors.internal.ottl.values import (
    OttlError,
    PMap,
    Time,
    assign,
    index,
    plain,
    replace_map,
    set_index,
    type_name,
    value_of,
)


class TransformContext:
    """The item statements run on and its parents; one is reused for every item of a batch.
    `cache` is the item's scratch map, made on first use."""

    __slots__ = ("cache", "datapoint", "log", "metric", "resource", "scope", "span", "spanevent")

    def __init__(self) -> None:
        self.resource: Any = None
        self.scope: Any = None
        self.span: Any = None
        self.spanevent: Any = None
        self.metric: Any = None
        self.datapoint: Any = None
        self.log: Any = None
        self.cache: dict | None = None


CONTEXTS = ("resource", "scope", "span", "spanevent", "metric", "datapoint", "log")

# The levels each context reaches, outermost first.
CHAINS: dict[str, tuple[str, ...]] = {
    "resource": ("resource",),
    "scope": ("resource", "scope"),
    "span": ("resource", "scope", "span"),
    "spanevent": ("resource", "scope", "span", "spanevent"),
    "metric": ("resource", "scope", "metric"),
    "datapoint": ("resource", "scope", "metric", "datapoint"),
    "log": ("resource", "scope", "log"),
}

SIGNAL_CONTEXTS: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: ("resource", "scope", "span", "spanevent"),
    Signal.METRICS: ("resource", "scope", "metric", "datapoint"),
    Signal.LOGS: ("resource", "scope", "log"),
}

_ALIASES = {"instrumentation_scope": "scope"}

_METRIC_TYPES = {
    None: 0,
    "gauge": 1,
    "sum": 2,
    "histogram": 3,
    "exponential_histogram": 4,
    "summary": 5,
}

ENUMS: dict[Signal, dict[str, int]] = {
    Signal.TRACES: {
        **dict(Span.SpanKind.items()),
        **dict(Status.StatusCode.items()),
    },
    Signal.LOGS: dict(SeverityNumber.items()),
    Signal.METRICS: {
        **{
            f"METRIC_DATA_TYPE_{(kind or 'none').upper()}": number
            for kind, number in _METRIC_TYPES.items()
        },
        **dict(AggregationTemporality.items()),
        "FLAG_NONE": 0,
        "FLAG_NO_RECORDED_VALUE": 1,
    },
}


class PathProblem(ValueError):
    """A path that does not exist in the context it is used in."""


@dataclass(frozen=True)
class Key:
    """A compiled `[key]`: a getter, and the value itself when it is a literal."""

    get: Callable[[TransformContext], Any]
    const: Any = None
    is_const: bool = False


@dataclass(frozen=True)
class Accessor:
    get: Callable[[TransformContext], Any]
    set: Callable[[TransformContext, Any], None] | None


Factory = Callable[[str, Sequence[Key]], Accessor]


def _no_keys(build: Callable[[str], Accessor]) -> Factory:
    def factory(slot: str, keys: Sequence[Key]) -> Accessor:
        if keys:
            raise PathProblem("cannot be indexed")
        return build(slot)

    return factory


def _scalar(field: str, types: tuple[type, ...]) -> Factory:
    """A plain protobuf field; values of other types are ignored when setting, as upstream."""
    return _nested_scalar((), field, types)


def _nested_scalar(parents: tuple[str, ...], field: str, types: tuple[type, ...]) -> Factory:
    def build(slot: str) -> Accessor:
        owner = attrgetter(".".join((slot, *parents)))

        def set_(ctx: TransformContext, value: Any) -> None:
            if type(value) in types:
                if float in types and type(value) is int:
                    value = float(value)
                try:
                    setattr(owner(ctx), field, value)
                except (ValueError, TypeError) as e:
                    raise OttlError(f"cannot set {field} to {value!r}: {e}") from None

        return Accessor(attrgetter(".".join((slot, *parents, field))), set_)

    return _no_keys(build)


_STR, _INT, _DOUBLE, _BOOL = (str,), (int,), (float, int), (bool,)


def _time(field: str) -> Factory:
    def build(slot: str) -> Accessor:
        read = attrgetter(f"{slot}.{field}")
        owner = attrgetter(slot)

        def set_(ctx: TransformContext, value: Any) -> None:
            if type(value) is Time:
                setattr(owner(ctx), field, max(0, value.ns))

        return Accessor(lambda ctx: Time(read(ctx)), set_)

    return _no_keys(build)


def _id(field: str, size: int, as_text: bool) -> Factory:
    """trace_id / span_id / parent_span_id: `size` bytes (zeros when unset), or with `.string`
    lowercase hex ("" when unset). Setting all zeros unsets the field, as the wire form does."""

    def build(slot: str) -> Accessor:
        read = attrgetter(f"{slot}.{field}")
        owner = attrgetter(slot)
        zero = bytes(size)

        def get_bytes(ctx: TransformContext) -> bytes:
            return read(ctx) or zero

        def get_text(ctx: TransformContext) -> str:
            return read(ctx).hex()

        def set_(ctx: TransformContext, value: Any) -> None:
            if as_text and type(value) is str:
                try:
                    value = bytes.fromhex(value)
                except ValueError:
                    raise OttlError(f"{field}: {value!r} is not hex") from None
            if type(value) is not bytes:
                return
            if len(value) != size:
                raise OttlError(f"{field} must be {size} bytes, got {len(value)}")
            setattr(owner(ctx), field, b"" if value == zero else value)

        return Accessor(get_text if as_text else get_bytes, set_)

    return _no_keys(build)


def _attributes(field: str = "attributes") -> Factory:
    """A repeated KeyValue field: the whole map, or entries by key (nested keys go into maps
    and lists inside values)."""

    def factory(slot: str, keys: Sequence[Key]) -> Accessor:
        kvs_of = attrgetter(f"{slot}.{field}")
        if not keys:
            return Accessor(
                lambda ctx: PMap(kvs_of(ctx)), lambda ctx, v: replace_map(kvs_of(ctx), v)
            )
        if len(keys) == 1 and keys[0].is_const and isinstance(keys[0].const, str):
            return _one_key(kvs_of, keys[0].const)
        key_getters = [k.get for k in keys]

        def get(ctx: TransformContext) -> Any:
            return index(PMap(kvs_of(ctx)), [g(ctx) for g in key_getters])

        def set_(ctx: TransformContext, value: Any) -> None:
            set_index(PMap(kvs_of(ctx)), [g(ctx) for g in key_getters], value)

        return Accessor(get, set_)

    return factory


def _one_key(kvs_of: Callable[[TransformContext], Any], key: str) -> Accessor:
    """attributes["literal"]: the common case, a scan of the repeated field and nothing else."""

    def get(ctx: TransformContext) -> Any:
        for kv in kvs_of(ctx):
            if kv.key == key:
                return value_of(kv.value)
        return None

    def set_(ctx: TransformContext, value: Any) -> None:
        kvs = kvs_of(ctx)
        for kv in kvs:
            if kv.key == key:
                assign(kv.value, value)
                return
        kv = kvs.add()
        kv.key = key
        assign(kv.value, value)

    return Accessor(get, set_)


def _any_value(field: str) -> Factory:
    """An AnyValue field (a log body): its value, or an entry inside it by keys."""

    def factory(slot: str, keys: Sequence[Key]) -> Accessor:
        value_field = attrgetter(f"{slot}.{field}")
        if not keys:
            return Accessor(
                lambda ctx: value_of(value_field(ctx)),
                lambda ctx, v: assign(value_field(ctx), v),
            )
        key_getters = [k.get for k in keys]

        def get(ctx: TransformContext) -> Any:
            return index(value_of(value_field(ctx)), [g(ctx) for g in key_getters])

        def set_(ctx: TransformContext, value: Any) -> None:
            set_index(value_field(ctx), [g(ctx) for g in key_getters], value)

        return Accessor(get, set_)

    return factory


def _body_string(slot: str) -> Accessor:
    body = attrgetter(f"{slot}.body")

    def set_(ctx: TransformContext, value: Any) -> None:
        if type(value) is str:
            body(ctx).string_value = value

    return Accessor(lambda ctx: value_text(body(ctx)), set_)


def _trace_state(slot: str, keys: Sequence[Key]) -> Accessor:
    """The W3C tracestate string, or one of its list members by key."""
    owner = attrgetter(slot)
    if not keys:
        return _nested_scalar((), "trace_state", _STR)(slot, ())
    if len(keys) != 1:
        raise PathProblem("takes one key")
    key_get = keys[0].get

    def members(ctx: TransformContext) -> list[tuple[str, str]]:
        out = []
        for part in owner(ctx).trace_state.split(","):
            name, sep, value = part.strip().partition("=")
            if sep:
                out.append((name, value))
        return out

    def get(ctx: TransformContext) -> Any:
        key = key_get(ctx)
        return next((v for k, v in members(ctx) if k == key), None)

    def set_(ctx: TransformContext, value: Any) -> None:
        key = key_get(ctx)
        if type(value) is not str or type(key) is not str:
            return
        rest = [(k, v) for k, v in members(ctx) if k != key]
        owner(ctx).trace_state = ",".join(f"{k}={v}" for k, v in [(key, value), *rest])

    return Accessor(get, set_)


_KIND_NAMES: dict[int, str] = {int(number): name for name, number in Span.SpanKind.items()}
_KIND_TEXT = {n: name.removeprefix("SPAN_KIND_").capitalize() for n, name in _KIND_NAMES.items()}


def _kind_text(deprecated: bool) -> Factory:
    names = _KIND_NAMES if deprecated else _KIND_TEXT
    numbers = {text: n for n, text in names.items()}

    def build(slot: str) -> Accessor:
        owner = attrgetter(slot)

        def set_(ctx: TransformContext, value: Any) -> None:
            if type(value) is str:
                owner(ctx).kind = numbers.get(value, 0)

        return Accessor(lambda ctx: names.get(owner(ctx).kind, names[0]), set_)

    return _no_keys(build)


def _readonly(field: str, convert: Callable[[Any], Any] = list) -> Factory:
    def build(slot: str) -> Accessor:
        read = attrgetter(f"{slot}.{field}")
        return Accessor(lambda ctx: convert(read(ctx)), None)

    return _no_keys(build)


def _metric_type(slot: str) -> Accessor:
    owner = attrgetter(slot)
    # Setting the type is accepted and does nothing, as upstream: changing it needs a
    # conversion of the data points, which `set` cannot express.
    return Accessor(lambda ctx: _METRIC_TYPES[owner(ctx).WhichOneof("data")], lambda c, v: None)


def _metric_data_field(field: str, kinds: tuple[str, ...], types: tuple[type, ...]) -> Factory:
    """A field of the metric's data message (sum, histogram, ...) for the kinds that have it;
    nil for the others."""

    def build(slot: str) -> Accessor:
        owner = attrgetter(slot)

        def get(ctx: TransformContext) -> Any:
            metric = owner(ctx)
            kind = metric.WhichOneof("data")
            return getattr(getattr(metric, kind), field) if kind in kinds else None

        def set_(ctx: TransformContext, value: Any) -> None:
            metric = owner(ctx)
            kind = metric.WhichOneof("data")
            if kind in kinds and type(value) in types:
                setattr(getattr(metric, kind), field, value)

        return Accessor(get, set_)

    return _no_keys(build)


def _metric_points(slot: str) -> Accessor:
    owner = attrgetter(slot)
    return Accessor(lambda ctx: list(metric_points(owner(ctx))), None)


def _point_field(field: str, types: tuple[type, ...], parent: str | None = None) -> Factory:
    """A field some data point types have (count, sum, scale, ...): nil on the others."""

    def build(slot: str) -> Accessor:
        owner = attrgetter(slot)

        def holder(ctx: TransformContext) -> Any:
            point = owner(ctx)
            return getattr(point, parent, None) if parent else point

        def get(ctx: TransformContext) -> Any:
            value = getattr(holder(ctx), field, None)
            if value is not None and not isinstance(value, int | float | bool | str | bytes):
                return list(value)
            return value

        def set_(ctx: TransformContext, value: Any) -> None:
            target = holder(ctx)
            if target is None or getattr(target, field, None) is None:
                return
            value = plain(value)
            if isinstance(value, list) and list in types:
                repeated = getattr(target, field)
                del repeated[:]
                repeated.extend(value)
            elif type(value) in types:
                setattr(target, field, float(value) if float in types else value)

        return Accessor(get, set_)

    return _no_keys(build)


def _number_value(field: str, types: tuple[type, ...]) -> Factory:
    """value_double / value_int of a number data point; setting one switches the oneof."""

    def build(slot: str) -> Accessor:
        owner = attrgetter(slot)

        def get(ctx: TransformContext) -> Any:
            return getattr(owner(ctx), field, None)

        def set_(ctx: TransformContext, value: Any) -> None:
            point = owner(ctx)
            if type(value) in types and getattr(point, field, None) is not None:
                setattr(point, field, float(value) if field == "as_double" else value)

        return Accessor(get, set_)

    return _no_keys(build)


_COMMON: dict[tuple[str, ...], Factory] = {
    ("attributes",): _attributes(),
    ("dropped_attributes_count",): _scalar("dropped_attributes_count", _INT),
}

FIELDS: dict[str, dict[tuple[str, ...], Factory]] = {
    "resource": dict(_COMMON),
    "scope": {
        **_COMMON,
        ("name",): _scalar("name", _STR),
        ("version",): _scalar("version", _STR),
    },
    "span": {
        **_COMMON,
        ("name",): _scalar("name", _STR),
        ("kind",): _scalar("kind", _INT),
        ("kind", "string"): _kind_text(deprecated=False),
        ("kind", "deprecated_string"): _kind_text(deprecated=True),
        ("status", "code"): _nested_scalar(("status",), "code", _INT),
        ("status", "message"): _nested_scalar(("status",), "message", _STR),
        ("trace_id",): _id("trace_id", 16, False),
        ("trace_id", "string"): _id("trace_id", 16, True),
        ("span_id",): _id("span_id", 8, False),
        ("span_id", "string"): _id("span_id", 8, True),
        ("parent_span_id",): _id("parent_span_id", 8, False),
        ("parent_span_id", "string"): _id("parent_span_id", 8, True),
        ("trace_state",): _trace_state,
        ("flags",): _scalar("flags", _INT),
        ("start_time_unix_nano",): _scalar("start_time_unix_nano", _INT),
        ("end_time_unix_nano",): _scalar("end_time_unix_nano", _INT),
        ("start_time",): _time("start_time_unix_nano"),
        ("end_time",): _time("end_time_unix_nano"),
        ("dropped_events_count",): _scalar("dropped_events_count", _INT),
        ("dropped_links_count",): _scalar("dropped_links_count", _INT),
        ("events",): _readonly("events"),
        ("links",): _readonly("links"),
    },
    "spanevent": {
        **_COMMON,
        ("name",): _scalar("name", _STR),
        ("time_unix_nano",): _scalar("time_unix_nano", _INT),
        ("time",): _time("time_unix_nano"),
    },
    "metric": {
        ("name",): _scalar("name", _STR),
        ("description",): _scalar("description", _STR),
        ("unit",): _scalar("unit", _STR),
        ("type",): _no_keys(_metric_type),
        ("aggregation_temporality",): _metric_data_field(
            "aggregation_temporality", ("sum", "histogram", "exponential_histogram"), _INT
        ),
        ("is_monotonic",): _metric_data_field("is_monotonic", ("sum",), _BOOL),
        ("data_points",): _no_keys(_metric_points),
        ("metadata",): _attributes("metadata"),
    },
    "datapoint": {
        **_COMMON,
        ("start_time_unix_nano",): _scalar("start_time_unix_nano", _INT),
        ("time_unix_nano",): _scalar("time_unix_nano", _INT),
        ("start_time",): _time("start_time_unix_nano"),
        ("time",): _time("time_unix_nano"),
        ("value_double",): _number_value("as_double", _DOUBLE),
        ("value_int",): _number_value("as_int", _INT),
        ("flags",): _scalar("flags", _INT),
        ("count",): _point_field("count", _INT),
        ("sum",): _point_field("sum", _DOUBLE),
        ("min",): _point_field("min", _DOUBLE),
        ("max",): _point_field("max", _DOUBLE),
        ("bucket_counts",): _point_field("bucket_counts", (list,)),
        ("explicit_bounds",): _point_field("explicit_bounds", (list,)),
        ("scale",): _point_field("scale", _INT),
        ("zero_count",): _point_field("zero_count", _INT),
        ("positive", "offset"): _point_field("offset", _INT, "positive"),
        ("positive", "bucket_counts"): _point_field("bucket_counts", (list,), "positive"),
        ("negative", "offset"): _point_field("offset", _INT, "negative"),
        ("negative", "bucket_counts"): _point_field("bucket_counts", (list,), "negative"),
        ("quantile_values",): _point_field("quantile_values", ()),
        ("exemplars",): _point_field("exemplars", ()),
    },
    "log": {
        **_COMMON,
        ("body",): _any_value("body"),
        ("body", "string"): _no_keys(_body_string),
        ("severity_number",): _scalar("severity_number", _INT),
        ("severity_text",): _scalar("severity_text", _STR),
        ("time_unix_nano",): _scalar("time_unix_nano", _INT),
        ("observed_time_unix_nano",): _scalar("observed_time_unix_nano", _INT),
        ("time",): _time("time_unix_nano"),
        ("observed_time",): _time("observed_time_unix_nano"),
        ("trace_id",): _id("trace_id", 16, False),
        ("trace_id", "string"): _id("trace_id", 16, True),
        ("span_id",): _id("span_id", 8, False),
        ("span_id", "string"): _id("span_id", 8, True),
        ("flags",): _scalar("flags", _INT),
        ("event_name",): _scalar("event_name", _STR),
    },
}


def _cache(keys: Sequence[Key]) -> Accessor:
    def cache(ctx: TransformContext) -> dict:
        found = ctx.cache
        if found is None:
            found = ctx.cache = {}
        return found

    if not keys:

        def replace(ctx: TransformContext, value: Any) -> None:
            if not isinstance(value, dict | PMap):
                raise OttlError(f"the cache is a map, got {type_name(value)}")
            ctx.cache = dict(plain(value))

        return Accessor(cache, replace)
    key_getters = [k.get for k in keys]
    return Accessor(
        lambda ctx: index(cache(ctx), [g(ctx) for g in key_getters]),
        lambda ctx, v: set_index(cache(ctx), [g(ctx) for g in key_getters], v),
    )


@dataclass(frozen=True)
class PathRef:
    """A path as written: (name, keys) per dotted segment."""

    segments: tuple[tuple[str, tuple[Key, ...]], ...]

    @property
    def text(self) -> str:
        return ".".join(name for name, _ in self.segments)


def owner_of(first: str, more: bool) -> str | None:
    """The context a path starts with (`span` in `span.name`), or None for a bare field."""
    name = _ALIASES.get(first, first)
    return name if name in CONTEXTS and more else None


def resolve(path: PathRef, context: str, require_prefix: bool) -> Accessor:
    """The accessor of `path` in `context`; PathProblem names what is wrong."""
    segments = path.segments
    first, first_keys = segments[0]
    owner = owner_of(first, len(segments) > 1 or bool(first_keys))
    if owner is not None:
        if owner not in CHAINS[context]:
            raise PathProblem(f"{owner} paths are not available in the {context} context")
        if first_keys:
            raise PathProblem(f"{first!r} cannot be indexed")
        rest = segments[1:]
    elif require_prefix:
        example = ", ".join(f"{c}." for c in CHAINS[context])
        raise PathProblem(f"path {path.text!r} needs a context prefix ({example})")
    else:
        owner, rest = context, segments
    names = tuple(name for name, _ in rest)
    if names == ("cache",):
        if owner != context:
            raise PathProblem(f"only the {context} context's cache can be used here")
        return _cache(rest[0][1])
    factory = FIELDS[owner].get(names)
    if factory is None:
        raise PathProblem(f"unknown path {path.text!r} in the {context} context")
    if any(keys for _, keys in rest[:-1]):
        raise PathProblem(f"{path.text!r}: only the last part of a path can be indexed")
    try:
        return factory(owner, rest[-1][1])
    except PathProblem as e:
        raise PathProblem(f"{path.text!r} {e}") from None
