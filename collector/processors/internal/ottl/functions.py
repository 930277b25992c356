"""The OTTL functions coldtail implements: editors (lowercase, change the data) and converters
(capitalized, return a value), with the upstream names, arguments and semantics.

Each function declares its parameters; the compiler checks a call against them once and hands
`build` the compiled arguments: getters (`ctx -> value`) for values, accessors for paths,
plain Python values for arguments upstream takes as literals (regular expressions, key lists,
limits), so patterns are compiled once. `build` returns the closure run for every item.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import hashlib
import ipaddress
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.core.pdata import metric_points
from collector.processors.internal.ottl.contexts import Accessor, TransformContext
from collector.processors.internal.ottl.values import (
    Duration,
    OttlError,
    PMap,
    PSlice,
    Time,
    equal,
    plain,
    to_text,
    type_name,
    value_of,
)

Getter = Callable[[TransformContext], Any]
Run = Callable[[TransformContext], Any]

# Parameter kinds: what an argument must be.
VALUE = "value"  # any expression, evaluated per item
SETTER = "setter"  # a path that can be written
TARGET = "target"  # a path, changed in place (a map)
STR = "str"  # a string literal
INT = "int"  # an integer literal
BOOL = "bool"  # true or false
STRS = "strs"  # a list literal of strings
VALUES = "values"  # a list literal of expressions
FUNC = "func"  # a converter's name, passed without calling it


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    optional: bool = False
    default: Any = None


@dataclass(frozen=True)
class Function:
    name: str
    params: tuple[Param, ...]
    build: Callable[..., Run]
    contexts: tuple[str, ...] | None = None  # None: every context
    check: Callable[..., None] | None = None  # raises ValueError on bad literal arguments
    unary: Callable[[Any], Any] | None = None  # set when it can be passed as a function

    @property
    def editor(self) -> bool:
        return self.name[:1].islower()


REGISTRY: dict[str, Function] = {}


def function(
    name: str,
    *params: Param,
    contexts: tuple[str, ...] | None = None,
    check: Callable[..., None] | None = None,
) -> Callable[[Callable[..., Run]], Callable[..., Run]]:
    def register(build: Callable[..., Run]) -> Callable[..., Run]:
        REGISTRY[name] = Function(name, params, build, contexts, check)
        return build

    return register


def converter(name: str, *params: Param, unary: bool = False) -> Callable:
    """A converter computed from its arguments' values alone: `impl(*values)`."""

    def register(impl: Callable[..., Any]) -> Callable[..., Any]:
        def build(**args: Any) -> Run:
            getters = [args[p.name] or _const(p.default) for p in params]
            if len(getters) == 0:
                return lambda ctx: impl()
            if len(getters) == 1:
                (g,) = getters
                return lambda ctx: impl(g(ctx))
            if len(getters) == 2:
                g1, g2 = getters
                return lambda ctx: impl(g1(ctx), g2(ctx))
            return lambda ctx: impl(*[g(ctx) for g in getters])

        REGISTRY[name] = Function(name, params, build, unary=impl if unary else None)
        return impl

    return register


def _const(value: Any) -> Getter:
    return lambda ctx: value


# --- helpers -----------------------------------------------------------------------------------


def go_regex(pattern: str) -> re.Pattern[str]:
    """A Go (RE2) regular expression as Python's: `(?<name>` and `\\z` spelled the Python way,
    group names that are not identifiers (`(?P<git.sha>...)`) encoded (see `group_alias`);
    ValueError if invalid."""

    def rename(m: re.Match[str]) -> str:
        return f"(?P<{group_alias(m.group(1))}>"

    text = re.sub(r"\(\?P?<([^>=!][^>]*)>", rename, pattern).replace(r"\z", r"\Z")
    try:
        return re.compile(text)
    except re.error as e:
        raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None


_ALIAS = "_ottl_"


def group_alias(name: str) -> str:
    """A group name Python accepts: the name itself, or its UTF-8 in hex behind a marker."""
    return name if name.isidentifier() else _ALIAS + name.encode().hex()


def group_name(alias: str) -> str:
    """The name `group_alias` was given."""
    if alias.startswith(_ALIAS):
        try:
            return bytes.fromhex(alias[len(_ALIAS) :]).decode()
        except ValueError:
            pass
    return alias


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Go's filepath.Match pattern as a whole-string regex: `*` and `?` stop at `/`."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise ValueError(f"invalid pattern {pattern!r}: unclosed [")
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def expand(template: str, match: re.Match[str]) -> str:
    """Go's Regexp.Expand: `$1`, `${1}`, `$name`, `${name}`; `$$` is a `$`. A name is the
    longest run of letters, digits and underscores, so `$1x` names group `1x` (empty)."""
    out, i, n = [], 0, len(template)
    while i < n:
        ch = template[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = template.find("}", i + 2)
            if end < 0:
                out.append(ch)
                i += 1
                continue
            name, i = template[i + 2 : end], end + 1
        else:
            m = re.match(r"\w+", template[i + 1 :])
            if not m:
                out.append(ch)
                i += 1
                continue
            name, i = m.group(0), i + 1 + m.end()
        out.append(_group(match, name))
    return "".join(out)


def _group(match: re.Match[str], name: str) -> str:
    try:
        if name.isdigit():
            return match.group(int(name)) or ""
        return match.group(group_alias(name)) or ""
    except IndexError:  # no such group
        return ""


def _replacer(
    template_of: Getter, fn: Callable[[Any], Any] | None, fmt: str | None
) -> Callable[[TransformContext], Callable[[re.Match[str]], str]]:
    """Per item, the function re.sub calls for each match: the expanded replacement, through
    the optional function and format."""

    def for_item(ctx: TransformContext) -> Callable[[re.Match[str]], str]:
        template = template_of(ctx)
        if type(template) is not str:
            raise OttlError(f"replacement must be a string, got {type_name(template)}")

        def replace(match: re.Match[str]) -> str:
            text = expand(template, match)
            if fn is not None:
                text = str(fn(text))
                if fmt is not None:
                    text = fmt.replace("%s", text, 1)
            return text

        return replace

    return for_item


def _check_format(replacementFormat: str | None = None, **_: Any) -> None:
    if replacementFormat is not None and replacementFormat.count("%s") != 1:
        raise ValueError("replacementFormat must contain exactly one %s")


def _map_of(value: Any, what: str) -> PMap | dict | None:
    if value is None or isinstance(value, PMap | dict):
        return value
    raise OttlError(f"{what} must be a map, got {type_name(value)}")


def _retain(target: PMap | dict, keep: Callable[[str], bool]) -> None:
    if isinstance(target, PMap):
        target.retain(keep)
    else:
        for key in [k for k in target if not keep(k)]:
            del target[key]


def _string(value: Any, what: str) -> str:
    if type(value) is not str:
        raise OttlError(f"{what} must be a string, got {type_name(value)}")
    return value


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise OttlError(f"{what} must be an int, got {type_name(value)}")
    return value


def _time(value: Any, what: str = "value") -> Time:
    if type(value) is not Time:
        raise OttlError(f"{what} must be a time, got {type_name(value)}")
    return value


def _duration(value: Any, what: str = "value") -> Duration:
    if type(value) is not Duration:
        raise OttlError(f"{what} must be a duration, got {type_name(value)}")
    return value


# --- editors ---------------------------------------------------------------------------------


@function("set", Param("target", SETTER), Param("value", VALUE))
def _set(target: Accessor, value: Getter) -> Run:
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        v = value(ctx)
        if v is not None:  # setting nil does nothing, as upstream without ottl.set.allowNil
            setter(ctx, v)

    return run


@function("delete_key", Param("target", TARGET), Param("key", STR))
def _delete_key(target: Accessor, key: str) -> Run:
    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if isinstance(m, PMap):
            m.delete(key)
        elif m is not None:
            m.pop(key, None)

    return run


def _check_regex(pattern: str, replacementFormat: str | None = None, **_: Any) -> None:
    go_regex(pattern)
    _check_format(replacementFormat)


def _check_glob(pattern: str, replacementFormat: str | None = None, **_: Any) -> None:
    glob_regex(pattern)
    _check_format(replacementFormat)


@function(
    "delete_matching_keys", Param("target", TARGET), Param("pattern", STR), check=_check_regex
)
def _delete_matching_keys(target: Accessor, pattern: str) -> Run:
    regex = go_regex(pattern)
    return _retain_run(target, lambda k: regex.search(k) is None)


@function("keep_keys", Param("target", TARGET), Param("keys", STRS))
def _keep_keys(target: Accessor, keys: list[str]) -> Run:
    wanted = frozenset(keys)
    return _retain_run(target, wanted.__contains__)


@function("keep_matching_keys", Param("target", TARGET), Param("pattern", STR), check=_check_regex)
def _keep_matching_keys(target: Accessor, pattern: str) -> Run:
    regex = go_regex(pattern)
    return _retain_run(target, lambda k: regex.search(k) is not None)


def _retain_run(target: Accessor, keep: Callable[[str], bool]) -> Run:
    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if m is not None:
            _retain(m, keep)

    return run


def _check_truncate(limit: int, truncation_marker: str | None = None, **_: Any) -> None:
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if truncation_marker and len(truncation_marker.encode()) > limit:
        raise ValueError("truncation_marker is longer than limit")


@function(
    "truncate_all",
    Param("target", TARGET),
    Param("limit", INT),
    Param("utf8_safe", BOOL, optional=True, default=True),
    Param("truncation_marker", STR, optional=True, default=""),
    check=_check_truncate,
)
def _truncate_all(
    target: Accessor, limit: int, utf8_safe: bool, truncation_marker: str | None
) -> Run:
    # Python strings are always whole characters, so truncation is always at a character
    # boundary (utf8_safe=false cannot split one).
    marker = truncation_marker or ""
    keep_bytes = limit - len(marker.encode())

    def cut(text: str) -> str | None:
        if len(text) <= limit // 4:
            return None
        raw = text.encode()
        if len(raw) <= limit:
            return None
        return raw[:keep_bytes].decode(errors="ignore") + marker

    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if isinstance(m, PMap):
            for kv in m.kvs:
                if kv.value.WhichOneof("value") == "string_value":
                    short = cut(kv.value.string_value)
                    if short is not None:
                        kv.value.string_value = short
        elif m is not None:
            for k, v in m.items():
                if type(v) is str and (short := cut(v)) is not None:
                    m[k] = short

    return run


def _check_limit(limit: int, priority_keys: list[str], **_: Any) -> None:
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if len(set(priority_keys)) > limit:
        raise ValueError("there are more priority_keys than limit")


@function(
    "limit",
    Param("target", TARGET),
    Param("limit", INT),
    Param("priority_keys", STRS),
    check=_check_limit,
)
def _limit(target: Accessor, limit: int, priority_keys: list[str]) -> Run:
    priority = frozenset(priority_keys)

    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if m is None or len(m) <= limit:
            return
        keys = m.keys() if isinstance(m, PMap) else list(m)
        # Priority keys first, then the others in order, up to the limit.
        room = limit - sum(1 for k in keys if k in priority)
        kept = set()
        for k in keys:
            if k not in priority and room > 0:
                kept.add(k)
                room -= 1
        _retain(m, lambda k: k in priority or k in kept)

    return run


@function(
    "replace_pattern",
    Param("target", SETTER),
    Param("regex", STR),
    Param("replacement", VALUE),
    Param("function", FUNC, optional=True),
    Param("replacementFormat", STR, optional=True),
    check=lambda regex, **kw: _check_regex(regex, **kw),
)
def _replace_pattern(
    target: Accessor,
    regex: str,
    replacement: Getter,
    function: Callable | None,
    replacementFormat: str | None,
) -> Run:
    pattern = go_regex(regex)
    replacer = _replacer(replacement, function, replacementFormat)
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        value = target.get(ctx)
        if type(value) is str:
            updated = pattern.sub(replacer(ctx), value)
            if updated != value:
                setter(ctx, updated)

    return run


@function(
    "replace_all_patterns",
    Param("target", TARGET),
    Param("mode", STR),
    Param("regex", STR),
    Param("replacement", VALUE),
    Param("function", FUNC, optional=True),
    Param("replacementFormat", STR, optional=True),
    check=lambda mode, regex, **kw: _check_mode(mode, regex, **kw),
)
def _replace_all_patterns(
    target: Accessor,
    mode: str,
    regex: str,
    replacement: Getter,
    function: Callable | None,
    replacementFormat: str | None,
) -> Run:
    pattern = go_regex(regex)
    replacer = _replacer(replacement, function, replacementFormat)

    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if m is None:
            return
        replace = replacer(ctx)
        if mode == "value":
            _map_strings(m, lambda s: pattern.sub(replace, s))
        else:
            _rename_keys(m, lambda k: pattern.sub(replace, k))

    return run


def _check_mode(mode: str, regex: str, **rest: Any) -> None:
    if mode not in ("key", "value"):
        raise ValueError(f"mode must be 'key' or 'value', got {mode!r}")
    _check_regex(regex, **rest)


def _map_strings(m: PMap | dict, change: Callable[[str], str]) -> None:
    """Apply `change` to every string value of a map."""
    if isinstance(m, PMap):
        for kv in m.kvs:
            if kv.value.WhichOneof("value") == "string_value":
                updated = change(kv.value.string_value)
                if updated != kv.value.string_value:
                    kv.value.string_value = updated
    else:
        for k, v in m.items():
            if type(v) is str:
                m[k] = change(v)


def _rename_keys(m: PMap | dict, change: Callable[[str], str]) -> None:
    """Rename keys by `change`; a renamed key replaces an entry already holding that name."""
    if isinstance(m, PMap):
        renames = {kv.key: change(kv.key) for kv in m.kvs}
        renames = {old: new for old, new in renames.items() if old != new}
        if not renames:
            return
        taken = set(renames.values())
        m.retain(lambda k: k in renames or k not in taken)
        for kv in m.kvs:
            if kv.key in renames:
                kv.key = renames[kv.key]
    else:
        items = list(m.items())
        m.clear()
        for k, v in items:
            m[change(k)] = v


@function(
    "replace_match",
    Param("target", SETTER),
    Param("pattern", STR),
    Param("replacement", VALUE),
    Param("function", FUNC, optional=True),
    Param("replacementFormat", STR, optional=True),
    check=lambda pattern, **kw: _check_glob(pattern, **kw),
)
def _replace_match(
    target: Accessor,
    pattern: str,
    replacement: Getter,
    function: Callable | None,
    replacementFormat: str | None,
) -> Run:
    glob = glob_regex(pattern)
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        value = target.get(ctx)
        if type(value) is str and glob.match(value):
            setter(ctx, _whole_replacement(ctx, replacement, function, replacementFormat))

    return run


def _whole_replacement(
    ctx: TransformContext, replacement: Getter, fn: Callable | None, fmt: str | None
) -> str:
    text = _string(replacement(ctx), "replacement")
    if fn is not None:
        text = str(fn(text))
        if fmt is not None:
            text = fmt.replace("%s", text, 1)
    return text


@function(
    "replace_all_matches",
    Param("target", TARGET),
    Param("pattern", STR),
    Param("replacement", VALUE),
    Param("function", FUNC, optional=True),
    Param("replacementFormat", STR, optional=True),
    check=lambda pattern, **kw: _check_glob(pattern, **kw),
)
def _replace_all_matches(
    target: Accessor,
    pattern: str,
    replacement: Getter,
    function: Callable | None,
    replacementFormat: str | None,
) -> Run:
    glob = glob_regex(pattern)

    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if m is None:
            return
        new = _whole_replacement(ctx, replacement, function, replacementFormat)
        _map_strings(m, lambda s: new if glob.match(s) else s)

    return run


def _check_strategy(strategy: str, **_: Any) -> None:
    if strategy not in ("insert", "update", "upsert"):
        raise ValueError(f"strategy must be insert, update or upsert, got {strategy!r}")


@function(
    "merge_maps",
    Param("target", TARGET),
    Param("source", VALUE),
    Param("strategy", STR),
    check=_check_strategy,
)
def _merge_maps(target: Accessor, source: Getter, strategy: str) -> Run:
    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        src = source(ctx)
        if not isinstance(src, PMap | dict):
            raise OttlError(f"source must be a map, got {type_name(src)}")
        if m is None:
            return
        entries = plain(src)
        present = set(m.keys()) if isinstance(m, PMap) else set(m)
        for k, v in entries.items():
            if (strategy == "insert" and k in present) or (
                strategy == "update" and k not in present
            ):
                continue
            if isinstance(m, PMap):
                m.set(k, v)
            else:
                m[k] = v

    return run


def _check_append(value: Any = None, values: Any = None, **_: Any) -> None:
    if value is None and values is None:
        raise ValueError("append needs value or values")


@function(
    "append",
    Param("target", SETTER),
    Param("value", VALUE, optional=True),
    Param("values", VALUES, optional=True),
    check=_check_append,
)
def _append(target: Accessor, value: Getter | None, values: list[Getter] | None) -> Run:
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        current = plain(target.get(ctx))
        items = list(current) if isinstance(current, list | tuple) else []
        if current is not None and not isinstance(current, list | tuple):
            items.append(current)
        if value is not None:
            items.append(plain(value(ctx)))
        for g in values or ():
            items.append(plain(g(ctx)))
        setter(ctx, items)

    return run


@function(
    "flatten",
    Param("target", SETTER),
    Param("prefix", STR, optional=True, default=""),
    Param("depth", INT, optional=True, default=100),
    check=lambda depth, **_: _nonnegative(depth, "depth"),
)
def _flatten_editor(target: Accessor, prefix: str | None, depth: int) -> Run:
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if m is not None:
            setter(ctx, _flatten(plain(m), prefix or "", depth))

    return run


def _nonnegative(value: int, name: str) -> None:
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")


def _flatten(m: dict, prefix: str, depth: int) -> dict:
    out: dict[str, Any] = {}
    for k, v in m.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, list) and depth > 0:
            v = {str(i): item for i, item in enumerate(v)}
        if isinstance(v, dict) and depth > 0:
            out.update(_flatten(v, key, depth - 1))
        else:
            out[key] = v
    return out


@function(
    "delete_index",
    Param("target", SETTER),
    Param("startIndex", VALUE),
    Param("endIndex", VALUE, optional=True),
)
def _delete_index(target: Accessor, startIndex: Getter, endIndex: Getter | None) -> Run:
    setter = target.set
    assert setter is not None

    def run(ctx: TransformContext) -> None:
        items = plain(target.get(ctx))
        if not isinstance(items, list):
            raise OttlError(f"target must be a list, got {type_name(items)}")
        start = _int(startIndex(ctx), "startIndex")
        end = _int(endIndex(ctx), "endIndex") if endIndex else start + 1
        if not 0 <= start <= end <= len(items):
            raise OttlError(f"indexes {start}..{end} out of range for a list of {len(items)}")
        if start != end:
            del items[start:end]
            setter(ctx, items)

    return run


@function("stringify_all", Param("target", TARGET))
def _stringify_all(target: Accessor) -> Run:
    def run(ctx: TransformContext) -> None:
        m = _map_of(target.get(ctx), "target")
        if isinstance(m, PMap):
            for kv in m.kvs:
                if kv.value.WhichOneof("value") != "string_value":
                    kv.value.string_value = to_text(value_of(kv.value), "base64") or ""
        elif m is not None:
            for k, v in m.items():
                m[k] = "" if v is None else to_text(v, "base64")

    return run


# --- converters: types ------------------------------------------------------------------------


@converter("IsString", Param("value", VALUE))
def _is_string(v: Any) -> bool:
    return type(v) is str


@converter("IsInt", Param("value", VALUE))
def _is_int(v: Any) -> bool:
    return type(v) is int


@converter("IsDouble", Param("value", VALUE))
def _is_double(v: Any) -> bool:
    return type(v) is float


@converter("IsBool", Param("value", VALUE))
def _is_bool(v: Any) -> bool:
    return type(v) is bool


@converter("IsMap", Param("value", VALUE))
def _is_map(v: Any) -> bool:
    return isinstance(v, PMap | dict)


@converter("IsList", Param("value", VALUE))
def _is_list(v: Any) -> bool:
    return isinstance(v, PSlice | list | tuple)


@converter("IsEmpty", Param("value", VALUE))
def _is_empty(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, PMap | PSlice | dict | list | tuple | str | bytes):
        return len(v) == 0 or (type(v) is bytes and not any(v))
    if isinstance(v, Time | Duration):
        return v.ns == 0
    return not v


@converter("Len", Param("target", VALUE))
def _len(v: Any) -> int:
    """A string's length in UTF-8 bytes (Go's len), a map's or list's in entries."""
    if type(v) is str:
        return len(v) if v.isascii() else len(v.encode())
    if isinstance(v, PMap | PSlice | dict | list | tuple | bytes):
        return len(v)
    raise OttlError(f"Len needs a string, map or list, got {type_name(v)}")


@converter("Int", Param("value", VALUE))
def _to_int(v: Any) -> int | None:
    t = type(v)
    if t is int:
        return v
    if t is bool:
        return int(v)
    if t is float:
        return int(v) if math.isfinite(v) else None
    if t is str:
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


@converter("Double", Param("value", VALUE))
def _to_double(v: Any) -> float | None:
    t = type(v)
    if t is float:
        return v
    if t in (int, bool):
        return float(v)
    if t is str:
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


@converter("Bool", Param("value", VALUE))
def _to_bool(v: Any) -> bool | None:
    t = type(v)
    if t is bool:
        return v
    if t in (int, float):
        return v != 0
    if t is str:
        if v in ("1", "t", "T", "true", "TRUE", "True"):
            return True
        if v in ("0", "f", "F", "false", "FALSE", "False"):
            return False
    return None


@converter("String", Param("value", VALUE))
def _to_string(v: Any) -> str | None:
    return to_text(v)


# --- converters: strings ----------------------------------------------------------------------


@function("Concat", Param("vals", VALUES), Param("delimiter", VALUE))
def _concat(vals: list[Getter], delimiter: Getter) -> Run:
    def run(ctx: TransformContext) -> str:
        sep = _string(delimiter(ctx), "delimiter")
        parts = []
        for g in vals:
            text = to_text(g(ctx))
            parts.append("<nil>" if text is None else text)
        return sep.join(parts)

    return run


@function("IsMatch", Param("target", VALUE), Param("pattern", STR), check=_check_regex)
def _is_match(target: Getter, pattern: str) -> Run:
    regex = go_regex(pattern)

    def run(ctx: TransformContext) -> bool:
        text = to_text(target(ctx), "base64")
        return text is not None and regex.search(text) is not None

    return run


_CASES: dict[str, Callable[[str], str]] = {}


def _snake(text: str) -> str:
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    return re.sub(r"[\s\-.]+", "_", text).lower()


def _camel(text: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\s\-.]+", text) if part)


_CASES.update(lower=str.lower, upper=str.upper, snake=_snake, camel=_camel)


def _check_case(toCase: str, **_: Any) -> None:
    if toCase not in _CASES:
        raise ValueError(f"toCase must be lower, upper, snake or camel, got {toCase!r}")


@function("ConvertCase", Param("target", VALUE), Param("toCase", STR), check=_check_case)
def _convert_case(target: Getter, toCase: str) -> Run:
    change = _CASES[toCase]
    return lambda ctx: change(_string(target(ctx), "target"))


@converter("ToLowerCase", Param("target", VALUE), unary=True)
def _lower(v: Any) -> str:
    return _string(v, "target").lower()


@converter("ToUpperCase", Param("target", VALUE), unary=True)
def _upper(v: Any) -> str:
    return _string(v, "target").upper()


@converter("ToSnakeCase", Param("target", VALUE), unary=True)
def _to_snake(v: Any) -> str:
    return _snake(_string(v, "target"))


@converter("ToCamelCase", Param("target", VALUE), unary=True)
def _to_camel(v: Any) -> str:
    return _camel(_string(v, "target"))


@converter("Substring", Param("target", VALUE), Param("start", VALUE), Param("length", VALUE))
def _substring(target: Any, start: Any, length: Any) -> str:
    text = _string(target, "target")
    start, length = _int(start, "start"), _int(length, "length")
    raw = text.encode()
    if start < 0 or length < 0 or start + length > len(raw):
        raise OttlError(f"substring {start}+{length} is out of range for {len(raw)} bytes")
    return raw[start : start + length].decode(errors="ignore")


@converter("Split", Param("target", VALUE), Param("delimiter", VALUE))
def _split(target: Any, delimiter: Any) -> list[str]:
    text, sep = _string(target, "target"), _string(delimiter, "delimiter")
    return text.split(sep) if sep else list(text)


@converter("Trim", Param("target", VALUE), Param("replacement", VALUE, optional=True))
def _trim(target: Any, replacement: Any) -> str:
    chars = " " if replacement is None else _string(replacement, "replacement")
    return _string(target, "target").strip(chars)


@converter("TrimPrefix", Param("value", VALUE), Param("prefix", VALUE))
def _trim_prefix(value: Any, prefix: Any) -> str:
    return _string(value, "value").removeprefix(_string(prefix, "prefix"))


@converter("TrimSuffix", Param("value", VALUE), Param("suffix", VALUE))
def _trim_suffix(value: Any, suffix: Any) -> str:
    return _string(value, "value").removesuffix(_string(suffix, "suffix"))


@converter("HasPrefix", Param("value", VALUE), Param("prefix", VALUE))
def _has_prefix(value: Any, prefix: Any) -> bool:
    return _string(value, "value").startswith(_string(prefix, "prefix"))


@converter("HasSuffix", Param("value", VALUE), Param("suffix", VALUE))
def _has_suffix(value: Any, suffix: Any) -> bool:
    return _string(value, "value").endswith(_string(suffix, "suffix"))


def _digest(algorithm: str) -> Callable[[Any], str]:
    def digest(v: Any) -> str:
        return hashlib.new(algorithm, _string(v, "value").encode()).hexdigest()

    return digest


for _name, _algorithm in (
    ("SHA1", "sha1"),
    ("SHA256", "sha256"),
    ("SHA512", "sha512"),
    ("MD5", "md5"),
):
    converter(_name, Param("value", VALUE), unary=True)(_digest(_algorithm))


@converter("FNV", Param("value", VALUE), unary=True)
def _fnv(v: Any) -> int:
    """64-bit FNV-1a, as a signed int64 like Go's int64(hash.Sum64())."""
    h = 0xCBF29CE484222325
    for byte in _string(v, "value").encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h - (1 << 64) if h >= 1 << 63 else h


def _json_value(v: Any) -> Any:
    """JSON as OTTL reads it: every number a double."""
    return json.loads(v, parse_int=float, parse_constant=lambda c: None)


@converter("ParseJSON", Param("target", VALUE))
def _parse_json(v: Any) -> Any:
    try:
        parsed = _json_value(_string(v, "target"))
    except json.JSONDecodeError as e:
        raise OttlError(f"ParseJSON: {e}") from None
    if not isinstance(parsed, dict | list):
        raise OttlError(f"ParseJSON: expected a JSON object or array, got {type_name(parsed)}")
    return parsed


@converter(
    "ParseKeyValue",
    Param("target", VALUE),
    Param("delimiter", VALUE, optional=True),
    Param("pair_delimiter", VALUE, optional=True),
)
def _parse_key_value(target: Any, delimiter: Any, pair_delimiter: Any) -> dict:
    text = _string(target, "target")
    sep = "=" if delimiter is None else _string(delimiter, "delimiter")
    pair_sep = " " if pair_delimiter is None else _string(pair_delimiter, "pair_delimiter")
    if not text:
        raise OttlError("ParseKeyValue: cannot parse an empty string")
    if sep == pair_sep:
        raise OttlError("ParseKeyValue: delimiter and pair_delimiter must differ")
    out: dict[str, Any] = {}
    for pair in _split_quoted(text, pair_sep):
        key, found, value = pair.partition(sep)
        if not found:
            raise OttlError(f"ParseKeyValue: {pair!r} has no {sep!r}")
        out[_unquote(key.strip())] = _unquote(value.strip())
    return out


def _split_quoted(text: str, sep: str) -> list[str]:
    """`text` split on `sep` outside double or single quotes, empty parts dropped."""
    parts, current, quote, i = [], [], "", 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
            current.append(ch)
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif text.startswith(sep, i):
            parts.append("".join(current))
            current = []
            i += len(sep)
            continue
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _check_named_groups(pattern: str, **_: Any) -> None:
    if not go_regex(pattern).groupindex:
        raise ValueError("pattern must contain at least one named capture group")


@function(
    "ExtractPatterns", Param("target", VALUE), Param("pattern", STR), check=_check_named_groups
)
def _extract_patterns(target: Getter, pattern: str) -> Run:
    regex = go_regex(pattern)

    def run(ctx: TransformContext) -> dict:
        match = regex.search(_string(target(ctx), "target"))
        if match is None:
            return {}
        return {
            group_name(name): value
            for name, value in match.groupdict().items()
            if value is not None
        }

    return run


_B64 = {
    "base64": (base64.standard_b64encode, base64.standard_b64decode, True),
    "base64-raw": (base64.standard_b64encode, base64.standard_b64decode, False),
    "base64-url": (base64.urlsafe_b64encode, base64.urlsafe_b64decode, True),
    "base64-raw-url": (base64.urlsafe_b64encode, base64.urlsafe_b64decode, False),
}


@converter("Base64Encode", Param("value", VALUE), Param("variant", VALUE, optional=True))
def _base64_encode(value: Any, variant: Any) -> str:
    name = "base64" if variant is None else _string(variant, "variant")
    if name not in _B64:
        raise OttlError(f"unknown base64 variant {name!r}")
    encode, _, padded = _B64[name]
    text = encode(_string(value, "value").encode()).decode()
    return text if padded else text.rstrip("=")


@converter("Decode", Param("value", VALUE), Param("encoding", VALUE))
def _decode(value: Any, encoding: Any) -> str:
    name = _string(encoding, "encoding").lower()
    raw = value if type(value) is bytes else _string(value, "value").encode()
    try:
        if name in _B64:
            _, decode, _ = _B64[name]
            return decode(raw + b"=" * (-len(raw) % 4)).decode("utf-8", errors="replace")
        return codecs.decode(raw, name)
    except (LookupError, ValueError, binascii.Error) as e:
        raise OttlError(f"Decode {name}: {e}") from None


def _id_converter(size: int) -> Callable[[Any], bytes]:
    def make(v: Any) -> bytes:
        if type(v) is str:
            try:
                v = bytes.fromhex(v)
            except ValueError:
                raise OttlError(f"{v!r} is not hex") from None
        if type(v) is not bytes or len(v) != size:
            raise OttlError(f"expected {size} bytes or {2 * size} hex characters")
        return v

    return make


converter("TraceID", Param("bytes", VALUE))(_id_converter(16))
converter("SpanID", Param("bytes", VALUE))(_id_converter(8))


@converter("UUID")
def _uuid() -> str:
    return str(uuid.uuid4())


@function("Coalesce", Param("values", VALUES))
def _coalesce(values: list[Getter]) -> Run:
    def run(ctx: TransformContext) -> Any:
        for g in values:
            v = g(ctx)
            if v is not None:
                return v
        return None

    return run


@converter("ContainsValue", Param("target", VALUE), Param("item", VALUE))
def _contains_value(target: Any, item: Any) -> bool:
    if not isinstance(target, PSlice | list | tuple):
        raise OttlError(f"target must be a list, got {type_name(target)}")
    return any(equal(v, item) for v in target)


@converter("Index", Param("target", VALUE), Param("value", VALUE))
def _index(target: Any, value: Any) -> int:
    if type(target) is str:
        return target.find(_string(value, "value"))
    if isinstance(target, PSlice | list | tuple):
        return next((i for i, v in enumerate(target) if equal(v, value)), -1)
    raise OttlError(f"target must be a string or a list, got {type_name(target)}")


@converter("Keys", Param("target", VALUE))
def _keys(target: Any) -> list[str]:
    m = _map_of(target, "target")
    if m is None:
        raise OttlError("target must be a map, got nil")
    return list(m.keys())


@converter("Values", Param("target", VALUE))
def _values(target: Any) -> list:
    m = _map_of(target, "target")
    if m is None:
        raise OttlError("target must be a map, got nil")
    return list(plain(m).values())


@converter("Log", Param("value", VALUE))
def _log(value: Any) -> float:
    number = _to_double(value)
    if number is None or number <= 0:
        raise OttlError(f"Log needs a number above 0, got {value!r}")
    return math.log(number)


@converter("ParseInt", Param("target", VALUE), Param("base", VALUE))
def _parse_int(target: Any, base: Any) -> int:
    text, radix = _string(target, "target"), _int(base, "base")
    if radix != 0 and not 2 <= radix <= 36:
        raise OttlError(f"base must be 0 or 2..36, got {radix}")
    digits = text.lstrip("+-")
    if radix == 0 and len(digits) > 1 and digits[0] == "0" and digits[1].isdigit():
        text, radix = text.replace("0", "0o", 1), 0  # Go reads a leading 0 as octal
    try:
        value = int(text, radix)
    except ValueError:
        raise OttlError(f"ParseInt: {target!r} is not an integer in base {radix}") from None
    if not -(2**63) <= value < 2**63:
        raise OttlError(f"ParseInt: {target!r} is out of range")
    return value


def _check_networks(networks: list[str], **_: Any) -> None:
    for n in networks:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError:
            raise ValueError(f"invalid network {n!r}") from None


@function("IsInCIDR", Param("target", VALUE), Param("networks", STRS), check=_check_networks)
def _is_in_cidr(target: Getter, networks: list[str]) -> Run:
    nets = [ipaddress.ip_network(n, strict=False) for n in networks]

    def run(ctx: TransformContext) -> bool:
        value = target(ctx)
        if type(value) is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            return False
        return any(address in net for net in nets)

    return run


@converter(
    "ToKeyValueString",
    Param("target", VALUE),
    Param("delimiter", VALUE, optional=True),
    Param("pair_delimiter", VALUE, optional=True),
    Param("sort_output", VALUE, optional=True),
)
def _to_key_value_string(target: Any, delimiter: Any, pair_delimiter: Any, sort_output: Any) -> str:
    m = _map_of(target, "target")
    if m is None:
        raise OttlError("target must be a map, got nil")
    sep = "=" if delimiter is None else _string(delimiter, "delimiter")
    pair_sep = " " if pair_delimiter is None else _string(pair_delimiter, "pair_delimiter")
    items = list(plain(m).items())
    if sort_output is True:
        items.sort()

    def quote(text: str) -> str:
        if sep in text or pair_sep in text:
            return '"' + text.replace('"', '\\"') + '"'
        return text

    return pair_sep.join(f"{quote(str(k))}{sep}{quote(to_text(v) or '')}" for k, v in items)


@converter("Sort", Param("target", VALUE), Param("order", VALUE, optional=True))
def _sort(target: Any, order: Any) -> list:
    direction = "asc" if order is None else _string(order, "order")
    if direction not in ("asc", "desc"):
        raise OttlError(f"order must be asc or desc, got {direction!r}")
    items = plain(target)
    if not isinstance(items, list | tuple):
        raise OttlError(f"target must be a list, got {type_name(target)}")
    items = list(items)
    kinds = {type(v) for v in items}
    if kinds <= {int} or kinds <= {float} or kinds <= {str}:
        key: Callable[[Any], Any] = lambda v: v  # noqa: E731
    elif kinds <= {int, float}:
        key = float
    elif kinds <= {int, float, str, bool}:
        key = lambda v: to_text(v)  # noqa: E731
    else:
        raise OttlError("Sort supports lists of numbers, strings and booleans")
    return sorted(items, key=key, reverse=direction == "desc")


# --- converters: time -------------------------------------------------------------------------

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000}
_DURATION_UNITS.update(s=10**9, m=60 * 10**9, h=3600 * 10**9)
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+|[0-9]+\.)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds."""
    body = text.strip()
    sign = -1 if body.startswith("-") else 1
    body = body.lstrip("+-")
    if body == "0":
        return 0
    total, pos = 0.0, 0
    if not body:
        raise OttlError(f"invalid duration {text!r}")
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            raise OttlError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * round(total)


@converter("Duration", Param("duration", VALUE))
def _duration_of(v: Any) -> Duration:
    return Duration(parse_go_duration(_string(v, "duration")))


@converter("Now")
def _now() -> Time:
    return Time(time.time_ns())


@converter("Unix", Param("seconds", VALUE), Param("nanoseconds", VALUE, optional=True))
def _unix(seconds: Any, nanoseconds: Any) -> Time:
    extra = 0 if nanoseconds is None else _int(nanoseconds, "nanoseconds")
    return Time(_int(seconds, "seconds") * 10**9 + extra)


for _name, _scale in (
    ("UnixNano", 1),
    ("UnixMicro", 1_000),
    ("UnixMilli", 1_000_000),
    ("UnixSeconds", 10**9),
):
    converter(_name, Param("value", VALUE))(lambda v, s=_scale: _time(v).ns // s)

for _name, _scale in (("Nanoseconds", 1), ("Microseconds", 1_000), ("Milliseconds", 1_000_000)):
    converter(_name, Param("value", VALUE))(lambda v, s=_scale: int(_duration(v).ns / s))

for _name, _scale in (("Seconds", 10**9), ("Minutes", 60 * 10**9), ("Hours", 3600 * 10**9)):
    converter(_name, Param("value", VALUE))(lambda v, s=_scale: _duration(v).ns / s)


@converter("TruncateTime", Param("time", VALUE), Param("duration", VALUE))
def _truncate_time(t: Any, d: Any) -> Time:
    step = _duration(d, "duration").ns
    ns = _time(t, "time").ns
    return Time(ns - ns % step if step > 0 else ns)


def _local(t: Time) -> dt.datetime:
    """The time in the collector's time zone, as Go's time.Time methods read it."""
    return dt.datetime.fromtimestamp(t.ns // 10**9).astimezone()


for _name, _part in (
    ("Year", lambda d: d.year),
    ("Month", lambda d: d.month),
    ("Day", lambda d: d.day),
    ("Hour", lambda d: d.hour),
    ("Minute", lambda d: d.minute),
    ("Second", lambda d: d.second),
    ("Weekday", lambda d: d.isoweekday() % 7),
):
    converter(_name, Param("value", VALUE))(lambda v, part=_part: part(_local(_time(v))))

converter("Nanosecond", Param("value", VALUE))(lambda v: _time(v).ns % 10**9)


# --- span and metric converters ------------------------------------------------------------------


@function("IsRootSpan", contexts=("span",))
def _is_root_span() -> Run:
    return lambda ctx: not any(ctx.span.parent_span_id)


def _datapoints(ctx: TransformContext) -> Any:
    return metric_points(ctx.metric)


@function("HasAttrKeyOnDatapoint", Param("key", STR), contexts=("metric",))
def _has_attr_key_on_datapoint(key: str) -> Run:
    return lambda ctx: any(kv.key == key for point in _datapoints(ctx) for kv in point.attributes)


@function("HasAttrOnDatapoint", Param("key", STR), Param("value", STR), contexts=("metric",))
def _has_attr_on_datapoint(key: str, value: str) -> Run:
    return lambda ctx: any(
        kv.key == key
        and kv.value.WhichOneof("value") == "string_value"
        and kv.value.string_value == value
        for point in _datapoints(ctx)
        for kv in point.attributes
    )


FILTER_ONLY = frozenset({"HasAttrKeyOnDatapoint", "HasAttrOnDatapoint"})


def standard(extra: frozenset[str] = frozenset()) -> Mapping[str, Function]:
    """The functions statements may call: all but the filter processor's own, plus `extra`."""
    return {name: f for name, f in REGISTRY.items() if name not in FILTER_ONLY or name in extra}
