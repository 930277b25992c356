"""Syntax trees to closures over a `TransformContext`, built once per statement.

Every check that can be made without data is made here, so a config naming an unknown
function, path or enum, or passing a bad regular expression, fails at validation with the
column of the mistake. What remains for run time are type errors that depend on the data,
raised as `OttlError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import collector.processors.internal.ottl.syntax as s
from collector.core.signals import Signal
from collector.processors.internal.ottl.contexts import (
    ENUMS,
    Accessor,
    Key,
    PathProblem,
    PathRef,
    TransformContext,
    resolve,
)
from collector.processors.internal.ottl.functions import (
    BOOL,
    FUNC,
    INT,
    SETTER,
    STR,
    STRS,
    TARGET,
    VALUES,
    Function,
)
from collector.processors.internal.ottl.values import (
    Duration,
    OttlError,
    arithmetic,
    compare,
    index,
    type_name,
)

Getter = Callable[[TransformContext], Any]
Test = Callable[[TransformContext], bool]
Run = Callable[[TransformContext], None]

_NOTHING = object()


@dataclass(frozen=True)
class Compiled:
    """An expression: its getter, its value when it is a literal, and its accessor when it is a
    path (so it can be written)."""

    get: Getter
    const: Any = _NOTHING
    accessor: Accessor | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not _NOTHING


def _error(message: str, node: s.Node) -> s.StatementError:
    return s.StatementError(message, node.column)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


class Compiler:
    """Compiles statements and conditions of one context of one signal."""

    def __init__(
        self,
        signal: Signal,
        context: str,
        functions: Mapping[str, Function],
        require_prefix: bool = False,
    ) -> None:
        self.signal = signal
        self.context = context
        self.functions = functions
        self.require_prefix = require_prefix
        self.enums = ENUMS[signal]

    # --- statements and conditions --------------------------------------------------------

    def statement(self, node: s.Statement) -> Run:
        call = node.editor
        function = self._function(call)
        if not function.editor:
            raise _error(
                f"a statement calls an editor (a lowercase function), not {call.name!r}", call
            )
        run = self._call(function, call)
        if node.where is None:
            return run
        test = self.condition(node.where)

        def guarded(ctx: TransformContext) -> None:
            if test(ctx):
                run(ctx)

        return guarded

    def condition(self, node: s.Node) -> Test:
        if isinstance(node, s.BoolOp):
            left, right = self.condition(node.left), self.condition(node.right)
            if node.op == "and":
                return lambda ctx: left(ctx) and right(ctx)
            return lambda ctx: left(ctx) or right(ctx)
        if isinstance(node, s.Not):
            inner = self.condition(node.operand)
            return lambda ctx: not inner(ctx)
        if isinstance(node, s.Compare):
            return self._compare(node)
        if isinstance(node, s.Literal) and type(node.value) is bool:
            value = node.value
            return lambda ctx: value
        if isinstance(node, s.Call):
            if self._function(node).editor:
                raise _error(f"a condition cannot call editor {node.name!r}", node)
            get = self.value(node).get

            def truth(ctx: TransformContext) -> bool:
                result = get(ctx)
                if type(result) is not bool:
                    raise OttlError(f"{node.name} returned {type_name(result)}, not a boolean")
                return result

            return truth
        raise _error("expected a condition: a comparison, a converter call, true or false", node)

    def _compare(self, node: s.Compare) -> Test:
        left, right = self.value(node.left), self.value(node.right)
        op = node.op
        if left.is_const and not right.is_const:
            left, right = right, left
            op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
        get = left.get
        if right.is_const and op in ("==", "!="):
            const = right.const
            if const is None:
                return (
                    (lambda ctx: get(ctx) is None)
                    if op == "=="
                    else (lambda ctx: get(ctx) is not None)
                )
            if type(const) is str:
                # A string equals only a string, and str's == already says so.
                if op == "==":
                    return lambda ctx: get(ctx) == const
                return lambda ctx: get(ctx) != const
        if right.is_const:
            const = right.const
            return lambda ctx: compare(op, get(ctx), const)
        other = right.get
        return lambda ctx: compare(op, get(ctx), other(ctx))

    # --- values ---------------------------------------------------------------------------

    def value(self, node: s.Node) -> Compiled:
        if isinstance(node, s.Literal):
            const = node.value
            return Compiled(lambda ctx: const, const)
        if isinstance(node, s.Path):
            accessor = self.path(node)
            return Compiled(accessor.get, accessor=accessor)
        if isinstance(node, s.Call):
            return self._converter(node)
        if isinstance(node, s.Enum):
            return self._enum(node)
        if isinstance(node, s.ListNode):
            return self._list(node)
        if isinstance(node, s.MapNode):
            return self._map(node)
        if isinstance(node, s.Math):
            return self._math(node)
        if isinstance(node, s.Neg):
            return self._neg(node)
        raise _error("a condition cannot be used as a value here", node)

    def path(self, node: s.Path) -> Accessor:
        segments = tuple((f.name, tuple(self._key(k) for k in f.keys)) for f in node.fields)
        try:
            return resolve(PathRef(segments), self.context, self.require_prefix)
        except PathProblem as e:
            raise _error(str(e), node) from None

    def _key(self, node: s.Node) -> Key:
        compiled = self.value(node)
        if compiled.is_const:
            if not isinstance(compiled.const, str | int) or isinstance(compiled.const, bool):
                raise _error(f"a key must be a string or an int, got {compiled.const!r}", node)
            return Key(compiled.get, compiled.const, True)
        return Key(compiled.get)

    def _enum(self, node: s.Enum) -> Compiled:
        if node.name in self.enums:
            number = self.enums[node.name]
            return Compiled(lambda ctx: number, number)
        if node.name in self.functions:
            raise _error(f"{node.name!r} is a function: call it, {node.name}(...)", node)
        raise _error(f"unknown enum {node.name!r}", node)

    def _list(self, node: s.ListNode) -> Compiled:
        items = [self.value(item) for item in node.items]
        getters = [item.get for item in items]
        # A fresh list per item: a literal may end up in the cache and be changed there.
        get: Getter = lambda ctx: [g(ctx) for g in getters]  # noqa: E731
        if all(item.is_const for item in items):
            return Compiled(get, [item.const for item in items])
        return Compiled(get)

    def _map(self, node: s.MapNode) -> Compiled:
        pairs = [(key, self.value(value).get) for key, value in node.pairs]
        return Compiled(lambda ctx: {k: g(ctx) for k, g in pairs})

    def _math(self, node: s.Math) -> Compiled:
        left, right, op = self.value(node.left), self.value(node.right), node.op
        if left.is_const and right.is_const:
            try:
                result = arithmetic(op, left.const, right.const)
            except OttlError as e:
                raise _error(str(e), node) from None
            return Compiled(lambda ctx: result, result)
        lget, rget = left.get, right.get
        return Compiled(lambda ctx: arithmetic(op, lget(ctx), rget(ctx)))

    def _neg(self, node: s.Neg) -> Compiled:
        get = self.value(node.operand).get

        def negate(ctx: TransformContext) -> Any:
            value = get(ctx)
            if type(value) in (int, float):
                return -value
            if type(value) is Duration:
                return Duration(-value.ns)
            raise OttlError(f"cannot negate a {type_name(value)}")

        return Compiled(negate)

    # --- calls ----------------------------------------------------------------------------

    def _function(self, call: s.Call) -> Function:
        function = self.functions.get(call.name)
        if function is None:
            raise _error(f"unknown function {call.name!r}", call)
        if function.contexts is not None and self.context not in function.contexts:
            raise _error(f"{call.name} is not available in the {self.context} context", call)
        return function

    def _converter(self, call: s.Call) -> Compiled:
        function = self._function(call)
        if function.editor:
            raise _error(f"editor {call.name!r} cannot be used as a value", call)
        get = self._call(function, call)
        if call.keys:
            keys = [self._key(k).get for k in call.keys]
            inner = get
            get = lambda ctx: index(inner(ctx), [k(ctx) for k in keys])  # noqa: E731
        return Compiled(get)

    def _call(self, function: Function, call: s.Call) -> Callable[[TransformContext], Any]:
        nodes = self._bind(function, call)
        args: dict[str, Any] = {}
        for param in function.params:
            node = nodes.get(param.name)
            if node is None:
                args[param.name] = param.default
                continue
            args[param.name] = self._argument(function, param.kind, param.name, node)
        if function.check is not None:
            try:
                function.check(**args)
            except ValueError as e:
                raise _error(f"{call.name}: {e}", call) from None
        return function.build(**args)

    def _bind(self, function: Function, call: s.Call) -> dict[str, s.Node]:
        """The argument node for each parameter, positional first, then by name."""
        params = function.params
        by_name = {p.name: p for p in params}
        by_name.update({_snake(p.name): p for p in params})
        bound: dict[str, s.Node] = {}
        named_seen = False
        for i, arg in enumerate(call.args):
            if arg.name is None:
                if named_seen:
                    raise _error("a positional argument cannot follow a named one", arg)
                if i >= len(params):
                    raise _error(f"{call.name} takes at most {len(params)} arguments", arg)
                bound[params[i].name] = arg.value
                continue
            named_seen = True
            param = by_name.get(arg.name) or by_name.get(_snake(arg.name))
            if param is None:
                raise _error(f"{call.name} has no argument {arg.name!r}", arg)
            if param.name in bound:
                raise _error(f"argument {arg.name!r} of {call.name} is given twice", arg)
            bound[param.name] = arg.value
        for param in params:
            if param.name not in bound and not param.optional:
                raise _error(f"{call.name} needs argument {param.name!r}", call)
        return bound

    def _argument(self, function: Function, kind: str, name: str, node: s.Node) -> Any:
        what = f"argument {name!r} of {function.name}"
        if kind in (SETTER, TARGET):
            if not isinstance(node, s.Path):
                raise _error(f"{what} must be a path", node)
            accessor = self.path(node)
            if kind == SETTER and accessor.set is None:
                raise _error(f"{what}: {node.text!r} cannot be set", node)
            return accessor
        if kind == STR:
            return self._literal(node, str, f"{what} must be a string literal")
        if kind == INT:
            return self._literal(node, int, f"{what} must be an integer literal")
        if kind == BOOL:
            return self._literal(node, bool, f"{what} must be true or false")
        if kind == STRS:
            if not isinstance(node, s.ListNode):
                raise _error(f"{what} must be a list of strings", node)
            return [
                self._literal(item, str, f"{what} must be a list of strings") for item in node.items
            ]
        if kind == VALUES:
            if not isinstance(node, s.ListNode):
                raise _error(f"{what} must be a list", node)
            return [self.value(item).get for item in node.items]
        if kind == FUNC:
            ref = self.functions.get(node.name) if isinstance(node, s.Enum) else None
            if ref is None or ref.unary is None:
                raise _error(f"{what} must name a converter taking one string, like SHA256", node)
            return ref.unary
        return self.value(node).get

    @staticmethod
    def _literal(node: s.Node, kind: type, message: str) -> Any:
        if not isinstance(node, s.Literal) or type(node.value) is not kind:
            raise _error(message, node)
        return node.value
