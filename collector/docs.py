"""The README's generated blocks: the component reference, from the registry and the config
models, and the compatibility table with the OTel Collector, from the registry and
collector/upstream_components.yaml.

`python -m collector.docs README.md` rewrites the blocks between their markers in place;
`--check` exits 1 when the README is out of date (the test suite runs it).
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from collector.core.component import Factory, Kind
from collector.core.config import ServiceModel
from collector.core.config_types import format_duration
from collector.registry import UPSTREAM, registry

BEGIN = "<!-- BEGIN GENERATED COMPONENT REFERENCE -->"
END = "<!-- END GENERATED COMPONENT REFERENCE -->"
COMPAT_BEGIN = "<!-- BEGIN GENERATED COMPATIBILITY -->"
COMPAT_END = "<!-- END GENERATED COMPATIBILITY -->"


def _is_duration(field: FieldInfo) -> bool:
    # parse_duration, or a component's own duration parser built on it (prom_duration).
    return any(
        getattr(getattr(m, "func", None), "__name__", "").endswith("duration")
        for m in field.metadata
    )


def _nested_model(annotation) -> tuple[type[BaseModel], str] | None:
    """The model a field holds, and the key suffix of its options: "" for a model, "[]" for a
    list of models."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            nested = _nested_model(arg)
            if nested is not None:
                return nested
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, "[]"
    return None


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, BaseModel) or value is PydanticUndefined or value is None:
        return ""
    if _is_duration(field) and isinstance(value, int | float):
        return f"`{format_duration(value)}`"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value in ([], {}, ""):
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _type_name(annotation) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("collector.core.config_types.", "")


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        doc = " ".join((field.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | {_default(field)} | {doc} |")
        nested = _nested_model(field.annotation)
        if nested is not None:
            rows.extend(_rows(nested[0], f"{key}{nested[1]}."))
    return rows


def _section(factory: Factory) -> str:
    if factory.kind is Kind.CONNECTOR:
        signals = ", ".join(
            f"{i} → {o} ({st})" for i, outs in factory.signals.items() for o, st in outs.items()
        )
    else:
        signals = ", ".join(f"{s} ({st})" for s, st in factory.signals.items())
    lines = [f"### {factory.kind.value} `{factory.type}`", ""]
    if factory.description:
        lines += [factory.description, ""]
    meta = []
    if signals:
        meta.append(f"Signals: {signals}.")
    if factory.aliases:
        meta.append("Also named " + ", ".join(f"`{a}`" for a in factory.aliases) + ".")
    if meta:
        lines += [" ".join(meta), ""]
    rows = _rows(factory.config)
    if rows:
        lines += ["| option | default | meaning |", "| --- | --- | --- |", *rows, ""]
    else:
        lines += ["No options.", ""]
    return "\n".join(lines)


def reference() -> str:
    parts = [BEGIN, ""]
    for factory in registry().factories():
        parts.append(_section(factory))
    parts += [
        "### `service`",
        "",
        "| option | default | meaning |",
        "| --- | --- | --- |",
        *_rows(ServiceModel),
        "",
        END,
    ]
    return "\n".join(parts)


def compatibility() -> str:
    """The table of upstream component types: which coldtail has, at what stability."""
    upstream = yaml.safe_load(UPSTREAM.read_text())
    lines = [
        COMPAT_BEGIN,
        "",
        "| kind | OTel Collector type | in coldtail | note |",
        "| --- | --- | --- | --- |",
    ]
    reg = registry()
    for kind in Kind:
        for type_, entry in (upstream.get(kind.section) or {}).items():
            factory = reg.get(kind, type_)
            if factory is None:
                have = "no"
            else:
                levels = sorted({str(s) for s in _stabilities(factory)})
                have = f"yes ({', '.join(levels)})" if levels else "yes"
            note = (entry or {}).get("note", "")
            names = " ".join(f"`{n}`" for n in (type_, *(entry or {}).get("aliases", [])))
            lines.append(f"| {kind.value} | {names} | {have} | {note} |")
    lines += ["", COMPAT_END]
    return "\n".join(lines)


def _stabilities(factory: Factory) -> list:
    if factory.kind is Kind.CONNECTOR:
        return [s for outputs in factory.signals.values() for s in outputs.values()]
    return list(factory.signals.values())


def _replace(readme: str, begin: str, end: str, block: str) -> str:
    head, sep, rest = readme.partition(begin)
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise ValueError(f"README lacks the markers {begin} ... {end}")
    return head + block + tail


def render(readme: str) -> str:
    readme = _replace(readme, BEGIN, END, reference())
    return _replace(readme, COMPAT_BEGIN, COMPAT_END, compatibility())


def main(argv: list[str]) -> int:
    check = "--check" in argv
    path = Path(next((a for a in argv if not a.startswith("--")), "README.md"))
    current = path.read_text()
    updated = render(current)
    if check:
        if updated != current:
            print(
                f"{path} component reference is out of date: run python -m collector.docs {path}",
                file=sys.stderr,
            )
            return 1
        return 0
    path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
