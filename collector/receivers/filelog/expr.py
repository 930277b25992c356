"""The expressions of the Collector's stanza operators (`if`, the `router`'s `expr`,
`EXPR(...)` values): the part of the expr language (expr-lang/expr) log configs use.

Names: `body` (also `$` and `$body`), `attributes`, `resource`, `timestamp` (nanoseconds),
fields by `.name` or `["name"]` (a missing key is nil). Literals: strings ('', "" or ``),
numbers, true, false, nil, lists `[a, b]`. Operators, loosest first: `? :`, `or` `||`, `and`
`&&`, comparisons (`==` `!=` `<` `<=` `>` `>=` `in` `not in` `matches` `contains`
`startsWith` `endsWith`), `+` `-`, `*` `/` `%`, `not` `!` and unary `-`. Functions: `env`,
`len`, `lower`, `upper`, `trim`, `string`.

An expression compiles once to nested closures; evaluating one raises ExprError for a value of
the wrong type, which the operator treats as the expression not holding."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from collector.receivers.filelog.entry import Entry
from collector.receivers.filelog.goregex import go_regex

Evaluator = Callable[[Entry], Any]


class ExprError(ValueError):
    """An expression that does not compile, or a value it cannot work on."""


_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>\d+\.\d+|\d+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<op>\?\.|\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]])
    |(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*|\$)
    )""",
    re.VERBOSE,
)
_WORDS = {"and": "&&", "or": "||", "not": "!"}
_COMPARISONS = {
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not in",
    "matches",
    "contains",
    "startsWith",
    "endsWith",
}
_ROOTS: dict[str, Callable[[Entry], Any]] = {
    "body": lambda e: e.body,
    "$": lambda e: e.body,
    "$body": lambda e: e.body,
    "$record": lambda e: e.body,
    "attributes": lambda e: e.attributes,
    "$attributes": lambda e: e.attributes,
    "$labels": lambda e: e.attributes,
    "resource": lambda e: e.resource,
    "$resource": lambda e: e.resource,
    "timestamp": lambda e: e.timestamp,
    "$timestamp": lambda e: e.timestamp,
}


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise ExprError(f"{what} needs text, not {type(value).__name__}")
    return value


def _length(value: Any) -> int:
    if not isinstance(value, str | bytes | list | dict):
        raise ExprError(f"len of {type(value).__name__}")
    return len(value)


def _string(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "env": lambda name: os.environ.get(_text(name, "env"), ""),
    "len": _length,
    "lower": lambda s: _text(s, "lower").lower(),
    "upper": lambda s: _text(s, "upper").upper(),
    "trim": lambda s: _text(s, "trim").strip(),
    "string": _string,
}


def _unquote(token: str) -> str:
    if token[0] == "`":
        return token[1:-1]
    body = token[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), "\\" + m.group(1)), body)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ExprError(f"unexpected {text[pos:].strip()[:20]!r} in {text!r}")
            kind = m.lastgroup or ""
            value = m.group(kind)
            if kind == "name" and value in _WORDS:
                kind, value = "op", _WORDS[value]
            self.tokens.append((kind, value))
            pos = m.end()
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def expect(self, value: str) -> None:
        token = self.take()
        if token[1] != value or token[0] == "string":
            raise ExprError(f"expected {value!r}, found {_shown(token[1])} in {self.text!r}")

    def parse(self) -> Evaluator:
        result = self.ternary()
        if self.peek()[0] != "end":
            raise ExprError(f"unexpected {_shown(self.peek()[1])} in {self.text!r}")
        return result

    def ternary(self) -> Evaluator:
        condition = self.binary(0)
        if self.peek() == ("op", "?"):
            self.take()
            yes = self.ternary()
            self.expect(":")
            no = self.ternary()
            return lambda e: yes(e) if _truth(condition(e)) else no(e)
        return condition

    _LEVELS: list[set[str]] = [{"||"}, {"&&"}, _COMPARISONS, {"+", "-"}, {"*", "/", "%"}]

    def _operator(self, level: int) -> str | None:
        kind, value = self.peek()
        if kind not in ("op", "name"):
            return None
        if value == "!" and self.peek(1) == ("name", "in") and level == 2:
            return "not in"
        return value if value in self._LEVELS[level] else None

    def binary(self, level: int) -> Evaluator:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (op := self._operator(level)) is not None:
            self.take()
            if op == "not in":
                self.take()
            right_token = self.peek()
            right = self.binary(level + 1)
            left = _combine(op, left, right, right_token)
        return left

    def unary(self) -> Evaluator:
        kind, value = self.peek()
        if kind == "op" and value in ("!", "-"):
            self.take()
            operand = self.unary()
            if value == "!":
                return lambda e: not _truth(operand(e))
            return lambda e: -_number(operand(e))
        return self.postfix()

    def postfix(self) -> Evaluator:
        value = self.primary()
        while True:
            kind, token = self.peek()
            if kind == "op" and token in (".", "?."):
                self.take()
                name_kind, name = self.take()
                if name_kind != "name":
                    raise ExprError(f"expected a field name after . in {self.text!r}")
                value = _member(value, _constant(name))
            elif kind == "op" and token == "[":
                self.take()
                key = self.ternary()
                self.expect("]")
                value = _member(value, key)
            else:
                return value

    def primary(self) -> Evaluator:
        kind, value = self.take()
        if kind == "number":
            number = float(value) if "." in value else int(value)
            return lambda e: number
        if kind == "string":
            text = _unquote(value)
            return lambda e: text
        if kind == "op" and value == "(":
            inner = self.ternary()
            self.expect(")")
            return inner
        if kind == "op" and value == "[":
            items: list[Evaluator] = []
            while self.peek() != ("op", "]"):
                items.append(self.ternary())
                if self.peek() == ("op", ","):
                    self.take()
                elif self.peek() != ("op", "]"):
                    raise ExprError(f"expected , or ] in {self.text!r}")
            self.take()
            return lambda e: [item(e) for item in items]
        if kind == "name":
            if value in ("true", "false"):
                constant = value == "true"
                return lambda e: constant
            if value in ("nil", "null"):
                return lambda e: None
            if value in _FUNCTIONS and self.peek() == ("op", "("):
                function = _FUNCTIONS[value]
                self.take()
                args: list[Evaluator] = []
                while self.peek() != ("op", ")"):
                    args.append(self.ternary())
                    if self.peek() == ("op", ","):
                        self.take()
                self.take()
                return lambda e: function(*(arg(e) for arg in args))
            if value in _ROOTS:
                return _ROOTS[value]
            raise ExprError(
                f"unknown name {value!r} in {self.text!r}: use body, attributes, resource, "
                "timestamp or env()"
            )
        raise ExprError(f"unexpected {_shown(value)} in {self.text!r}")


def _shown(token: str) -> str:
    return repr(token) if token else "end of expression"


def _constant(value: Any) -> Evaluator:
    return lambda entry: value


def _member(container: Evaluator, key: Evaluator) -> Evaluator:
    def get(entry: Entry) -> Any:
        value = container(entry)
        if value is None:
            return None
        name = key(entry)
        if isinstance(value, dict):
            return value.get(name)
        if isinstance(value, list) and isinstance(name, int):
            return value[name] if -len(value) <= name < len(value) else None
        raise ExprError(f"cannot take {name!r} of a {type(value).__name__}")

    return get


def _truth(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ExprError(f"expected a boolean, got {type(value).__name__}")
    return value


def _number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExprError(f"expected a number, got {type(value).__name__}")
    return value


def _ordered(a: Any, b: Any) -> tuple[Any, Any]:
    if isinstance(a, str) and isinstance(b, str):
        return a, b
    return _number(a), _number(b)


def _combine(op: str, left: Evaluator, right: Evaluator, right_token: tuple[str, str]) -> Evaluator:
    if op == "||":
        return lambda e: _truth(left(e)) or _truth(right(e))
    if op == "&&":
        return lambda e: _truth(left(e)) and _truth(right(e))
    if op == "matches":
        if right_token[0] == "string":
            try:
                pattern = re.compile(go_regex(_unquote(right_token[1])))
            except re.error as err:
                raise ExprError(f"invalid regex {right_token[1]}: {err}") from None
            return lambda e: pattern.search(_text(left(e), "matches")) is not None

        def dynamic(e: Entry) -> bool:
            try:
                pattern = re.compile(go_regex(_text(right(e), "matches")))
            except re.error as err:
                raise ExprError(f"invalid regex: {err}") from None
            return pattern.search(_text(left(e), "matches")) is not None

        return dynamic
    binary: dict[str, Callable[[Any, Any], Any]] = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: _ordered(a, b)[0] < _ordered(a, b)[1],
        "<=": lambda a, b: _ordered(a, b)[0] <= _ordered(a, b)[1],
        ">": lambda a, b: _ordered(a, b)[0] > _ordered(a, b)[1],
        ">=": lambda a, b: _ordered(a, b)[0] >= _ordered(a, b)[1],
        "in": _contains_reversed,
        "not in": lambda a, b: not _contains_reversed(a, b),
        "contains": lambda a, b: _text(b, "contains") in _text(a, "contains"),
        "startsWith": lambda a, b: _text(a, "startsWith").startswith(_text(b, "startsWith")),
        "endsWith": lambda a, b: _text(a, "endsWith").endswith(_text(b, "endsWith")),
        "+": _plus,
        "-": lambda a, b: _number(a) - _number(b),
        "*": lambda a, b: _number(a) * _number(b),
        "/": _divide,
        "%": lambda a, b: _number(a) % _number(b),
    }
    function = binary[op]
    return lambda e: function(left(e), right(e))


def _contains_reversed(item: Any, container: Any) -> bool:
    if isinstance(container, dict | list):
        return item in container
    if isinstance(container, str):
        return _text(item, "in") in container
    raise ExprError(f"in needs a list, map or text, not {type(container).__name__}")


def _plus(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    return _number(a) + _number(b)


def _divide(a: Any, b: Any) -> float:
    if _number(b) == 0:
        raise ExprError("division by zero")
    return _number(a) / _number(b)


def compile_expr(text: str) -> Evaluator:
    """An evaluator of `text`; ExprError when it does not compile."""
    if not isinstance(text, str) or not text.strip():
        raise ExprError("an expression must be non-empty text")
    return _Parser(text).parse()


def check_expr(text: str) -> str:
    """A pydantic validator: `text` when it compiles."""
    if text:
        compile_expr(text)
    return text


_EXPR_VALUE = re.compile(r"^EXPR\((.*)\)$", re.DOTALL)


def value_expr(value: Any) -> Evaluator | None:
    """The evaluator of an `EXPR(...)` value, None for a plain value."""
    if isinstance(value, str) and (m := _EXPR_VALUE.match(value)):
        return compile_expr(m.group(1))
    return None
