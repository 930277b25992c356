"""An entry as the operators see it, and fields: paths into its body, attributes or resource
written as the Collector's stanza writes them (`body.a.b`, `attributes["k8s.pod.name"]`,
`resource.host`, a bare `a` meaning `body.a`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROOTS = ("body", "attributes", "resource")
_KEY = re.compile(r"""\.([^.\[\]]+)|\[\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\s*\]""")
_FIRST = re.compile(r"""[^.\[\]]+""")


@dataclass(slots=True)
class Entry:
    """One log entry: `body` is a string (bytes with encoding nop) until an operator makes it
    a map; times are nanoseconds since the epoch (0: not set)."""

    body: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    timestamp: int = 0
    observed: int = 0
    severity: int = 0
    severity_text: str = ""


@dataclass(frozen=True, slots=True)
class Field:
    root: str  # "body", "attributes" or "resource"
    keys: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Field:
        """ValueError when `text` is not a field."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a field must be a non-empty string like body.message")
        text = text.strip()
        first = _FIRST.match(text)
        if first is None:
            raise ValueError(f"invalid field {text!r}: it must start with a name")
        keys: list[str] = []
        root = first.group(0)
        if root not in ROOTS:
            keys.append(root)
            root = "body"
        pos = first.end()
        while pos < len(text):
            m = _KEY.match(text, pos)
            if m is None:
                raise ValueError(
                    f'invalid field {text!r} at {text[pos:]!r}: expected .name or ["name"]'
                )
            key = next(g for g in m.groups() if g is not None)
            keys.append(re.sub(r"\\(.)", r"\1", key) if m.group(1) is None else key)
            pos = m.end()
        return cls(root, tuple(keys))

    def __str__(self) -> str:
        return self.root + "".join(
            f".{k}" if re.fullmatch(r"[^.\[\]\"']+", k) else f'["{k}"]' for k in self.keys
        )

    # --- access -----------------------------------------------------------------------------

    def _container(self, entry: Entry) -> Any:
        return getattr(entry, self.root)

    def get(self, entry: Entry) -> tuple[Any, bool]:
        """(value, True), or (None, False) when the entry has no such field."""
        value = self._container(entry)
        for key in self.keys:
            if not isinstance(value, dict) or key not in value:
                return None, False
            value = value[key]
        return value, True

    def set(self, entry: Entry, value: Any) -> None:
        """Write `value`, making maps on the way (a value in the way is replaced by a map). A
        map written to the root of attributes or resource is merged into it; anything else
        there is an error (ValueError)."""
        if not self.keys:
            if self.root == "body":
                entry.body = value
            elif isinstance(value, dict):
                self._container(entry).update(value)
            else:
                raise ValueError(f"cannot set {self.root} to a {type(value).__name__}: not a map")
            return
        if self.root == "body" and not isinstance(entry.body, dict):
            entry.body = {}
        target = self._container(entry)
        for key in self.keys[:-1]:
            child = target.get(key)
            if not isinstance(child, dict):
                child = target[key] = {}
            target = child
        target[self.keys[-1]] = value

    def delete(self, entry: Entry) -> tuple[Any, bool]:
        """Remove the field; (its value, True), or (None, False) when there was none. The root
        of attributes or resource is emptied; the root of body becomes None."""
        if not self.keys:
            if self.root == "body":
                value, entry.body = entry.body, None
                return value, True
            container = self._container(entry)
            value = dict(container)
            container.clear()
            return value, True
        target = self._container(entry)
        for key in self.keys[:-1]:
            if not isinstance(target, dict) or key not in target:
                return None, False
            target = target[key]
        if not isinstance(target, dict) or self.keys[-1] not in target:
            return None, False
        return target.pop(self.keys[-1]), True


def check_field(text: str) -> str:
    """A pydantic validator: `text` when it is a field."""
    Field.parse(text)
    return text
