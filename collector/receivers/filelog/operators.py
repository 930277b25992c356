"""The operators an entry goes through, as the Collector's stanza names and configures them:
parsers (`regex_parser`, `json_parser`, with embedded `timestamp` and `severity` blocks;
`time_parser`, `severity_parser`), field operators (`add`, `copy`, `move`, `remove`, `noop`)
and `router`.

Each operator has an `id` (its type unless set), an `output` (the next operator unless it names
a later one), `if` (an expression: the operator only acts on entries where it holds) and
`on_error`: `send` (default: the entry goes on as it is), `drop`, and their `_quiet` forms that
log at debug level. An operator's failures are logged once per kind, then counted. Outputs
only point forward and name one operator each: a pipeline is a path, never a loop or a fan-out.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from collector.core.config_types import ComponentConfig
from collector.receivers.filelog.entry import Entry, check_field
from collector.receivers.filelog.entry import Field as EntryField
from collector.receivers.filelog.expr import ExprError, check_expr, compile_expr, value_expr
from collector.receivers.filelog.goregex import go_regex
from collector.receivers.filelog.severity import SHORT_NAMES, build_mapping, lookup
from collector.receivers.filelog.timeparse import TimeParser

FieldPath = Annotated[str, AfterValidator(check_field)]
OnError = Literal["send", "send_quiet", "drop", "drop_quiet"]


class OperatorError(Exception):
    """An operator could not process an entry; its `on_error` decides what happens next."""


# --- configs -----------------------------------------------------------------------------------


class TimestampConfig(ComponentConfig):
    parse_from: FieldPath
    """The field holding the time, like attributes.time. Required."""
    layout_type: Literal["strptime", "gotime", "epoch"] = "strptime"
    """How `layout` is written: `strptime` (default, `%Y-%m-%d %H:%M:%S`), `gotime`
    (`2006-01-02 15:04:05`) or `epoch` (`s`, `ms`, `us`, `ns`, `s.ms`, `s.us`, `s.ns`)."""
    layout: str
    """The time's layout. Required."""
    location: str = "Local"
    """IANA time zone of times that name none (default Local: the machine's)."""
    time_zone_locations: dict[str, str] = Field(default_factory=dict)
    """IANA time zones of `%Z` abbreviations, like PDT: America/Los_Angeles (default none)."""

    @model_validator(mode="after")
    def _compiles(self):
        TimeParser(self.layout_type, self.layout, self.location, self.time_zone_locations)
        return self

    def build(self) -> TimeParser:
        return TimeParser(self.layout_type, self.layout, self.location, self.time_zone_locations)


class SeverityConfig(ComponentConfig):
    parse_from: FieldPath
    """The field holding the severity, like attributes.level. Required."""
    preset: Literal["default", "none", "otel", "aliases"] = "default"
    """The values known before `mapping`: `default` (the level names, their numbers 1-24,
    `warning`, `err`), `otel` (names and numbers only) or `none`."""
    mapping: dict[str, Any] = Field(default_factory=dict)
    """Level (trace ... fatal4) -> value, list of values, range {min, max} or `2xx`..`5xx`.
    Text matches case-insensitively."""
    overwrite_text: bool = False
    """Set the severity text to the level's short name (ERROR, INFO2, ...) instead of the
    value as found (default false)."""

    @model_validator(mode="after")
    def _builds(self):
        build_mapping(self.preset, self.mapping)
        return self


def _one_output(value: str | list[str]) -> str:
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError("an output names one operator: coldtail's operators do not fan out")
        return value[0] if value else ""
    return value


Output = Annotated[str, BeforeValidator(_one_output)]


class OperatorConfig(ComponentConfig):
    id: str = ""
    """The operator's name, for another's `output` (default: its type)."""
    output: Output = ""
    """The `id` of a later operator to hand entries to (default: the next one)."""
    on_error: OnError = "send"
    """On failure: `send` the entry on unchanged (default) or `drop` it; `_quiet` forms log
    at debug level."""
    if_: Annotated[str, AfterValidator(check_expr)] = Field("", alias="if")
    """An expression (like `body matches "^{"`): the operator acts only on entries where it
    is true, the others pass on unchanged. Default empty: every entry."""

    @property
    def name(self) -> str:
        return self.id or str(getattr(self, "type", ""))


class _ParserConfig(OperatorConfig):
    parse_from: FieldPath = "body"
    """The field to parse (default body)."""
    parse_to: FieldPath = "attributes"
    """Where the parsed map goes (default attributes, merged into them)."""
    timestamp: TimestampConfig | None = None
    """Parse the entry's time from a field once this parser succeeded."""
    severity: SeverityConfig | None = None
    """Parse the entry's severity from a field once this parser succeeded."""


class CacheConfig(ComponentConfig):
    size: int = Field(0, ge=0, le=100_000)
    """How many distinct values keep their parsed result (default 0: no cache)."""


class RegexParserConfig(_ParserConfig):
    type: Literal["regex_parser"]
    """regex_parser: named groups of a regular expression."""
    regex: str
    """A regular expression (Go syntax) whose named groups become the parsed map. Required."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    """Remember the results of the last `size` distinct values (file paths, say)."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(go_regex(value))
        except re.error as e:
            raise ValueError(f"invalid regex {value!r}: {e}") from None
        if not compiled.groupindex:
            raise ValueError("regex has no named group, like (?P<level>\\w+)")
        return value


class JsonParserConfig(_ParserConfig):
    type: Literal["json_parser"]
    """json_parser: a JSON object."""


class TimeParserConfig(OperatorConfig, TimestampConfig):
    type: Literal["time_parser"]
    """time_parser: the entry's time from a field."""


class SeverityParserConfig(OperatorConfig, SeverityConfig):
    type: Literal["severity_parser"]
    """severity_parser: the entry's severity from a field."""


class AddConfig(OperatorConfig):
    type: Literal["add"]
    """add: set a field to a value."""
    field: FieldPath
    """The field to set. Required."""
    value: Any
    """The value: text, a number, a list, a map, or `EXPR(expression)` computed per entry.
    Required."""

    @field_validator("value")
    @classmethod
    def _expression_compiles(cls, value: Any) -> Any:
        value_expr(value)
        return value


class CopyConfig(OperatorConfig):
    type: Literal["copy"]
    """copy: copy a field's value to another field."""
    from_: FieldPath = Field(alias="from")
    """The field to copy. Required."""
    to: FieldPath
    """Where to copy it. Required."""


class MoveConfig(OperatorConfig):
    type: Literal["move"]
    """move: move (rename) a field."""
    from_: FieldPath = Field(alias="from")
    """The field to move. Required."""
    to: FieldPath
    """Where to move it; a map moved to `body` when the body is a map is merged into it."""


class RemoveConfig(OperatorConfig):
    type: Literal["remove"]
    """remove: delete a field (all attributes or resource attributes for their root)."""
    field: FieldPath
    """The field to remove. Required."""


class NoopConfig(OperatorConfig):
    type: Literal["noop"]
    """noop: pass entries on unchanged."""


class RouteConfig(ComponentConfig):
    output: Output
    """The operator that gets the entries this route takes. Required."""
    expr: Annotated[str, AfterValidator(check_expr)]
    """An expression; the first route whose expression is true takes the entry. Required."""
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Attributes added to the entries this route takes (default none)."""


class RouterConfig(OperatorConfig):
    type: Literal["router"]
    """router: send each entry to the operator of the first route whose expression holds."""
    routes: list[RouteConfig] = Field(min_length=1)
    """The routes, tried in order. Required."""
    default: Output = ""
    """Where entries no route takes go (default: they are dropped, as the Collector does)."""

    @model_validator(mode="after")
    def _no_output(self):
        if self.output:
            raise ValueError("a router has routes and a default, not an output")
        return self


Operator = Annotated[
    RegexParserConfig
    | JsonParserConfig
    | TimeParserConfig
    | SeverityParserConfig
    | AddConfig
    | CopyConfig
    | MoveConfig
    | RemoveConfig
    | NoopConfig
    | RouterConfig,
    Field(discriminator="type"),
]


def operator_names(configs: Sequence[OperatorConfig]) -> list[str]:
    """Each operator's id: its `id`, else its type, numbered from the second of a type on
    (`move`, `move1`, `move2`), as the Collector names them."""
    names: list[str] = []
    counts: dict[str, int] = {}
    for c in configs:
        if c.id:
            names.append(c.id)
            continue
        count = counts.get(c.name, 0)
        counts[c.name] = count + 1
        names.append(c.name + (str(count) if count else ""))
    return names


def check_pipeline(configs: Sequence[OperatorConfig]) -> None:
    """ValueError for an id used twice or an `output` that is not a later operator."""
    names = operator_names(configs)
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValueError(f"operators: two operators have the id {name!r}")
    for i, c in enumerate(configs):
        targets = [c.output]
        if isinstance(c, RouterConfig):
            targets = [route.output for route in c.routes] + [c.default]
        for target in targets:
            if target and target not in names[i + 1 :]:
                raise ValueError(
                    f"operators: {c.name!r} outputs to {target!r}, which is not an operator "
                    "after it"
                )


# --- runtime -----------------------------------------------------------------------------------


DROP = -1  # where a dropped entry goes
Report = Callable[[str, Exception, str], None]  # (operator, error, on_error)


class _Step:
    """A built operator: `apply` changes the entry in place or raises OperatorError; it
    returns the index of the operator to go to, or None for `next`."""

    def __init__(self, config: OperatorConfig) -> None:
        self.name = config.name
        self.on_error = config.on_error
        self.condition = compile_expr(config.if_) if config.if_ else None
        self.next = DROP  # set by Pipeline
        self.report: Report = lambda name, error, on_error: None  # set by Pipeline

    def applies(self, entry: Entry) -> bool:
        """Whether `if` holds; an expression that cannot be evaluated does not."""
        if self.condition is None:
            return True
        try:
            return self.condition(entry) is True
        except ExprError as e:
            self.report(self.name, OperatorError(f"if: {e}"), "send_quiet")
            return False

    def apply(self, entry: Entry) -> int | None:
        raise NotImplementedError


class _TimeParse:
    def __init__(self, config: TimestampConfig) -> None:
        self.field = EntryField.parse(config.parse_from)
        self.parser = config.build()

    def apply(self, entry: Entry) -> None:
        value, found = self.field.get(entry)
        if not found:
            raise OperatorError(f"entry has no time field {self.field}")
        try:
            entry.timestamp = self.parser.parse(value)
        except ValueError as e:
            raise OperatorError(str(e)) from None


class _SeverityParse:
    def __init__(self, config: SeverityConfig) -> None:
        self.field = EntryField.parse(config.parse_from)
        self.table = build_mapping(config.preset, config.mapping)
        self.overwrite_text = config.overwrite_text

    def apply(self, entry: Entry) -> None:
        value, found = self.field.get(entry)
        if not found:
            raise OperatorError(f"entry has no severity field {self.field}")
        try:
            number, text = lookup(self.table, value)
        except ValueError as e:
            raise OperatorError(str(e)) from None
        entry.severity = number
        entry.severity_text = SHORT_NAMES[number] if self.overwrite_text and number else text


class _Parser(_Step):
    def __init__(self, config: _ParserConfig) -> None:
        super().__init__(config)
        self.parse_from = EntryField.parse(config.parse_from)
        self.parse_to = EntryField.parse(config.parse_to)
        self.embedded: list[_TimeParse | _SeverityParse] = []
        if config.timestamp:
            self.embedded.append(_TimeParse(config.timestamp))
        if config.severity:
            self.embedded.append(_SeverityParse(config.severity))

    def parse(self, value: Any) -> dict[str, Any]:
        raise NotImplementedError

    def apply(self, entry: Entry) -> int | None:
        value, found = self.parse_from.get(entry)
        if not found:
            raise OperatorError(f"entry has no field {self.parse_from}")
        parsed = self.parse(value)
        try:
            self.parse_to.set(entry, parsed)
        except ValueError as e:
            raise OperatorError(str(e)) from None
        # The embedded steps run independently: a bad time does not keep the severity out.
        errors = []
        for step in self.embedded:
            try:
                step.apply(entry)
            except OperatorError as e:
                errors.append(str(e))
        if errors:
            raise OperatorError("; ".join(errors))
        return None


class _RegexParser(_Parser):
    def __init__(self, config: RegexParserConfig) -> None:
        super().__init__(config)
        self.regex = re.compile(go_regex(config.regex))
        self.names = [n for n, _ in sorted(self.regex.groupindex.items(), key=lambda kv: kv[1])]
        self.cache_size = config.cache.size
        self.cache: dict[str, dict[str, str]] = {}

    def parse(self, value: Any) -> dict[str, Any]:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise OperatorError(f"type {type(value).__name__} cannot be parsed with a regex")
        cached = self.cache.get(value)
        if cached is not None:
            return dict(cached)
        m = self.regex.search(value)
        if m is None:
            raise OperatorError("regex pattern does not match")
        parsed = {name: m.group(name) or "" for name in self.names}
        if self.cache_size:
            if len(self.cache) >= self.cache_size:
                del self.cache[next(iter(self.cache))]  # first in, first out
            self.cache[value] = dict(parsed)
        return parsed


class _JsonParser(_Parser):
    def parse(self, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        if not isinstance(value, str | bytes):
            raise OperatorError(f"type {type(value).__name__} cannot be parsed as JSON")
        try:
            parsed = json.loads(value)
        except ValueError as e:
            raise OperatorError(f"not JSON: {e}") from None
        if not isinstance(parsed, dict):
            raise OperatorError(f"JSON {type(parsed).__name__} is not an object")
        return parsed


class _Embedded(_Step):
    """time_parser and severity_parser: what a parser embeds, as an operator of its own."""

    def __init__(self, config: OperatorConfig, inner: _TimeParse | _SeverityParse) -> None:
        super().__init__(config)
        self.inner = inner

    def apply(self, entry: Entry) -> int | None:
        self.inner.apply(entry)
        return None


class _Add(_Step):
    def __init__(self, config: AddConfig) -> None:
        super().__init__(config)
        self.field = EntryField.parse(config.field)
        self.value = config.value
        self.expression = value_expr(config.value)

    def apply(self, entry: Entry) -> int | None:
        try:
            if self.expression is not None:
                value = self.expression(entry)
            else:
                value = copy.deepcopy(self.value)
            self.field.set(entry, value)
        except ValueError as e:  # ExprError too
            raise OperatorError(str(e)) from None
        return None


class _Copy(_Step):
    def __init__(self, config: CopyConfig | MoveConfig) -> None:
        super().__init__(config)
        self.source = EntryField.parse(config.from_)
        self.target = EntryField.parse(config.to)

    def apply(self, entry: Entry) -> int | None:
        value, found = self.source.get(entry)
        if not found:
            raise OperatorError(f"entry has no field {self.source}")
        try:
            self.target.set(entry, copy.deepcopy(value))
        except ValueError as e:
            raise OperatorError(str(e)) from None
        return None


class _Move(_Copy):
    def apply(self, entry: Entry) -> int | None:
        value, found = self.source.get(entry)
        if not found:
            raise OperatorError(f"entry has no field {self.source}")
        if self.target.root == "body" and not self.target.keys:
            self.source.delete(entry)
            if isinstance(value, dict) and isinstance(entry.body, dict):
                entry.body.update(value)  # a layer merged into the body, as stanza does
            else:
                entry.body = value
            return None
        if self.target.root != "body" and not self.target.keys and not isinstance(value, dict):
            raise OperatorError(f"cannot move a {type(value).__name__} to {self.target.root}")
        self.source.delete(entry)
        self.target.set(entry, value)
        return None


class _Remove(_Step):
    def __init__(self, config: RemoveConfig) -> None:
        super().__init__(config)
        self.field = EntryField.parse(config.field)

    def apply(self, entry: Entry) -> int | None:
        _, found = self.field.delete(entry)
        if not found:
            raise OperatorError(f"entry has no field {self.field}")
        return None


class _Noop(_Step):
    def apply(self, entry: Entry) -> int | None:
        return None


class _Router(_Step):
    def __init__(self, config: RouterConfig) -> None:
        super().__init__(config)
        self.routes = [
            (compile_expr(route.expr), route.output, route.attributes) for route in config.routes
        ]
        self.default = config.default
        self.targets: dict[str, int] = {}  # operator id -> index, set by Pipeline

    def apply(self, entry: Entry) -> int | None:
        for condition, output, attributes in self.routes:
            try:
                taken = condition(entry) is True
            except ExprError as e:
                self.report(self.name, OperatorError(f"route to {output}: {e}"), "send_quiet")
                continue
            if taken:
                entry.attributes.update(copy.deepcopy(attributes))
                return self.targets[output]
        return self.targets[self.default] if self.default else DROP


def _build(config: OperatorConfig) -> _Step:
    if isinstance(config, RegexParserConfig):
        return _RegexParser(config)
    if isinstance(config, JsonParserConfig):
        return _JsonParser(config)
    if isinstance(config, TimeParserConfig):
        return _Embedded(config, _TimeParse(config))
    if isinstance(config, SeverityParserConfig):
        return _Embedded(config, _SeverityParse(config))
    if isinstance(config, AddConfig):
        return _Add(config)
    if isinstance(config, MoveConfig):
        return _Move(config)
    if isinstance(config, CopyConfig):
        return _Copy(config)
    if isinstance(config, RemoveConfig):
        return _Remove(config)
    if isinstance(config, RouterConfig):
        return _Router(config)
    return _Noop(config)


class Pipeline:
    """The configured operators, run on one entry at a time from the first, each handing it
    to its output (the next one unless it names a later one). Not thread-safe: one reader
    thread runs it."""

    def __init__(
        self, configs: Sequence[OperatorConfig], log: logging.Logger | logging.LoggerAdapter
    ) -> None:
        self.steps = [_build(c) for c in configs]
        for step, name in zip(self.steps, operator_names(configs), strict=True):
            step.name = name
        index = {step.name: i for i, step in enumerate(self.steps)}
        for i, (step, config) in enumerate(zip(self.steps, configs, strict=True)):
            step.next = index[config.output] if config.output else i + 1
            step.report = self._report
            if isinstance(step, _Router):
                step.targets = index
        self.log = log
        self.failures: dict[tuple[str, str], int] = {}  # (operator, error) -> count

    def run(self, entry: Entry) -> Entry | None:
        """The entry after the operators, or None when one dropped it."""
        i = 0
        while 0 <= i < len(self.steps):
            step = self.steps[i]
            if not step.applies(entry):
                i = step.next
                continue
            try:
                target = step.apply(entry)
            except Exception as e:  # a value no check foresaw fails the entry, not the poll
                self._report(step.name, e, step.on_error)
                if step.on_error.startswith("drop"):
                    return None
                target = None
            i = step.next if target is None else target
        return None if i == DROP else entry

    def _report(self, name: str, error: Exception, on_error: str) -> None:
        if not isinstance(error, OperatorError):
            error = OperatorError(f"{type(error).__name__}: {error}")
        key = (name, str(error)[:200])
        seen = self.failures.get(key, 0)
        if len(self.failures) < 1000 or seen:
            self.failures[key] = seen + 1
        if seen:
            return
        level = logging.DEBUG if on_error.endswith("_quiet") else logging.WARNING
        self.log.log(
            level,
            f"filelog: operator {name} failed, entry {on_error.removesuffix('_quiet')}"
            f" (logged once): {error}",
        )
