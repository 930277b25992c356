"""Prometheus relabeling: the `relabel_configs` and `metric_relabel_configs` rules applied to a
label set, with Prometheus's semantics (anchored regexes, `$1` / `${name}` references expanded
as Go's regexp does, an empty replacement deleting the target label)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from collector.receivers.prometheus.config import RelabelConfig

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# `$$`, `${name}` or `$name`, where a bare name takes every letter, digit and underscore that
# follows (so `$1x` means the group named `1x`, which Prometheus users meet as an empty value).
_REFERENCE = re.compile(r"\$(?:(\$)|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def _expand(template: str, match: re.Match[str]) -> str:
    groups = match.re.groupindex

    def one(ref: re.Match[str]) -> str:
        if ref.group(1):
            return "$"
        name = ref.group(2) or ref.group(3) or ""
        if name.isdigit():
            index = int(name)
            return (match.group(index) or "") if index <= match.re.groups else ""
        return (match.group(name) or "") if name in groups else ""

    if "$" not in template:
        return template
    return _REFERENCE.sub(one, template)


class Rule:
    """One relabel config, compiled."""

    __slots__ = ("action", "config", "regex")

    def __init__(self, config: RelabelConfig) -> None:
        self.config = config
        self.action = config.action
        self.regex = re.compile(f"^(?s:{config.regex})$")

    def apply(self, labels: dict[str, str]) -> bool:
        """Change `labels` in place; False when the rule drops the label set."""
        c = self.config
        action = self.action
        if action in ("labelmap", "labeldrop", "labelkeep"):
            self._on_names(labels)
            return True
        value = c.separator.join(labels.get(name, "") for name in c.source_labels)
        if action == "replace":
            match = self.regex.match(value)
            if match is None:
                return True
            target = _expand(c.target_label, match)
            if not _LABEL_NAME.match(target):
                return True
            result = _expand(c.replacement, match)
            if result:
                labels[target] = result
            else:
                labels.pop(target, None)
            return True
        if action == "keep":
            return self.regex.match(value) is not None
        if action == "drop":
            return self.regex.match(value) is None
        if action == "keepequal":
            return labels.get(c.target_label, "") == value
        if action == "dropequal":
            return labels.get(c.target_label, "") != value
        if action == "hashmod":
            digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
            labels[c.target_label] = str(int.from_bytes(digest[8:], "big") % c.modulus)
            return True
        if action == "lowercase":
            labels[c.target_label] = value.lower()
            return True
        if action == "uppercase":
            labels[c.target_label] = value.upper()
            return True
        raise AssertionError(action)  # the config allows no other action

    def _on_names(self, labels: dict[str, str]) -> None:
        action = self.action
        for name in list(labels):
            match = self.regex.match(name)
            if action == "labelmap":
                if match is not None:
                    labels[_expand(self.config.replacement, match)] = labels[name]
            elif (match is not None) == (action == "labeldrop"):
                del labels[name]


def compile_rules(configs: Sequence[RelabelConfig]) -> list[Rule]:
    return [Rule(c) for c in configs]


def relabel(labels: dict[str, str], rules: Sequence[Rule]) -> dict[str, str] | None:
    """`labels` after `rules` (changed in place), or None when a rule dropped them. Labels left
    with an empty value are removed, as Prometheus does."""
    for rule in rules:
        if not rule.apply(labels):
            return None
    for name in [n for n, v in labels.items() if v == ""]:
        del labels[name]
    return labels
