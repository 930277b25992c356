"""Severity parsing as the Collector's stanza does it: a value (text or number) looked up in a
mapping of values to the 24 OpenTelemetry severity levels, built from a preset (`default`,
`none` or `otel`) and the operator's `mapping` (alias: value | list | {min, max} | `2xx`)."""

from __future__ import annotations

from typing import Any

# The OpenTelemetry severity numbers by their stanza alias, and their short names.
LEVELS: dict[str, int] = {
    name + (str(step) if step > 1 else ""): base + step - 1
    for base, name in (
        (1, "trace"),
        (5, "debug"),
        (9, "info"),
        (13, "warn"),
        (17, "error"),
        (21, "fatal"),
    )
    for step in range(1, 5)
}
SHORT_NAMES = {number: alias.upper() for alias, number in LEVELS.items()}
_HTTP = {"2xx": (200, 299), "3xx": (300, 399), "4xx": (400, 499), "5xx": (500, 599)}


def preset(name: str) -> dict[str, int]:
    if name == "none":
        return {}
    mapping = dict(LEVELS)
    mapping.update({str(number): number for number in LEVELS.values()})
    if name in ("otel", "aliases"):
        return mapping
    if name != "default":
        raise ValueError(f"unknown preset {name!r}: expected default, none or otel")
    for suffix in ("", "2", "3", "4"):
        mapping["warning" + suffix] = LEVELS["warn" + suffix]
        mapping["err" + suffix] = LEVELS["error" + suffix]
    return mapping


def _values(value: Any) -> list[str]:
    if isinstance(value, bool):
        raise ValueError("a boolean cannot be a severity value")
    if isinstance(value, int):
        return [str(value)]
    if isinstance(value, str):
        if value in _HTTP:
            low, high = _HTTP[value]
            return [str(n) for n in range(low, high + 1)]
        return [value.lower()]
    if isinstance(value, dict) and set(value) == {"min", "max"}:
        low, high = value["min"], value["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            raise ValueError("a range needs integer min and max")
        low, high = min(low, high), max(low, high)
        if high - low > 100_000:
            raise ValueError(f"range {low}..{high} is too wide")
        return [str(n) for n in range(low, high + 1)]
    raise ValueError(f"{value!r} cannot be a severity value: use text, a number, min/max or 2xx")


def build_mapping(preset_name: str, mapping: dict[str, Any]) -> dict[str, int]:
    """The lookup table (lowercase text -> severity number); ValueError names what is wrong."""
    table = preset(preset_name)
    for alias, values in mapping.items():
        level = LEVELS.get(str(alias).lower())
        if level is None:
            raise ValueError(
                f"mapping: unknown severity {alias!r}: expected trace, debug, info, warn, error "
                "or fatal, optionally followed by 2, 3 or 4"
            )
        for value in values if isinstance(values, list) else [values]:
            for text in _values(value):
                table[text] = level
    return table


def lookup(table: dict[str, int], value: Any) -> tuple[int, str]:
    """(severity number, severity text) of `value`: number 0 when the table does not know it.
    ValueError for a value that cannot be a severity (a map, a fraction)."""
    if isinstance(value, bool):
        raise ValueError("type bool cannot be a severity")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("a number that is not whole cannot be a severity")
        value = int(value)
    if isinstance(value, int):
        text = str(value)
        return table.get(text, 0), text
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return table.get(value.lower(), 0), value
    raise ValueError(f"type {type(value).__name__} cannot be a severity")
