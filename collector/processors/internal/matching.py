"""Include/exclude match properties in the Collector's legacy syntax, shared by `filter` and
`attributes`, compiled into predicates over (resource, scope, item).

Within one set of properties every given property must match (AND). In a list of names, kinds,
bodies or libraries any entry may match (OR); every entry of an attribute list must match (AND),
as in the Collector. With `match_type: regexp` a pattern matches when Python's `re.search`
finds it anywhere in the text (Go's `regexp.MatchString`, as the Collector uses); anchor it with
`^...$` to match the whole text.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import AliasChoices, Field, field_validator, model_validator

from collector.core.config_types import ComponentConfig
from collector.core.pdata import any_value_to_python, find_attr, value_text
from collector.core.signals import Signal

# (resource, scope, item) -> matches. The item is a span, a metric or a log record.
Predicate = Callable[[Any, Any, Any], bool]


class MatchType(enum.StrEnum):
    STRICT = "strict"
    REGEXP = "regexp"


_SPAN_KINDS = dict(Span.SpanKind.items())
# Severity names as the Collector accepts them for `severity_number.min`: TRACE=1 ... FATAL4=24.
_SEVERITIES = {
    f"{base}{suffix}": start + offset
    for start, base in (
        (1, "TRACE"),
        (5, "DEBUG"),
        (9, "INFO"),
        (13, "WARN"),
        (17, "ERROR"),
        (21, "FATAL"),
    )
    for offset, suffix in enumerate(("", "2", "3", "4"))
}


class AttributeMatch(ComponentConfig):
    key: str
    """Attribute key to look up. Required."""
    value: Any = None
    """Value to compare. With `strict` the attribute must hold an equal value of the same type;
    with `regexp` this is a pattern searched in the attribute's string form. Unset: the key only
    has to be present."""


class LibraryMatch(ComponentConfig):
    name: str
    """Instrumentation scope name to match. Required."""
    version: str | None = None
    """Instrumentation scope version to match. Unset: any version."""


class SeverityNumberMatch(ComponentConfig):
    min: int
    """Lowest severity number that matches: 1..24 or a name like INFO, WARN2, ERROR. Required."""
    match_undefined: bool = False
    """Whether records without a severity number (0, unspecified) match. Default false."""

    @field_validator("min", mode="before")
    @classmethod
    def _severity(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip().isdigit():
            number = _SEVERITIES.get(value.strip().upper())
            if number is None:
                raise ValueError(
                    f"unknown severity {value!r}: expected 1..24 or one of TRACE, DEBUG, INFO, "
                    "WARN, ERROR, FATAL (optionally followed by 2, 3 or 4)"
                )
            return number
        return value

    @field_validator("min")
    @classmethod
    def _range(cls, value: int) -> int:
        if not 1 <= value <= 24:
            raise ValueError(f"severity number must be 1..24, got {value}")
        return value


class _Props(ComponentConfig):
    """Common base: the match type and the checks every property set needs."""

    match_type: MatchType
    """How strings are compared: `strict` (equal) or `regexp` (re.search). Required."""

    # Fields holding lists of strings that are patterns under regexp.
    _string_fields: ClassVar[tuple[str, ...]] = ()
    # Fields holding lists of AttributeMatch.
    _attribute_fields: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _check(self):
        properties = [n for n in type(self).model_fields if n != "match_type"]
        if not any(getattr(self, n) for n in properties):
            names = ", ".join(properties)
            raise ValueError(f"at least one of {names} must be given")
        if self.match_type is MatchType.REGEXP:
            for name in self._string_fields:
                for pattern in getattr(self, name):
                    _compile(pattern, name)
            for name in self._attribute_fields:
                for entry in getattr(self, name):
                    if entry.value is not None:
                        if not isinstance(entry.value, str):
                            raise ValueError(
                                f"{name}: value of {entry.key!r} must be a string pattern with "
                                "match_type regexp"
                            )
                        _compile(entry.value, name)
        return self

    def _strings(self, values: list[str]) -> Callable[[str], bool]:
        if self.match_type is MatchType.STRICT:
            allowed = frozenset(values)
            return allowed.__contains__
        patterns = [re.compile(v) for v in values]
        return lambda text: any(p.search(text) for p in patterns)

    def _attributes(self, entries: list[AttributeMatch]) -> Callable[[Any], bool]:
        """All entries must match (the Collector ANDs attribute entries)."""
        checks = [(e.key, self._value_check(e.value)) for e in entries]

        def match(attrs) -> bool:
            for key, check in checks:
                kv = find_attr(attrs, key)
                if kv is None or not check(kv.value):
                    return False
            return True

        return match

    def _value_check(self, expected: Any) -> Callable[[AnyValue], bool]:
        if expected is None:
            return lambda _value: True
        if self.match_type is MatchType.REGEXP:
            pattern = re.compile(expected)
            return lambda value: pattern.search(value_text(value)) is not None

        def equal(value: AnyValue) -> bool:
            actual = any_value_to_python(value)
            # In Python True == 1; attribute types must match as in the Collector.
            return actual == expected and isinstance(actual, bool) == isinstance(expected, bool)

        return equal

    def _libraries(self, entries: list[LibraryMatch]) -> Callable[[Any], bool]:
        checks = [
            (self._strings([e.name]), None if e.version is None else self._strings([e.version]))
            for e in entries
        ]
        return lambda scope: any(
            name(scope.name) and (version is None or version(scope.version))
            for name, version in checks
        )


def _compile(pattern: str, field: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{field}: invalid regular expression {pattern!r}: {exc}") from None


def _all(predicates: list[Predicate]) -> Predicate:
    return lambda res, scope, item: all(p(res, scope, item) for p in predicates)


class MatchProperties(_Props):
    """Which spans, log records or metrics a set of properties selects (the Collector's
    `MatchProperties`). Span-only properties (services, span_names, span_kinds) cannot be used for
    logs or metrics, log-only ones (log_*) only for logs, metric_names only for metrics."""

    services: list[str] = []
    """Service names (resource attribute `service.name`) to match. Empty: not checked."""
    span_names: list[str] = []
    """Span names to match. Empty: not checked."""
    span_kinds: list[str] = []
    """Span kinds to match: SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT,
    SPAN_KIND_PRODUCER, SPAN_KIND_CONSUMER or SPAN_KIND_UNSPECIFIED. Empty: not checked."""
    log_bodies: list[str] = []
    """Log bodies (string form) to match. Empty: not checked."""
    log_severity_texts: list[str] = []
    """Log severity texts to match. Empty: not checked."""
    log_severity_number: SeverityNumberMatch | None = None
    """Lowest log severity number to match. Unset: not checked."""
    metric_names: list[str] = []
    """Metric names to match. Empty: not checked."""
    attributes: list[AttributeMatch] = []
    """Span, log record or data point attributes that must all match. Empty: not checked."""
    resource_attributes: list[AttributeMatch] = Field(
        default=[], validation_alias=AliasChoices("resource_attributes", "resources")
    )
    """Resource attributes that must all match; `resources` is accepted as in the Collector.
    Empty: not checked."""
    libraries: list[LibraryMatch] = []
    """Instrumentation scopes (name, optional version) of which one must match. Empty: not
    checked."""

    _string_fields = (
        "services",
        "span_names",
        "span_kinds",
        "log_bodies",
        "log_severity_texts",
        "metric_names",
    )
    _attribute_fields = ("attributes", "resource_attributes")

    @field_validator("span_kinds")
    @classmethod
    def _kinds(cls, kinds: list[str], info) -> list[str]:
        if info.data.get("match_type") is MatchType.STRICT:
            for kind in kinds:
                if kind not in _SPAN_KINDS:
                    raise ValueError(
                        f"unknown span kind {kind!r}: expected one of {', '.join(_SPAN_KINDS)}"
                    )
        return kinds

    def predicate(self, signal: Signal) -> Predicate:
        """The compiled predicate; ValueError when a property does not apply to `signal`."""
        foreign = {
            Signal.TRACES: (
                "log_bodies",
                "log_severity_texts",
                "log_severity_number",
                "metric_names",
            ),
            Signal.LOGS: ("services", "span_names", "span_kinds", "metric_names"),
            Signal.METRICS: (
                "services",
                "span_names",
                "span_kinds",
                "log_bodies",
                "log_severity_texts",
                "log_severity_number",
                "attributes",
            ),
        }[signal]
        used = [name for name in foreign if getattr(self, name)]
        if used:
            raise ValueError(f"{', '.join(used)} cannot be used to match {signal.value}")
        checks: list[Predicate] = []
        if self.services:
            services = self._strings(self.services)
            checks.append(lambda res, _s, _i: services(_service_name(res)))
        if self.span_names:
            names = self._strings(self.span_names)
            checks.append(lambda _r, _s, span: names(span.name))
        if self.span_kinds:
            kinds = self._strings(self.span_kinds)
            checks.append(lambda _r, _s, span: kinds(Span.SpanKind.Name(span.kind)))
        checks += _log_checks(
            self, self.log_bodies, self.log_severity_texts, self.log_severity_number
        )
        if self.metric_names:
            metric_names = self._strings(self.metric_names)
            checks.append(lambda _r, _s, metric: metric_names(metric.name))
        if self.attributes:
            attrs = self._attributes(self.attributes)
            checks.append(lambda _r, _s, item: attrs(item.attributes))
        if self.resource_attributes:
            res_attrs = self._attributes(self.resource_attributes)
            checks.append(lambda res, _s, _i: res_attrs(res.attributes))
        if self.libraries:
            libraries = self._libraries(self.libraries)
            checks.append(lambda _r, scope, _i: libraries(scope))
        return _all(checks)


class LogMatchProperties(_Props):
    """Which log records the filter processor's `logs.include` / `logs.exclude` select."""

    bodies: list[str] = []
    """Log bodies (string form) to match. Empty: not checked."""
    severity_texts: list[str] = []
    """Severity texts to match. Empty: not checked."""
    severity_number: SeverityNumberMatch | None = None
    """Lowest severity number to match. Unset: not checked."""
    record_attributes: list[AttributeMatch] = []
    """Log record attributes that must all match. Empty: not checked."""
    resource_attributes: list[AttributeMatch] = []
    """Resource attributes that must all match. Empty: not checked."""

    _string_fields = ("bodies", "severity_texts")
    _attribute_fields = ("record_attributes", "resource_attributes")

    def predicate(self) -> Predicate:
        checks = _log_checks(self, self.bodies, self.severity_texts, self.severity_number)
        if self.record_attributes:
            attrs = self._attributes(self.record_attributes)
            checks.append(lambda _r, _s, record: attrs(record.attributes))
        if self.resource_attributes:
            res_attrs = self._attributes(self.resource_attributes)
            checks.append(lambda res, _s, _i: res_attrs(res.attributes))
        return _all(checks)


class MetricMatchProperties(_Props):
    """Which metrics the filter processor's `metrics.include` / `metrics.exclude` select (whole
    metrics, with all their data points)."""

    metric_names: list[str] = []
    """Metric names to match. Empty: not checked."""
    resource_attributes: list[AttributeMatch] = []
    """Resource attributes that must all match. Empty: not checked."""

    _string_fields = ("metric_names",)
    _attribute_fields = ("resource_attributes",)

    def predicate(self) -> Predicate:
        checks: list[Predicate] = []
        if self.metric_names:
            names = self._strings(self.metric_names)
            checks.append(lambda _r, _s, metric: names(metric.name))
        if self.resource_attributes:
            res_attrs = self._attributes(self.resource_attributes)
            checks.append(lambda res, _s, _i: res_attrs(res.attributes))
        return _all(checks)


def _service_name(resource) -> str:
    kv = find_attr(resource.attributes, "service.name")
    return "" if kv is None else value_text(kv.value)


def _log_checks(
    props: _Props, bodies: list[str], texts: list[str], severity: SeverityNumberMatch | None
) -> list[Predicate]:
    checks: list[Predicate] = []
    if bodies:
        body = props._strings(bodies)
        checks.append(lambda _r, _s, record: body(value_text(record.body)))
    if texts:
        text = props._strings(texts)
        checks.append(lambda _r, _s, record: text(record.severity_text))
    if severity is not None:
        low, undefined = severity.min, severity.match_undefined
        checks.append(
            lambda _r, _s, record: (
                undefined if record.severity_number == 0 else record.severity_number >= low
            )
        )
    return checks


def selector(include: Predicate | None, exclude: Predicate | None) -> Predicate | None:
    """Matches what `include` matches (everything when None) and `exclude` does not; None when
    neither is given, so callers can skip the check."""
    if include is None and exclude is None:
        return None
    if exclude is None:
        return include
    if include is None:
        return lambda res, scope, item: not exclude(res, scope, item)
    return lambda res, scope, item: include(res, scope, item) and not exclude(res, scope, item)
