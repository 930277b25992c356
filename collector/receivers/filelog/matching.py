"""Which files the receiver reads: `include` globs minus `exclude` globs, with the pattern
language the Collector uses (doublestar): `*` and `?` within a path segment, `[...]` classes,
`{a,b}` alternatives and `**` for any number of directories."""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable


def expand_braces(pattern: str) -> list[str]:
    """`a{b,c}d` -> [abd, acd], nested braces too; a brace without its pair is literal."""
    depth, start = 0, -1
    for i, c in enumerate(pattern):
        if c == "\\":
            continue
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                options, level, last = [], 0, start + 1
                for j in range(start + 1, i):
                    if pattern[j] == "{":
                        level += 1
                    elif pattern[j] == "}":
                        level -= 1
                    elif pattern[j] == "," and level == 0:
                        options.append(pattern[last:j])
                        last = j + 1
                options.append(pattern[last:i])
                head, tail = pattern[:start], pattern[i + 1 :]
                return [
                    expanded
                    for option in options
                    for expanded in expand_braces(head + option + tail)
                ]
    return [pattern]


def _translate(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            at_start = i == 0 or pattern[i - 1] == "/"
            after = pattern[i + 2 : i + 3]
            if at_start and after == "/":
                out.append("(?:.*/)?")
                i += 3
                continue
            if at_start and after == "":
                out.append(".*")
                i += 2
                continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "^") else i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regular expression matching a path any of `patterns` matches; None for none."""
    parts = [_translate(p) for pattern in patterns for p in expand_braces(pattern)]
    return re.compile("(?:" + "|".join(parts) + r")\Z") if parts else None


class Matcher:
    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = [p for pattern in include for p in expand_braces(pattern)]
        self.exclude = compile_patterns(exclude)

    def paths(self) -> list[str]:
        """Matching paths, sorted: regular files or not, the caller stats them."""
        found: set[str] = set()
        for pattern in self.include:
            found.update(glob.glob(pattern, recursive=True, include_hidden=True))
        if self.exclude is not None:
            found = {p for p in found if not self.exclude.match(p)}
        return sorted(found)
