"""Which metrics and data points a transform selects: `include` with `match_type` against the
metric name, `experimental_match_labels` against each point's labels; and the expansion of a
regexp's capture groups in `new_name`."""

from __future__ import annotations

import re
from collections.abc import Callable

from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from collector.core.pdata import find_attr, metric_points, value_text
from collector.processors.metricstransform.config import MatchType, Transform, compile_pattern

# A label value (its text, "" when the point lacks the label) -> matches.
ValueMatcher = Callable[[str], bool]


class Selection:
    def __init__(self, transform: Transform) -> None:
        self.include = transform.include
        self.pattern: re.Pattern[str] | None = None
        if transform.match_type is MatchType.REGEXP:
            self.pattern = compile_pattern(transform.include)
        labels = transform.experimental_match_labels
        self.labels = [(key, self._matcher(value)) for key, value in labels.items()]

    def _matcher(self, value: str) -> ValueMatcher:
        if self.pattern is None:
            return value.__eq__
        compiled = compile_pattern(value)
        return lambda text: compiled.search(text) is not None

    def name_match(self, name: str) -> re.Match[str] | bool | None:
        """Truthy when `name` is selected; for regexp, the match (its groups are submatches)."""
        if self.pattern is None:
            return name == self.include
        return self.pattern.search(name)

    def point_matches(self, attrs) -> bool:
        for key, matches in self.labels:
            kv = find_attr(attrs, key)
            if not matches("" if kv is None else value_text(kv.value)):
                return False
        return True

    def point_flags(self, metric: Metric) -> list[bool]:
        """Whether each point of `metric` matches, in order."""
        points = metric_points(metric)
        if not self.labels:
            return [True] * len(points)
        return [self.point_matches(p.attributes) for p in points]

    def selects(self, metric: Metric) -> bool:
        """The metric's name is selected and any of its points (or it has none)."""
        if not self.name_match(metric.name):
            return False
        flags = self.point_flags(metric)
        return not flags or any(flags)

    def all_points_match(self, metric: Metric) -> bool:
        return all(self.point_flags(metric))

    def new_name(self, template: str, name: str) -> str:
        """`template` with the include pattern's groups as matched in `name` expanded; the
        template itself when that gives nothing (strict, no match, or an empty expansion)."""
        if self.pattern is None:
            return template
        match = self.pattern.search(name)
        if match is None:
            return template
        return expand(template, match) or template

    def submatch_labels(self, name: str) -> list[tuple[str, str]]:
        """(label, value) of each capture group the include pattern matched in `name`, named
        after the group or `$N` for an unnamed one; empty matches are left out."""
        if self.pattern is None:
            return []
        match = self.pattern.search(name)
        if match is None:
            return []
        names = {index: group for group, index in self.pattern.groupindex.items()}
        labels = []
        for index in range(1, self.pattern.groups + 1):
            value = match.group(index)
            if value:
                labels.append((names.get(index, f"${index}"), value))
        return labels


def _name_at(template: str, start: int) -> tuple[str, int] | None:
    """The group reference after a `$` at `start`: ({name}, end) for `{name}` or a run of
    letters, digits and underscores, as Go's Regexp.Expand reads it; None when there is none."""
    if start < len(template) and template[start] == "{":
        close = template.find("}", start + 1)
        name = template[start + 1 : close] if close > 0 else ""
        if not name or not all(c.isalnum() or c == "_" for c in name):
            return None
        return name, close + 1
    end = start
    while end < len(template) and (template[end].isalnum() or template[end] == "_"):
        end += 1
    return (template[start:end], end) if end > start else None


def expand(template: str, match: re.Match[str]) -> str:
    """`template` with `$1`, `${1}`, `$name`, `${name}` replaced by the match's groups (empty
    when a group did not take part or does not exist) and `$$` by `$`, as Go's Regexp.Expand."""
    out: list[str] = []
    i = 0
    while i < len(template):
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            break
        out.append(template[i:dollar])
        if template.startswith("$$", dollar):
            out.append("$")
            i = dollar + 2
            continue
        reference = _name_at(template, dollar + 1)
        if reference is None:
            out.append("$")
            i = dollar + 1
            continue
        name, i = reference
        out.append(_group(match, name))
    return "".join(out)


def _group(match: re.Match[str], name: str) -> str:
    groups = match.re.groups
    if name.isdigit() and name.isascii():
        index = int(name)
        return (match.group(index) or "") if index <= groups else ""
    if name in match.re.groupindex:
        return match.group(name) or ""
    return ""
