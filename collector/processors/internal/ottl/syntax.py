"""OTTL text to syntax trees: the grammar (lark, LALR) and the nodes the compiler reads.

A statement is one editor call with an optional `where` condition; a condition is a boolean
expression. Booleans, comparisons and math share one precedence ladder (or < and < not <
comparison < + - < * / < unary minus) so that parentheses group either; the compiler checks
that a condition is boolean. Every node carries the 1-based column where it starts, for
errors that point at the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

GRAMMAR = r"""
statement: invocation ("where" expr)?
condition: expr

invocation: LOWER_NAME "(" [args] ")"
converter: UPPER_NAME "(" [args] ")" key*
args: arg ("," arg)*
?arg: LOWER_NAME "=" expr -> named_arg
    | expr

?expr: or_expr
?or_expr: and_expr
        | or_expr "or" and_expr -> or_
?and_expr: not_expr
         | and_expr "and" not_expr -> and_
?not_expr: comparison
         | "not" not_expr -> not_
?comparison: sum
           | sum COMP_OP sum -> compare
?sum: product
    | sum PLUS product -> math
    | sum MINUS product -> math
?product: unary
        | product STAR unary -> math
        | product SLASH unary -> math
?unary: atom
      | MINUS unary -> neg
      | PLUS unary
?atom: literal
     | path
     | converter
     | invocation
     | UPPER_NAME -> enum
     | "[" [expr ("," expr)*] "]" -> list
     | "{" [pair ("," pair)*] "}" -> map
     | "(" expr ")"

pair: STRING ":" expr
path: field ("." field)*
field: LOWER_NAME key*
key: "[" expr "]"

?literal: STRING -> string
        | FLOAT -> float
        | INT -> int
        | BYTES -> bytes
        | "true" -> true
        | "false" -> false
        | "nil" -> nil

COMP_OP: "==" | "!=" | "<=" | ">=" | "<" | ">"
PLUS: "+"
MINUS: "-"
STAR: "*"
SLASH: "/"
LOWER_NAME: /[a-z_][a-zA-Z0-9_]*/
UPPER_NAME: /[A-Z][a-zA-Z0-9_]*/
STRING: /"(\\.|[^\\"])*"/
BYTES.2: /0x[0-9a-fA-F]+/
FLOAT.1: /[0-9]*\.[0-9]+/ | /[0-9]+\.[0-9]*/
INT: /[0-9]+/

%import common.WS
%ignore WS
"""


class StatementError(ValueError):
    """An error in OTTL text: the message and the 1-based column it points at (0: none)."""

    def __init__(self, message: str, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.column = column

    def __str__(self) -> str:
        return f"{self.message} at column {self.column}" if self.column else self.message


# --- nodes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    column: int


@dataclass(frozen=True)
class Literal(Node):
    value: Any


@dataclass(frozen=True)
class Field(Node):
    name: str
    keys: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Path(Node):
    fields: tuple[Field, ...]

    @property
    def text(self) -> str:
        return ".".join(f.name + "[...]" * len(f.keys) for f in self.fields)


@dataclass(frozen=True)
class Arg(Node):
    name: str | None
    value: Node


@dataclass(frozen=True)
class Call(Node):
    name: str
    args: tuple[Arg, ...]
    keys: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Enum(Node):
    """An uppercase name alone: an enum, or a converter passed as an argument."""

    name: str


@dataclass(frozen=True)
class ListNode(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class MapNode(Node):
    pairs: tuple[tuple[str, Node], ...]


@dataclass(frozen=True)
class Math(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Neg(Node):
    operand: Node


@dataclass(frozen=True)
class Compare(Node):
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class BoolOp(Node):
    op: str  # "and" | "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class Not(Node):
    operand: Node


@dataclass(frozen=True)
class Statement(Node):
    editor: Call
    where: Node | None = None


# --- text to nodes ---------------------------------------------------------------------------


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def unquote(token: str) -> str:
    """A string literal's value: \\\\, \\", \\n, \\t and \\r are escapes; a backslash before
    anything else stays, so regular expressions like "\\d+" read as written."""
    body = token[1:-1]
    if "\\" not in body:
        return body
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body) and body[i + 1] in _ESCAPES:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _col(meta_or_token: Any) -> int:
    return int(getattr(meta_or_token, "column", 0) or 0)


@v_args(meta=True)
class _Build(Transformer):
    """Lark's parse tree to the nodes above."""

    def statement(self, meta, children):
        return Statement(_col(meta), children[0], children[1] if len(children) > 1 else None)

    def condition(self, meta, children):
        return children[0]

    def invocation(self, meta, children):
        name, args = children
        return Call(_col(meta), str(name), tuple(args or ()))

    def converter(self, meta, children):
        name, args, *keys = children
        return Call(_col(meta), str(name), tuple(args or ()), tuple(keys))

    def args(self, meta, children):
        return [c if isinstance(c, Arg) else Arg(c.column, None, c) for c in children]

    def named_arg(self, meta, children):
        name, value = children
        return Arg(_col(meta), str(name), value)

    def or_(self, meta, children):
        return BoolOp(_col(meta), "or", children[0], children[1])

    def and_(self, meta, children):
        return BoolOp(_col(meta), "and", children[0], children[1])

    def not_(self, meta, children):
        return Not(_col(meta), children[0])

    def compare(self, meta, children):
        left, op, right = children
        return Compare(_col(meta), str(op), left, right)

    def math(self, meta, children):
        left, op, right = children
        return Math(_col(meta), str(op), left, right)

    def neg(self, meta, children):
        operand = children[1]
        if isinstance(operand, Literal) and type(operand.value) in (int, float):
            return Literal(_col(meta), -operand.value)
        return Neg(_col(meta), operand)

    def unary(self, meta, children):  # unary plus
        return children[1]

    def enum(self, meta, children):
        return Enum(_col(meta), str(children[0]))

    def list(self, meta, children):
        return ListNode(_col(meta), tuple(c for c in children if c is not None))

    def map(self, meta, children):
        return MapNode(_col(meta), tuple(c for c in children if c is not None))

    def pair(self, meta, children):
        return (unquote(str(children[0])), children[1])

    def path(self, meta, children):
        return Path(_col(meta), tuple(children))

    def field(self, meta, children):
        name, *keys = children
        return Field(_col(meta), str(name), tuple(keys))

    def key(self, meta, children):
        return children[0]

    def string(self, meta, children):
        return Literal(_col(meta), unquote(str(children[0])))

    def int(self, meta, children):
        return Literal(_col(meta), int(children[0]))

    def float(self, meta, children):
        return Literal(_col(meta), float(children[0]))

    def bytes(self, meta, children):
        digits = str(children[0])[2:]
        if len(digits) % 2:
            raise StatementError("a bytes literal needs an even number of hex digits", _col(meta))
        return Literal(_col(meta), bytes.fromhex(digits))

    def true(self, meta, children):
        return Literal(_col(meta), True)

    def false(self, meta, children):
        return Literal(_col(meta), False)

    def nil(self, meta, children):
        return Literal(_col(meta), None)


_PARSER = Lark(
    GRAMMAR,
    parser="lalr",
    start=["statement", "condition"],
    propagate_positions=True,
    maybe_placeholders=True,
)
_BUILD = _Build()


def _problem(error: UnexpectedInput) -> StatementError:
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        return StatementError("unexpected end of text")
    if isinstance(error, UnexpectedToken):
        token: Token = error.token
        if token.type == "UPPER_NAME" and _col(token) == 1:
            message = f"a statement starts with an editor (a lowercase function), not {token!s}"
            return StatementError(message, 1)
        return StatementError(f"unexpected {str(token)!r}", _col(token))
    if isinstance(error, UnexpectedCharacters):
        return StatementError(f"unexpected character {error.char!r}", error.column)
    return StatementError(str(error), getattr(error, "column", 0) or 0)


def _parse(text: str, start: str) -> Any:
    if not text.strip():
        raise StatementError("empty " + start)
    try:
        tree = _PARSER.parse(text, start=start)
    except UnexpectedInput as e:
        raise _problem(e) from None
    try:
        return _BUILD.transform(tree)
    except Exception as e:  # lark wraps errors raised by the transformer
        cause = getattr(e, "orig_exc", e)
        if isinstance(cause, StatementError):
            raise cause from None
        raise


def parse_statement(text: str) -> Statement:
    return _parse(text, "statement")


def parse_condition(text: str) -> Node:
    return _parse(text, "condition")


def walk(node: Any):
    """Every node below `node` (itself included), depth first."""
    if isinstance(node, Node):
        yield node
        if isinstance(node, Statement):
            yield from walk(node.editor)
            yield from walk(node.where)
        elif isinstance(node, Call):
            for arg in node.args:
                yield from walk(arg.value)
            for key in node.keys:
                yield from walk(key)
        elif isinstance(node, Path):
            for f in node.fields:
                for key in f.keys:
                    yield from walk(key)
        elif isinstance(node, ListNode):
            for item in node.items:
                yield from walk(item)
        elif isinstance(node, MapNode):
            for _, value in node.pairs:
                yield from walk(value)
        elif isinstance(node, Math | Compare | BoolOp):
            yield from walk(node.left)
            yield from walk(node.right)
        elif isinstance(node, Neg | Not):
            yield from walk(node.operand)
