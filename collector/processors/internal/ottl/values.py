"""OTTL values at run time, and how they meet the protobuf data.

Scalars are Python values: str, int, float, bool, bytes and None (nil). Maps and lists are
either Python dicts and lists (literals, converter results, the cache) or live views of the
data: `PMap` over a repeated KeyValue field (attributes, a kvlist) and `PSlice` over an
ArrayValue's values, so editors change attributes in place without copying them. Times and
durations keep nanoseconds (`Time`, `Duration`), as Go's do.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from collector.core.pdata import any_value_to_python


class OttlError(Exception):
    """A statement or condition failed on one item (wrong type, bad index, ...)."""


@dataclass(frozen=True, slots=True)
class Time:
    """A point in time, in nanoseconds since the Unix epoch."""

    ns: int


@dataclass(frozen=True, slots=True)
class Duration:
    ns: int


class PMap:
    """A live view of a repeated KeyValue field (attributes, or a kvlist's values)."""

    __slots__ = ("kvs",)

    def __init__(self, kvs: Any) -> None:
        self.kvs = kvs

    def __len__(self) -> int:
        return len(self.kvs)

    def keys(self) -> list[str]:
        return [kv.key for kv in self.kvs]

    def items(self) -> Iterator[tuple[str, Any]]:
        for kv in self.kvs:
            yield kv.key, value_of(kv.value)

    def get(self, key: str) -> Any:
        for kv in self.kvs:
            if kv.key == key:
                return value_of(kv.value)
        return None

    def slot(self, key: str, create: bool) -> AnyValue | None:
        """The AnyValue stored under `key`; with `create`, an empty one is added when absent."""
        for kv in self.kvs:
            if kv.key == key:
                return kv.value
        if not create:
            return None
        kv = self.kvs.add()
        kv.key = key
        return kv.value

    def set(self, key: str, value: Any) -> None:
        slot = self.slot(key, True)
        assert slot is not None  # created when absent
        assign(slot, value)

    def delete(self, key: str) -> None:
        self.retain(lambda k: k != key)

    def retain(self, keep: Callable[[str], bool]) -> None:
        """Remove in place (order kept) every entry whose key `keep` rejects."""
        kvs = self.kvs
        for i in range(len(kvs) - 1, -1, -1):
            if not keep(kvs[i].key):
                del kvs[i]

    def to_python(self) -> dict:
        return {kv.key: any_value_to_python(kv.value) for kv in self.kvs}


class PSlice:
    """A live view of an ArrayValue's values."""

    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[Any]:
        for v in self.values:
            yield value_of(v)

    def slot(self, index: int) -> AnyValue:
        if not -len(self.values) <= index < len(self.values):
            raise OttlError(f"index {index} out of range for a list of {len(self.values)}")
        return self.values[index]

    def to_python(self) -> list:
        return [any_value_to_python(v) for v in self.values]


def _kvlist(v: AnyValue) -> PMap:
    return PMap(v.kvlist_value.values)


def _array(v: AnyValue) -> PSlice:
    return PSlice(v.array_value.values)


_READERS: dict[str | None, Callable[[AnyValue], Any]] = {
    "string_value": lambda v: v.string_value,
    "int_value": lambda v: v.int_value,
    "double_value": lambda v: v.double_value,
    "bool_value": lambda v: v.bool_value,
    "bytes_value": lambda v: v.bytes_value,
    "kvlist_value": _kvlist,
    "array_value": _array,
    None: lambda v: None,
}


def value_of(v: AnyValue) -> Any:
    """An AnyValue as an OTTL value: maps and lists as live views, an empty value as nil."""
    return _READERS[v.WhichOneof("value")](v)


def plain(value: Any) -> Any:
    """`value` without live views (a snapshot), for storing and comparing."""
    if isinstance(value, PMap | PSlice):
        return value.to_python()
    return value


_INT64 = range(-(2**63), 2**63)


def assign(slot: AnyValue, value: Any) -> None:
    """Store an OTTL value in an AnyValue."""
    t = type(value)
    if t is str:
        slot.string_value = value
    elif t is bool:
        slot.bool_value = value
    elif t is int:
        if value not in _INT64:
            raise OttlError(f"integer {value} does not fit in 64 bits")
        slot.int_value = value
    elif t is float:
        slot.double_value = value
    elif t is bytes:
        slot.bytes_value = value
    elif value is None:
        slot.Clear()
    elif isinstance(value, PMap | PSlice | dict | list | tuple):
        _assign_container(slot, plain(value))
    elif isinstance(value, Time | Duration):
        slot.int_value = value.ns
    else:
        raise OttlError(f"cannot store a {type_name(value)} in a value")


def _assign_container(slot: AnyValue, value: dict | list | tuple) -> None:
    if isinstance(value, dict):
        kvl = slot.kvlist_value
        del kvl.values[:]
        for k, v in value.items():
            kv = kvl.values.add()
            kv.key = str(k)
            assign(kv.value, v)
    else:
        arr = slot.array_value
        del arr.values[:]
        for v in value:
            assign(arr.values.add(), v)


def replace_map(kvs: Any, value: Any) -> None:
    """Replace every entry of a repeated KeyValue field with the entries of map `value`."""
    if not isinstance(value, PMap | dict):
        raise OttlError(f"expected a map, got {type_name(value)}")
    entries = plain(value)
    del kvs[:]
    for k, v in entries.items():
        kv = kvs.add()
        kv.key = str(k)
        assign(kv.value, v)


def type_name(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, PMap | dict):
        return "map"
    if isinstance(value, PSlice | list | tuple):
        return "list"
    if isinstance(value, Time):
        return "time"
    if isinstance(value, Duration):
        return "duration"
    return type(value).__name__


# --- indexing ---------------------------------------------------------------------------------


def index(value: Any, keys: list[Any]) -> Any:
    """`value[k1][k2]...`: nil when a map lacks a key (or the value is nil), an error for an
    index out of range or a key of the wrong type."""
    for key in keys:
        if value is None:
            return None
        if isinstance(key, str):
            if isinstance(value, PMap | dict):
                value = value.get(key)
            else:
                raise OttlError(f"a {type_name(value)} cannot be indexed by a string")
        elif isinstance(key, int) and not isinstance(key, bool):
            if isinstance(value, PSlice):
                value = value_of(value.slot(key))
            elif isinstance(value, list | tuple):
                if not -len(value) <= key < len(value):
                    raise OttlError(f"index {key} out of range for a list of {len(value)}")
                value = value[key]
            else:
                raise OttlError(f"a {type_name(value)} cannot be indexed by an int")
        else:
            raise OttlError(f"a key must be a string or an int, got {type_name(key)}")
    return value


def set_index(container: Any, keys: list[Any], value: Any) -> None:
    """`container[k1]...[kn] = value`, creating maps on the way for string keys."""
    *head, last = keys
    for key in head:
        container = _step(container, key)
    if isinstance(container, PMap | PSlice | AnyValue):
        slot = _slot(container, last, create=True)
        assign(slot, value)
    elif isinstance(container, dict) and isinstance(last, str):
        container[last] = plain(value)
    elif isinstance(container, list) and isinstance(last, int):
        if not -len(container) <= last < len(container):
            raise OttlError(f"index {last} out of range for a list of {len(container)}")
        container[last] = plain(value)
    else:
        raise OttlError(f"a {type_name(container)} cannot be indexed by {type_name(last)}")


def _slot(container: Any, key: Any, create: bool) -> AnyValue:
    """The AnyValue under `key` of a live map or list (or of an AnyValue holding one); a string
    key on an empty AnyValue makes it a map."""
    if isinstance(container, AnyValue):
        kind = container.WhichOneof("value")
        if kind == "kvlist_value" or (kind is None and isinstance(key, str)):
            container = PMap(container.kvlist_value.values)
        elif kind == "array_value":
            container = PSlice(container.array_value.values)
        else:
            raise OttlError(f"a {kind or 'nil'} cannot be indexed")
    if isinstance(key, str) and isinstance(container, PMap):
        slot = container.slot(key, create)
        if slot is None:
            raise OttlError(f"no key {key!r}")
        return slot
    if isinstance(key, int) and not isinstance(key, bool) and isinstance(container, PSlice):
        return container.slot(key)
    raise OttlError(f"a {type_name(container)} cannot be indexed by {type_name(key)}")


def _step(container: Any, key: Any) -> Any:
    if isinstance(container, PMap | PSlice | AnyValue):
        return _slot(container, key, create=True)
    if isinstance(container, dict) and isinstance(key, str):
        inner = container.get(key)
        if inner is None:
            inner = container[key] = {}
        return inner
    if isinstance(container, list) and isinstance(key, int):
        if not -len(container) <= key < len(container):
            raise OttlError(f"index {key} out of range for a list of {len(container)}")
        return container[key]
    raise OttlError(f"a {type_name(container)} cannot be indexed by {type_name(key)}")


# --- comparison and math ------------------------------------------------------------------------


def _numeric(v: Any) -> bool:
    return type(v) is int or type(v) is float


def equal(a: Any, b: Any) -> bool:
    """OTTL's ==: numbers compare across int and double, other types only with their own."""
    ta, tb = type(a), type(b)
    if ta is tb and ta is not PMap and ta is not PSlice:
        return bool(a == b)
    if _numeric(a) and _numeric(b):
        return bool(a == b)
    if isinstance(a, PMap | PSlice) or isinstance(b, PMap | PSlice):
        a, b = plain(a), plain(b)
        return type(a) is type(b) and a == b
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return list(a) == list(b)
    return False


_ORDERED = (str, bytes, bool, Time, Duration)


def compare(op: str, a: Any, b: Any) -> bool:
    if op == "==":
        return equal(a, b)
    if op == "!=":
        return not equal(a, b)
    if not (_numeric(a) and _numeric(b)):
        if type(a) is not type(b) or not isinstance(a, _ORDERED):
            return False  # values of different types are only ever unequal
        if isinstance(a, Time | Duration):
            a, b = a.ns, b.ns
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def arithmetic(op: str, a: Any, b: Any) -> Any:
    """+ - * / on ints, doubles, times and durations; ints and doubles do not mix, and integer
    division truncates toward zero as in Go."""
    ta, tb = type(a), type(b)
    if ta is tb and ta in (int, float):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            raise OttlError("division by zero")
        if ta is int:
            q = abs(a) // abs(b)
            return q if (a < 0) == (b < 0) else -q
        return a / b
    if op in "+-":
        if ta is Time and tb is Time and op == "-":
            return Duration(a.ns - b.ns)
        if ta is Time and tb is Duration:
            return Time(a.ns + b.ns if op == "+" else a.ns - b.ns)
        if ta is Duration and tb is Time and op == "+":
            return Time(a.ns + b.ns)
        if ta is Duration and tb is Duration:
            return Duration(a.ns + b.ns if op == "+" else a.ns - b.ns)
    raise OttlError(f"cannot compute {type_name(a)} {op} {type_name(b)}")


# --- text forms -------------------------------------------------------------------------------


def format_double(d: float) -> str:
    """A double as Go's strconv.FormatFloat(d, 'f', -1, 64) writes it."""
    if math.isnan(d):
        return "NaN"
    if math.isinf(d):
        return "+Inf" if d > 0 else "-Inf"
    text = format(Decimal(repr(d)), "f")
    return text[:-2] if text.endswith(".0") else text


def to_json(value: Any) -> str:
    return json.dumps(_jsonable(plain(value)), separators=(",", ":"), ensure_ascii=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Time | Duration):
        return value.ns
    return value


def to_text(value: Any, bytes_as: str = "hex") -> str | None:
    """The string form OTTL's string-like arguments take: numbers via strconv, booleans as
    true/false, bytes as hex (or base64), maps and lists as JSON; nil stays nil."""
    t = type(value)
    if t is str:
        return value
    if value is None:
        return None
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is float:
        return format_double(value)
    if t is bytes:
        return value.hex() if bytes_as == "hex" else base64.b64encode(value).decode()
    if isinstance(value, PMap | PSlice | dict | list | tuple):
        return to_json(value)
    if isinstance(value, Time | Duration):
        return str(value.ns)
    raise OttlError(f"cannot use a {type_name(value)} as a string")
