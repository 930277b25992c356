"""Raw config assembly: YAML sources, ${env:VAR} expansion, merging, and --set overrides.

Follows the OTel Collector's confmap: several `--config` sources merge in order (maps merge,
lists and scalars replace); `--set key::path=value` (or `key.path=value`) applies last. A value
that is exactly one `${...}` reference takes the referenced text parsed as YAML (so `${env:PORT}`
can be a number); references inside longer strings are substituted as text; `$$` is a literal `$`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_REF = re.compile(r"\$\$|\$\{([^}]*)\}")


class ConfmapError(ValueError):
    """A config source could not be read or parsed; the message names the source."""


def _lookup(ref: str, env: Mapping[str, str], where: str) -> str:
    # ${env:VAR}, ${env:VAR:-default}, ${VAR}, ${VAR:-default}
    scheme, sep, rest = ref.partition(":")
    if sep and scheme == "env":
        ref = rest
    elif sep and not rest.startswith("-"):
        raise ConfmapError(f"{where}: unsupported reference ${{{ref}}} (use ${{env:VAR}})")
    name, has_default, default = ref.partition(":-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfmapError(f"{where}: invalid environment variable name in ${{{ref}}}")
    value = env.get(name)
    if value is None or (has_default and value == ""):
        return default if has_default else ""
    return value


def expand(value: Any, env: Mapping[str, str] | None = None, path: str = "") -> Any:
    """Expand references in every string of a parsed YAML tree."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand(v, env, f"{path}::{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env, f"{path}::{i}") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole and whole.group(1) is not None:
        text = _lookup(whole.group(1), env, path)
        try:
            parsed = yaml.safe_load(text) if text else text
        except yaml.YAMLError:
            return text
        # Only scalars are inferred; structured text stays a string.
        return parsed if isinstance(parsed, str | int | float | bool) else text
    return _REF.sub(lambda m: "$" if m.group(1) is None else _lookup(m.group(1), env, path), value)


def merge(base: Any, override: Any) -> Any:
    """Deep-merge maps; anything else in `override` replaces `base`."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for k, v in override.items():
            out[k] = merge(base[k], v) if k in base else v
        return out
    return override


def _split_key(key: str) -> list[str]:
    return key.split("::") if "::" in key else key.split(".")


def apply_set(tree: dict, assignment: str) -> dict:
    """Apply one `a::b::c=value` (or `a.b.c=value`) override; value parsed as YAML."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfmapError(
            f"--set {assignment!r}: expected key=value, like processors::batch::timeout=2s"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfmapError(f"--set {assignment!r}: value is not valid YAML: {e}") from None
    parts = _split_key(key.strip())
    for part in reversed(parts):
        value = {part: value}
    return merge(tree, value)


def _read_source(source: str) -> Any:
    if source.startswith("yaml:"):
        # Inline YAML with `::` as the key separator, as the Collector accepts.
        text = source[5:]
        key, sep, rest = text.partition(": ")
        if sep and "::" in key:
            parsed = yaml.safe_load(rest)
            for part in reversed(key.split("::")):
                parsed = {part: parsed}
            return parsed
        return yaml.safe_load(text)
    path = Path(source.removeprefix("file:"))
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfmapError(f"cannot read config {source}: {e.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfmapError(f"config {source} is not valid YAML: {e}") from None


def load(
    sources: list[str], sets: list[str] | None = None, env: Mapping[str, str] | None = None
) -> dict:
    """Read, expand and merge `sources` in order, then apply `sets`. Raises ConfmapError."""
    tree: dict = {}
    for source in sources:
        parsed = _read_source(source)
        if parsed is None:
            continue
        if not isinstance(parsed, dict):
            raise ConfmapError(f"config {source}: the top level must be a map")
        tree = merge(tree, expand(parsed, env))
    for assignment in sets or []:
        tree = apply_set(tree, assignment)
    return tree
