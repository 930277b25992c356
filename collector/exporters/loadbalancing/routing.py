"""One batch cut into one request per backend by routing key.

Every span, log record, metric or data point keeps (a copy of) its own resource and scope, in
order; what one backend gets from one source scope stays together. The parts are encoded
requests (pdata.Encoded); when everything goes to one backend the batch itself is that
backend's, uncopied. A router only reads its input, a batch of messages.

What a key is, per `routing_key`:

- `traceID`: the span's trace id (traces); the log record's, or a random one when it has none
  (logs), so records without a trace spread over the backends.
- `service`: the resource's service.name (empty when it has none); whole resources move.
- `resource`: every attribute of the resource; whole resources move.
- `metric`: the metric's name; whole metrics move.
- `streamID`: resource, scope, metric (name, unit, type, temporality, monotonicity) and the
  point's attributes: one time series.
- `attributes`: `name=value|` for each routing attribute in the configured order, looked up on
  the resource, then the scope, then the item (`name=|` when absent). For traces the first span
  of a trace in the batch gives the key of the whole trace, so a trace is never split.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import (
    LEVELS,
    Encoded,
    find_attr,
    metric_points,
    resources,
    signal_of,
    value_text,
)
from collector.core.signals import Signal

Owner = Callable[[bytes], str]
"""The backend that owns a routing key."""
Router = Callable[[Any, Owner], dict[str, Any]]
"""A batch and the owner of each key -> each backend's part: an Encoded request, or the batch
itself when it all goes to one backend."""
# Per source scope: the backend of each item (span, log record or metric) under it.
ItemRoute = Callable[[Any], str]
# Per source scope: the backend of each data point, given its metric.
PointRoute = Callable[[Any, Any], str]

SERVICE_NAME = "service.name"


def router(signal: Signal, routing_key: str, attributes: Sequence[str] = ()) -> Router:
    """The router of `signal` for `routing_key` (one that signal supports)."""
    if routing_key == "service":
        return lambda batch, owner: _split_resources(batch, owner, _service_key)
    if routing_key == "resource":
        return lambda batch, owner: _split_resources(batch, owner, _resource_key)
    if routing_key == "metric":
        return _metrics_by_name
    if routing_key == "streamID":
        return _metrics_by_stream
    if routing_key == "traceID":
        return _traces_by_trace_id if signal is Signal.TRACES else _logs_by_trace_id
    if routing_key == "attributes":
        names = tuple(attributes)
        if signal is Signal.TRACES:
            return lambda batch, owner: _traces_by_attributes(batch, owner, names)
        if signal is Signal.LOGS:
            return lambda batch, owner: _logs_by_attributes(batch, owner, names)
        return lambda batch, owner: _metrics_by_attributes(batch, owner, names)
    raise ValueError(f"unknown routing_key {routing_key!r}")


# --- keys ---------------------------------------------------------------------------------


def _service_key(resource) -> bytes:
    kv = find_attr(resource.resource.attributes, SERVICE_NAME)
    return b"" if kv is None else value_text(kv.value).encode()


def _attributes_identity(attributes) -> bytes:
    """The same bytes for the same attributes in any order."""
    return b"\x1e".join(sorted(kv.SerializeToString() for kv in attributes))


def _resource_key(resource) -> bytes:
    return _attributes_identity(resource.resource.attributes)


def _scope_identity(scope) -> bytes:
    s = scope.scope
    return b"\x1f".join((s.name.encode(), s.version.encode(), _attributes_identity(s.attributes)))


def _metric_identity(metric) -> bytes:
    kind = metric.WhichOneof("data") or ""
    data = getattr(metric, kind) if kind else None
    temporality = getattr(data, "aggregation_temporality", 0)
    monotonic = getattr(data, "is_monotonic", False)
    text = f"{metric.name}\x1f{metric.unit}\x1f{kind}\x1f{temporality}\x1f{monotonic:d}"
    return text.encode()


def _attribute_text(name: str, kv) -> str:
    return f"{name}={value_text(kv.value)}|" if kv is not None else f"{name}=|"


_SPAN_PSEUDO: Mapping[str, Callable[[Any], str]] = {
    "span.name": lambda span: span.name,
    "span.kind": lambda span: Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").title(),
}
_LOG_PSEUDO: Mapping[str, Callable[[Any], str]] = {
    "log.severity": lambda record: record.severity_text,
    "log.body": lambda record: value_text(record.body),
}


def _attribute_key(
    names: Sequence[str], resource, scope, pseudo: Mapping[str, Callable[[Any], str]]
) -> Callable[[Any], bytes]:
    """The routing attributes' key of each item under `resource` and `scope`: the values
    found on the resource or the scope are the same for all of them."""
    fixed: list[str | None] = []
    for name in names:
        kv = find_attr(resource.resource.attributes, name)
        if kv is None:
            kv = find_attr(scope.scope.attributes, name)
        fixed.append(None if kv is None else _attribute_text(name, kv))
    if None not in fixed:
        key = "".join(text or "" for text in fixed).encode()
        return lambda item: key

    def key_of(item) -> bytes:
        parts = []
        for name, text in zip(names, fixed, strict=True):
            if text is None:
                value = pseudo.get(name)
                if value is not None:
                    text = f"{name}={value(item)}|"
                else:
                    text = _attribute_text(name, find_attr(item.attributes, name))
            parts.append(text)
        return "".join(parts).encode()

    return key_of


# --- per signal and key -------------------------------------------------------------------


def _traces_by_trace_id(batch, owner: Owner) -> dict[str, Any]:
    return _split_items(batch, lambda resource, scope: lambda span: owner(span.trace_id))


def _traces_by_attributes(batch, owner: Owner, names: Sequence[str]) -> dict[str, Any]:
    trace_owners: dict[bytes, str] = {}

    def per_scope(resource, scope) -> ItemRoute:
        key_of = _attribute_key(names, resource, scope, _SPAN_PSEUDO)

        def member(span) -> str:
            found = trace_owners.get(span.trace_id)
            if found is None:
                found = trace_owners[span.trace_id] = owner(key_of(span))
            return found

        return member

    return _split_items(batch, per_scope)


def _logs_by_trace_id(batch, owner: Owner) -> dict[str, Any]:
    def member(record) -> str:
        # Random keys spread records without a trace evenly; none of them need one backend.
        return owner(record.trace_id or os.urandom(16))

    return _split_items(batch, lambda resource, scope: member)


def _logs_by_attributes(batch, owner: Owner, names: Sequence[str]) -> dict[str, Any]:
    def per_scope(resource, scope) -> ItemRoute:
        key_of = _attribute_key(names, resource, scope, _LOG_PSEUDO)
        return lambda record: owner(key_of(record))

    return _split_items(batch, per_scope)


def _metrics_by_name(batch, owner: Owner) -> dict[str, Any]:
    return _split_items(batch, lambda resource, scope: lambda metric: owner(metric.name.encode()))


def _metrics_by_stream(batch, owner: Owner) -> dict[str, Any]:
    def per_scope(resource, scope) -> PointRoute:
        prefix = _resource_key(resource) + b"\x1d" + _scope_identity(scope) + b"\x1d"

        def member(metric, point) -> str:
            stream = _metric_identity(metric) + b"\x1d" + _attributes_identity(point.attributes)
            return owner(prefix + stream)

        return member

    return _split_points(batch, per_scope)


def _metrics_by_attributes(batch, owner: Owner, names: Sequence[str]) -> dict[str, Any]:
    def per_scope(resource, scope) -> PointRoute:
        key_of = _attribute_key(names, resource, scope, {})
        return lambda metric, point: owner(key_of(point))

    return _split_points(batch, per_scope)


# --- cutting ------------------------------------------------------------------------------

# The request of each signal has the same shape, with the same field numbers: request ->
# resources (1) -> resource (1), scopes (2), schema_url (3) -> scope (1), items (2), schema_url
# (3); a metric's data points are field 1 of its data, whatever its type. The parts are written
# as protobuf bytes from each item's own encoding: copying the messages instead costs three
# times the CPU, and the bytes are what gets sent.
_RESOURCES = _RESOURCE = _SCOPE = _DATA_POINTS = 1
_SCOPES = _ITEMS = 2
_SCHEMA_URL = 3
_METRIC_DATA = {
    field.name: field.number for field in Metric.DESCRIPTOR.oneofs_by_name["data"].fields
}
_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE_BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field: tag, length, data."""
    return _ONE_BYTE[number << 3 | 2] + _varint(len(data)) + data


def _repeated(number: int, encodings: Iterable[bytes]) -> bytes:
    out = bytearray()
    tag = _ONE_BYTE[number << 3 | 2]
    for data in encodings:
        out += tag
        n = len(data)
        if n < 0x4000:  # most items: the length in one or two bytes, written inline
            if n < 0x80:
                out.append(n)
            else:
                out.append((n & 0x7F) | 0x80)
                out.append(n >> 7)
        else:
            out += _varint(n)
        out += data
    return bytes(out)


def _scope_entry(scope, items: Iterable[bytes]) -> bytes:
    """`scope` (its scope and schema url) holding `items` (their encodings)."""
    body = _field(_SCOPE, scope.scope.SerializeToString()) + _repeated(_ITEMS, items)
    if scope.schema_url:
        body += _field(_SCHEMA_URL, scope.schema_url.encode())
    return body


def _resource_entry(resource, scopes: Iterable[bytes]) -> bytes:
    """`resource` (its resource and schema url) holding `scopes` (their encodings)."""
    body = _field(_RESOURCE, resource.resource.SerializeToString()) + _repeated(_SCOPES, scopes)
    if resource.schema_url:
        body += _field(_SCHEMA_URL, resource.schema_url.encode())
    return body


def _metric_entry(metric, points: list) -> bytes:
    """`metric` holding only `points`."""
    kind = metric.WhichOneof("data")
    shell = Metric(name=metric.name, description=metric.description, unit=metric.unit)
    shell.metadata.extend(metric.metadata)
    data = getattr(metric, kind)
    data_shell = type(data)()
    for field, value in data.ListFields():
        if field.name != "data_points":
            setattr(data_shell, field.name, value)
    points_field = _repeated(_DATA_POINTS, (point.SerializeToString() for point in points))
    body = data_shell.SerializeToString() + points_field
    return shell.SerializeToString() + _field(_METRIC_DATA[kind], body)


class _Parts:
    """The request of each backend, gathered as encoded resources, and its item count."""

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self._resources: dict[str, list[bytes]] = {}
        self._items: dict[str, int] = {}

    def add(self, member: str, resource: bytes, items: int) -> None:
        entries = self._resources.get(member)
        if entries is None:
            entries = self._resources[member] = []
            self._items[member] = 0
        entries.append(resource)
        self._items[member] += items

    def encoded(self) -> dict[str, Encoded]:
        return {
            member: Encoded(self.signal, _repeated(_RESOURCES, entries), self._items[member])
            for member, entries in self._resources.items()
        }


def _only(members: Iterable[str], batch) -> dict[str, Any] | None:
    """{backend: batch} when `members` names one backend, {} when none; None when several."""
    distinct = set(members)
    if len(distinct) > 1:
        return None
    return {distinct.pop(): batch} if distinct else {}


def _grouped(items, route: Callable) -> dict[str, list]:
    """`items` by backend, in order."""
    groups: dict[str, list] = {}
    for item in items:
        member = route(item)
        group = groups.get(member)
        if group is None:
            group = groups[member] = []
        group.append(item)
    return groups


def _split_resources(batch, owner: Owner, key_of: Callable[[Any], bytes]) -> dict[str, Any]:
    plan = [owner(key_of(resource)) for resource in resources(batch)]
    only = _only(plan, batch)
    if only is not None:
        return only
    signal = signal_of(batch)
    scopes_field, items_field = LEVELS[signal]
    parts = _Parts(signal)
    for resource, member in zip(resources(batch), plan, strict=True):
        scopes = getattr(resource, scopes_field)
        if signal is Signal.METRICS:
            items = sum(len(metric_points(m)) for scope in scopes for m in scope.metrics)
        else:
            items = sum(len(getattr(scope, items_field)) for scope in scopes)
        parts.add(member, resource.SerializeToString(), items)
    return parts.encoded()


def _split_items(batch, per_scope: Callable[[Any, Any], ItemRoute]) -> dict[str, Any]:
    """`per_scope(resource, scope)` gives the backend of each item under that scope."""
    signal = signal_of(batch)
    scopes_field, items_field = LEVELS[signal]
    plan = [
        _grouped(getattr(scope, items_field), per_scope(resource, scope))
        for resource in resources(batch)
        for scope in getattr(resource, scopes_field)
    ]
    only = _only((member for groups in plan for member in groups), batch)
    if only is not None:
        return only
    parts = _Parts(signal)
    plans = iter(plan)
    for resource in resources(batch):
        scopes: dict[str, list[bytes]] = {}
        counts: dict[str, int] = {}
        for scope in getattr(resource, scopes_field):
            for member, group in next(plans).items():
                encodings = [item.SerializeToString() for item in group]
                scopes.setdefault(member, []).append(_scope_entry(scope, encodings))
                if signal is Signal.METRICS:
                    count = sum(len(metric_points(metric)) for metric in group)
                else:
                    count = len(group)
                counts[member] = counts.get(member, 0) + count
        for member, entries in scopes.items():
            parts.add(member, _resource_entry(resource, entries), counts[member])
    return parts.encoded()


def _split_points(batch, per_scope: Callable[[Any, Any], PointRoute]) -> dict[str, Any]:
    """`per_scope(resource, scope)` gives the backend of each data point (with its metric)
    under that scope; each backend gets a copy of the metric holding its points."""
    plan = []
    for resource in batch.resource_metrics:
        for scope in resource.scope_metrics:
            route = per_scope(resource, scope)
            for metric in scope.metrics:
                plan.append(_grouped(metric_points(metric), partial(route, metric)))
    only = _only((member for groups in plan for member in groups), batch)
    if only is not None:
        return only
    parts = _Parts(Signal.METRICS)
    plans = iter(plan)
    for resource in batch.resource_metrics:
        scopes: dict[str, list[bytes]] = {}
        counts: dict[str, int] = {}
        for scope in resource.scope_metrics:
            metrics: dict[str, list[bytes]] = {}
            for metric in scope.metrics:
                for member, points in next(plans).items():
                    metrics.setdefault(member, []).append(_metric_entry(metric, points))
                    counts[member] = counts.get(member, 0) + len(points)
            for member, entries in metrics.items():
                scopes.setdefault(member, []).append(_scope_entry(scope, entries))
        for member, scope_entries in scopes.items():
            parts.add(member, _resource_entry(resource, scope_entries), counts[member])
    return parts.encoded()
