"""Attribute actions as in the Collector's attributes processor, shared by `attributes` (span, log
record and data point attributes) and `resource` (resource attributes).

Actions run in the order given, each on the result of the previous one.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from pydantic import AfterValidator

from collector.core.config_types import ComponentConfig
from collector.core.pdata import find_attr, python_to_any_value, value_text


class Action(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"
    HASH = "hash"
    EXTRACT = "extract"
    CONVERT = "convert"


_SETTERS = (Action.INSERT, Action.UPDATE, Action.UPSERT)
_INT_RE = re.compile(r"[+-]?\d+")


class ActionConfig(ComponentConfig):
    """One attribute action."""

    key: str | None = None
    """Attribute the action works on. Required, except for delete and hash given a `pattern`."""
    action: Action
    """insert (add `key` when absent), update (overwrite `key` when present), upsert (both),
    delete (remove `key` and keys matching `pattern`), hash (replace the values of `key` and of
    keys matching `pattern` with the SHA-256 hex digest of their string form), extract (upsert the
    named groups of `pattern` matched against the string value of `key`), convert (change the
    type of `key` to `converted_type`; values that cannot be converted stay as they are).
    Required."""
    value: Any = None
    """Value to set with insert, update or upsert. Exactly one of `value` and `from_attribute`."""
    from_attribute: str | None = None
    """Attribute whose value insert, update or upsert copies to `key`; nothing happens when it is
    absent. Exactly one of `value` and `from_attribute`."""
    pattern: str | None = None
    """Regular expression (Python syntax, re.search): keys to delete or hash, or for extract the
    pattern with named groups `(?P<name>...)` whose matches become attributes."""
    converted_type: Literal["int", "double", "string"] | None = None
    """Target type of convert: int, double or string. Required for convert only."""


def _check(actions: list[ActionConfig]) -> list[ActionConfig]:
    if not actions:
        raise ValueError("at least one action is required")
    for index, a in enumerate(actions):
        problem = _problem(a)
        if problem:
            raise ValueError(f"action {index} ({a.action.value}): {problem}")
    return actions


def _problem(a: ActionConfig) -> str | None:
    unused = [
        name
        for name in ("value", "from_attribute", "pattern", "converted_type")
        if getattr(a, name) is not None and name not in _USES[a.action]
    ]
    if unused:
        return f"{', '.join(unused)} cannot be used with {a.action.value}"
    if a.pattern is not None:
        try:
            re.compile(a.pattern)
        except re.error as exc:
            return f"invalid pattern {a.pattern!r}: {exc}"
    if a.action in _SETTERS:
        if not a.key:
            return "key is required"
        if (a.value is None) == (a.from_attribute is None):
            return "exactly one of value or from_attribute must be given"
    elif a.action in (Action.DELETE, Action.HASH):
        if not a.key and a.pattern is None:
            return "key or pattern is required"
    elif a.action is Action.EXTRACT:
        if not a.key or a.pattern is None:
            return "key and pattern are required"
        if not re.compile(a.pattern).groupindex:
            return "pattern must have named groups like (?P<name>...)"
    elif a.action is Action.CONVERT:
        if not a.key:
            return "key is required"
        if a.converted_type is None:
            return "converted_type is required: int, double or string"
    return None


_USES = {
    Action.INSERT: ("value", "from_attribute"),
    Action.UPDATE: ("value", "from_attribute"),
    Action.UPSERT: ("value", "from_attribute"),
    Action.DELETE: ("pattern",),
    Action.HASH: ("pattern",),
    Action.EXTRACT: ("pattern",),
    Action.CONVERT: ("converted_type",),
}

# A validated, non-empty list of actions.
Actions = Annotated[list[ActionConfig], AfterValidator(_check)]

# Changes one repeated KeyValue field in place.
Step = Callable[[Any], None]


class AttributeActions:
    """Compiled actions; `apply` runs them on one repeated KeyValue field."""

    def __init__(self, actions: list[ActionConfig]) -> None:
        self._steps = [_compile(a) for a in actions]

    def apply(self, attrs) -> None:
        for step in self._steps:
            step(attrs)


def _compile(a: ActionConfig) -> Step:
    if a.action in _SETTERS:
        return _setter(a)
    if a.action in (Action.DELETE, Action.HASH):
        selected = _key_selector(a.key, a.pattern)
        return _deleter(selected) if a.action is Action.DELETE else _hasher(selected)
    # _problem has refused configs without the fields each action needs.
    if a.action is Action.EXTRACT:
        assert a.key and a.pattern is not None
        return _extractor(a.key, re.compile(a.pattern))
    assert a.key and a.converted_type is not None
    return _converter(a.key, _CONVERTERS[a.converted_type])


def _setter(a: ActionConfig) -> Step:
    assert a.key, "refused by _problem"
    key, insert, update = a.key, a.action != Action.UPDATE, a.action != Action.INSERT
    if a.from_attribute is None:
        constant = python_to_any_value(a.value)

        def source(attrs) -> AnyValue | None:
            return constant
    else:
        from_key = a.from_attribute

        def source(attrs) -> AnyValue | None:
            kv = find_attr(attrs, from_key)
            return None if kv is None else kv.value

    def step(attrs) -> None:
        value = source(attrs)
        if value is None:
            return
        kv = find_attr(attrs, key)
        if kv is None:
            if insert:
                new = attrs.add()
                new.key = key
                new.value.CopyFrom(value)
        elif update and kv.value is not value:
            kv.value.CopyFrom(value)

    return step


def _key_selector(key: str | None, pattern: str | None) -> Callable[[str], bool]:
    regex = None if pattern is None else re.compile(pattern)
    return lambda k: k == key or (regex is not None and regex.search(k) is not None)


def _deleter(selected: Callable[[str], bool]) -> Step:
    def step(attrs) -> None:
        # Backwards, so deleting does not shift the indexes still to visit.
        for i in range(len(attrs) - 1, -1, -1):
            if selected(attrs[i].key):
                del attrs[i]

    return step


def _hasher(selected: Callable[[str], bool]) -> Step:
    def step(attrs) -> None:
        for kv in attrs:
            if selected(kv.key):
                kv.value.string_value = hashlib.sha256(value_text(kv.value).encode()).hexdigest()

    return step


def _extractor(key: str, pattern: re.Pattern) -> Step:
    def step(attrs) -> None:
        kv = find_attr(attrs, key)
        if kv is None or kv.value.WhichOneof("value") != "string_value":
            return
        match = pattern.search(kv.value.string_value)
        if match is None:
            return
        for name, text in match.groupdict().items():
            if text is not None:
                target = find_attr(attrs, name) or attrs.add()
                target.key = name
                target.value.string_value = text

    return step


def _converter(key: str, convert: Callable[[AnyValue], None]) -> Step:
    def step(attrs) -> None:
        kv = find_attr(attrs, key)
        if kv is not None:
            convert(kv.value)

    return step


def _to_int(value: AnyValue) -> None:
    kind = value.WhichOneof("value")
    if kind == "double_value" and math.isfinite(value.double_value):
        value.int_value = int(value.double_value)
    elif kind == "bool_value":
        value.int_value = int(value.bool_value)
    elif kind == "string_value" and _INT_RE.fullmatch(value.string_value.strip()):
        value.int_value = int(value.string_value)


def _to_double(value: AnyValue) -> None:
    kind = value.WhichOneof("value")
    if kind == "int_value":
        value.double_value = float(value.int_value)
    elif kind == "bool_value":
        value.double_value = float(value.bool_value)
    elif kind == "string_value":
        with contextlib.suppress(ValueError):
            value.double_value = float(value.string_value)


def _to_string(value: AnyValue) -> None:
    if value.WhichOneof("value") != "string_value":
        value.string_value = value_text(value)


_CONVERTERS = {"int": _to_int, "double": _to_double, "string": _to_string}
