"""OTTL, the OpenTelemetry Transformation Language, for the `transform` and `filter` processors.

Statements (`set(span.attributes["x"], "y") where span.name == "z"`) and conditions are parsed
with a lark grammar (`syntax.py`) and compiled once, at config validation, into closures over
a reused `TransformContext` (`compiler.py`, `contexts.py`, `functions.py`); running them on an
item costs attribute lookups and the work the functions do, nothing more. Language: the
upstream LANGUAGE.md; functions and paths: the upstream ottlfuncs and context READMEs, less
what `functions.py` and `contexts.py` leave out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from collector.core.consumer import PermanentError
from collector.core.pdata import LEVELS, metric_points, resources
from collector.core.signals import Signal
from collector.processors.internal.ottl import syntax
from collector.processors.internal.ottl.compiler import Compiler
from collector.processors.internal.ottl.contexts import (
    CHAINS,
    CONTEXTS,
    SIGNAL_CONTEXTS,
    TransformContext,
    owner_of,
)
from collector.processors.internal.ottl.functions import Function, standard
from collector.processors.internal.ottl.syntax import StatementError
from collector.processors.internal.ottl.values import OttlError

ErrorMode = Literal["propagate", "ignore", "silent"]

__all__ = [
    "CONTEXTS",
    "SIGNAL_CONTEXTS",
    "ErrorMode",
    "ErrorPolicy",
    "OttlError",
    "StatementError",
    "TransformContext",
    "compile_condition",
    "compile_statement",
    "config_error",
    "each",
    "infer_context",
    "parse",
]


def parse(text: str, condition: bool = False) -> syntax.Node:
    """The syntax tree of a statement (or a condition); StatementError if it does not parse."""
    return syntax.parse_condition(text) if condition else syntax.parse_statement(text)


def compile_statement(
    source: str | syntax.Statement,
    signal: Signal,
    context: str,
    *,
    functions: Mapping[str, Function] | None = None,
    require_prefix: bool = False,
) -> Callable[[TransformContext], None]:
    """The closure running a statement (its text, or its parsed tree) on a context's item;
    StatementError if invalid. `require_prefix`: every path must name its context (statements
    whose context is inferred)."""
    node = syntax.parse_statement(source) if isinstance(source, str) else source
    compiler = Compiler(signal, context, functions or standard(), require_prefix)
    return compiler.statement(node)


def compile_condition(
    source: str | syntax.Node,
    signal: Signal,
    context: str,
    *,
    functions: Mapping[str, Function] | None = None,
    require_prefix: bool = False,
) -> Callable[[TransformContext], bool]:
    node = syntax.parse_condition(source) if isinstance(source, str) else source
    compiler = Compiler(signal, context, functions or standard(), require_prefix)
    return compiler.condition(node)


def contexts_named(node: syntax.Node) -> set[str]:
    """The contexts the paths of a statement or condition start with."""
    found = set()
    for n in syntax.walk(node):
        if isinstance(n, syntax.Path):
            first = n.fields[0]
            owner = owner_of(first.name, len(n.fields) > 1 or bool(first.keys))
            if owner is not None:
                found.add(owner)
    return found


def infer_context(signal: Signal, nodes: Sequence[syntax.Node]) -> str:
    """The context of statements whose paths name their contexts: the innermost one named
    (span for `span.name` with `resource.attributes[...]`)."""
    available = SIGNAL_CONTEXTS[signal]
    named = set().union(*(contexts_named(n) for n in nodes)) if nodes else set()
    usable = [c for c in available if c in named]
    if not usable:
        prefixes = ", ".join(f"{c}." for c in available)
        raise StatementError(
            f"cannot infer the context: start paths with one of {prefixes} or give `context`"
        )
    innermost = usable[-1]
    for other in named - set(CHAINS[innermost]):
        raise StatementError(f"{other} paths cannot be used with {innermost} paths")
    return innermost


def config_error(
    title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]
) -> ValidationError:
    """A pydantic ValidationError with one entry per (location, message, input), so the
    service reports each at its key path."""
    return ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("ottl", "{message}", {"message": message}),
                loc=loc,
                input=value,
            )
            for loc, message, value in problems
        ],
    )


@dataclass
class ErrorPolicy:
    """What a failing statement or condition does, by `error_mode`: `propagate` fails the
    batch (a PermanentError: the data is bad, retrying cannot help), `ignore` logs and goes on,
    `silent` goes on. Failures are logged once per batch per statement, with their count, so
    bad data cannot flood the log."""

    mode: ErrorMode
    log: logging.Logger | logging.LoggerAdapter
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)

    def failed(self, text: str, error: Exception) -> None:
        if self.mode == "propagate":
            raise PermanentError(f"failed to run {text!r}: {describe(error)}") from error
        if self.mode == "ignore":
            count, first = self.failures.get(text, (0, describe(error)))
            self.failures[text] = (count + 1, first)

    def report(self) -> None:
        for text, (count, first) in self.failures.items():
            self.log.warning("%r failed on %d item(s), first error: %s", text, count, first)
        self.failures.clear()


def describe(error: Exception) -> str:
    return str(error) if isinstance(error, OttlError) else f"{type(error).__name__}: {error}"


def each(batch: Any, signal: Signal, context: str, ctx: TransformContext) -> Iterator[None]:
    """Visit every item of `context` in `batch`, with `ctx` holding it and its parents (and a
    fresh cache) while the caller's loop body runs."""
    scopes_field, items_field = LEVELS[signal]
    for res in resources(batch):
        ctx.resource = res.resource
        if context == "resource":
            ctx.cache = None
            yield None
            continue
        for scope in getattr(res, scopes_field):
            ctx.scope = scope.scope
            if context == "scope":
                ctx.cache = None
                yield None
            elif context in _INNER:
                yield from _inner_items(getattr(scope, items_field), context, ctx)
            else:
                for item in getattr(scope, items_field):
                    setattr(ctx, context, item)
                    ctx.cache = None
                    yield None


_INNER = ("spanevent", "datapoint")


def _inner_items(items: Any, context: str, ctx: TransformContext) -> Iterator[None]:
    """Span events (with their span) or data points (with their metric)."""
    for item in items:
        if context == "spanevent":
            ctx.span = item
            children = item.events
        else:
            ctx.metric = item
            children = metric_points(item)
        for child in children:
            setattr(ctx, context, child)
            ctx.cache = None
            yield None
