"""Go (RE2) regular expressions, as the Collector's configs write them, in Python's syntax."""

from __future__ import annotations

import re


def go_regex(pattern: str) -> str:
    """`pattern` for Python's re: `(?<name>` is `(?P<name>`, `\\z` is `\\Z`. The rest of RE2's
    syntax is Python's too, except character classes like `\\pL` (an error)."""
    pattern = re.sub(r"\(\?<(?=[A-Za-z_])", "(?P<", pattern)
    return pattern.replace(r"\z", r"\Z")
