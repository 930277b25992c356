"""transform processor: changes spans, span events, metrics, data points and log records with
OTTL statements, as the Collector's transform processor does.

    transform:
      error_mode: ignore
      trace_statements:
        - set(span.attributes["env"], resource.attributes["deployment.environment"])
        - context: span
          conditions: ['kind == SPAN_KIND_SERVER']
          statements: ['replace_pattern(name, "/\\d+", "/{id}")']

A list entry is a statement whose paths name their context (`span.`, `resource.`, ...), or a
group `{context, conditions, statements, error_mode}`. Consecutive statement strings form one
group whose context is the innermost one their paths name (they share each item's `cache`). A
group runs its statements in order on every item of its context (for which any of its
`conditions` holds); groups run one after the other. Statements compile when the config is
validated; a mistake is reported at its key path with its column.

Editors: set, delete_key, delete_matching_keys, keep_keys, keep_matching_keys, truncate_all,
limit, replace_pattern, replace_all_patterns, replace_match, replace_all_matches, merge_maps,
append, flatten (without resolveConflicts), delete_index, stringify_all. Converters:
Base64Encode, Bool, Coalesce, Concat, ContainsValue, ConvertCase, Decode (base64 variants and
Python codecs), Double, Duration, ExtractPatterns, FNV, HasPrefix, HasSuffix, Index, Int,
IsBool, IsDouble, IsEmpty, IsInCIDR, IsInt, IsList, IsMap, IsMatch, IsRootSpan, IsString, Keys,
Len, Log, MD5, ParseInt, ParseJSON, ParseKeyValue, SHA1, SHA256, SHA512, Sort, SpanID, Split,
String, Substring, ToCamelCase, ToKeyValueString, ToLowerCase, ToSnakeCase, ToUpperCase,
TraceID, Trim, TrimPrefix, TrimSuffix, UUID, Values; times: Now, Unix, UnixNano, UnixMicro,
UnixMilli, UnixSeconds, TruncateTime, Year, Month, Day, Hour, Minute, Second, Nanosecond,
Weekday, and durations: Nanoseconds, Microseconds, Milliseconds, Seconds, Minutes, Hours.
Regular expressions are Go's (RE2) as far as Python's `re` reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.signals import Signal
from collector.processors.internal import ottl
from collector.processors.internal.base import Processor
from collector.processors.internal.ottl import (
    SIGNAL_CONTEXTS,
    ErrorMode,
    ErrorPolicy,
    StatementError,
    TransformContext,
)

ContextName = Literal["resource", "scope", "span", "spanevent", "metric", "datapoint", "log"]

_FIELDS = {
    Signal.TRACES: "trace_statements",
    Signal.METRICS: "metric_statements",
    Signal.LOGS: "log_statements",
}


class StatementGroup(ComponentConfig):
    context: ContextName | None = None
    """The level the statements run at: resource, scope, span or spanevent (traces); resource,
    scope, metric or datapoint (metrics); resource, scope or log (logs). Unset: inferred from
    the paths, which then must all start with their context (`span.name`)."""
    conditions: list[str] = Field(default_factory=list)
    """OTTL conditions; the statements run only on items for which at least one holds. Empty:
    every item."""
    statements: list[str]
    """OTTL statements, run in order on each item. Required."""
    error_mode: ErrorMode | None = None
    """This group's error mode (see the processor's). Unset: the processor's."""

    _flat: bool = PrivateAttr(False)

    @model_validator(mode="wrap")
    @classmethod
    def _statement_or_group(cls, data: Any, handler: Callable[[Any], StatementGroup]) -> Any:
        if isinstance(data, str):
            group = handler({"statements": [data]})
            group._flat = True
            return group
        if not isinstance(data, dict | StatementGroup):
            raise ValueError("expected an OTTL statement or a map with `statements`")
        return handler(data)


@dataclass(frozen=True)
class CompiledGroup:
    context: str
    conditions: tuple[tuple[str, Callable[[TransformContext], bool]], ...]
    statements: tuple[tuple[str, Callable[[TransformContext], None]], ...]
    error_mode: ErrorMode


class Config(ComponentConfig):
    error_mode: ErrorMode = "ignore"
    """What a statement failing on an item does: ignore (default, as the OTel Collector since
    0.153: log it, go on with the next statement), silent (go on) or propagate (the batch fails
    and is dropped, the sender is told)."""
    trace_statements: list[StatementGroup] = Field(default_factory=list)
    """Statements for spans and span events: strings (`set(span.attributes["k"], "v")`) or
    groups `{context, conditions, statements, error_mode}`. Empty: traces pass unchanged."""
    metric_statements: list[StatementGroup] = Field(default_factory=list)
    """Statements for metrics and data points, in the same two forms. Empty: unchanged."""
    log_statements: list[StatementGroup] = Field(default_factory=list)
    """Statements for log records, in the same two forms. Empty: unchanged."""

    _compiled: dict[Signal, list[CompiledGroup]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> Config:
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        for signal, name in _FIELDS.items():
            groups, found = _compile_signal(signal, name, getattr(self, name), self.error_mode)
            self._compiled[signal] = groups
            problems.extend(found)
        if problems:
            raise ottl.config_error("transform", problems)
        return self

    def groups(self, signal: Signal) -> list[CompiledGroup]:
        return self._compiled.get(signal, [])


def _compile_signal(
    signal: Signal, field: str, entries: list[StatementGroup], default_mode: ErrorMode
) -> tuple[list[CompiledGroup], list[tuple[tuple[str | int, ...], str, Any]]]:
    """Each configured group, and each run of plain statements as one group, compiled; with
    the problems found, each located at its key path."""
    compiled: list[CompiledGroup] = []
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    i = 0
    while i < len(entries):
        if entries[i]._flat:
            end = i
            while end < len(entries) and entries[end]._flat:
                end += 1
            texts = [entries[j].statements[0] for j in range(i, end)]
            where: list[tuple[str | int, ...]] = [(field, j) for j in range(i, end)]
            group = _Group(signal, None, [], texts, [], where, default_mode)
            i = end
        else:
            entry = entries[i]
            group = _Group(
                signal,
                entry.context,
                entry.conditions,
                entry.statements,
                [(field, i, "conditions", j) for j in range(len(entry.conditions))],
                [(field, i, "statements", j) for j in range(len(entry.statements))],
                entry.error_mode or default_mode,
                (field, i, "context"),
            )
            i += 1
        result = group.compile()
        problems.extend(group.problems)
        if result is not None:
            compiled.append(result)
    return compiled, problems


class _Group:
    """One group being compiled: its texts, where each was written, the problems found."""

    def __init__(
        self,
        signal: Signal,
        context: str | None,
        conditions: list[str],
        statements: list[str],
        condition_locs: list[tuple[str | int, ...]],
        statement_locs: list[tuple[str | int, ...]],
        error_mode: ErrorMode,
        context_loc: tuple[str | int, ...] | None = None,
    ) -> None:
        self.signal = signal
        self.context = context
        self.conditions = list(zip(conditions, condition_locs, strict=True))
        self.statements = list(zip(statements, statement_locs, strict=True))
        self.error_mode = error_mode
        self.context_loc = context_loc or statement_locs[0]
        self.problems: list[tuple[tuple[str | int, ...], str, Any]] = []

    def compile(self) -> CompiledGroup | None:
        """The compiled group, or None with `problems` saying why. Every text is checked, so
        one run reports every mistake."""
        tests = {text: self._parse(text, loc, True) for text, loc in self.conditions}
        runs = {text: self._parse(text, loc, False) for text, loc in self.statements}
        nodes = [node for node in (*tests.values(), *runs.values()) if node is not None]
        context = self._context(nodes) if nodes else None
        if context is None:
            return None
        infer = self.context is None
        conditions = tuple(
            (text, test)
            for text, loc in self.conditions
            if (node := tests[text]) is not None
            and (test := self._attempt(loc, text, node, ottl.compile_condition, context, infer))
        )
        statements = tuple(
            (text, run)
            for text, loc in self.statements
            if (node := runs[text]) is not None
            and (run := self._attempt(loc, text, node, ottl.compile_statement, context, infer))
        )
        if self.problems:
            return None
        return CompiledGroup(context, conditions, statements, self.error_mode)

    def _parse(self, text: str, loc: tuple[str | int, ...], condition: bool) -> Any:
        try:
            return ottl.parse(text, condition)
        except StatementError as e:
            self.problems.append((loc, str(e), text))
            return None

    def _context(self, nodes: list[Any]) -> str | None:
        available = SIGNAL_CONTEXTS[self.signal]
        if self.context is not None:
            if self.context not in available:
                message = f"context {self.context!r} is not one of {', '.join(available)}"
                self.problems.append((self.context_loc, message, self.context))
                return None
            return self.context
        try:
            return ottl.infer_context(self.signal, nodes)
        except StatementError as e:
            self.problems.append((self.context_loc, str(e), self.statements[0][0]))
            return None

    def _attempt(
        self,
        loc: tuple[str | int, ...],
        text: str,
        node: Any,
        compile_: Callable[..., Any],
        context: str,
        infer: bool,
    ) -> Any:
        """`compile_`(node) in `context`, or None with the problem recorded at `loc`."""
        try:
            return compile_(node, self.signal, context, require_prefix=infer)
        except StatementError as e:
            self.problems.append((loc, str(e), text))
            return None


class TransformProcessor(Processor):
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._groups = config.groups(signal)
        self._policies = {
            mode: ErrorPolicy(mode, self.log) for mode in ("propagate", "ignore", "silent")
        }

    def process(self, batch):
        if not self._groups:
            return batch
        try:
            for group in self._groups:
                self._run(group, batch, self._policies[group.error_mode])
        finally:
            self._policies["ignore"].report()
        return batch

    def _run(self, group: CompiledGroup, batch: Any, policy: ErrorPolicy) -> None:
        ctx = TransformContext()
        conditions, statements = group.conditions, group.statements
        for _ in ottl.each(batch, self.signal, group.context, ctx):
            if conditions and not _any_holds(conditions, ctx, policy):
                continue
            for text, run in statements:
                try:
                    run(ctx)
                except Exception as e:  # bad data must not stop the pipeline
                    policy.failed(text, e)


def _any_holds(
    conditions: tuple[tuple[str, Callable[[TransformContext], bool]], ...],
    ctx: TransformContext,
    policy: ErrorPolicy,
) -> bool:
    for text, test in conditions:
        try:
            if test(ctx):
                return True
        except Exception as e:  # a failing condition does not hold
            policy.failed(text, e)
    return False


factory = Factory(
    kind=Kind.PROCESSOR,
    type="transform",
    config=Config,
    create=TransformProcessor,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Changes spans, metrics and log records with OTTL statements.",
)
