"""Finding entries in a file's bytes: one per line (the default), or per `multiline` pattern.

A splitter looks at `data[pos:]`, which starts where an entry starts, and returns the end of the
first complete entry and its bytes, or None when the entry has not ended yet. `flush` gives the
entry made of what is left when the file stopped growing (force_flush_period)."""

from __future__ import annotations

import re

from collector.receivers.filelog.config import MultilineConfig
from collector.receivers.filelog.goregex import go_regex


class Splitter:
    def split(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        raise NotImplementedError

    def flush(self, data: bytes) -> bytes:
        return data

    def at_boundary(self, data: bytes, pos: int) -> bool:
        """Whether an entry starts at `pos` (only a start pattern can tell)."""
        return False


class NewlineSplitter(Splitter):
    """Lines ended by the encoding's newline, found only at a character boundary (UTF-16 has
    two-byte characters); a carriage return before the newline is dropped."""

    def __init__(self, codec: str, unit: int) -> None:
        self.newline = "\n".encode(codec) if codec != "nop" else b"\n"
        self.carriage_return = "\r".encode(codec) if codec != "nop" else b"\r"
        self.unit = unit

    def split(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        at = data.find(self.newline, pos)
        while self.unit > 1 and at >= 0 and (at - pos) % self.unit:
            at = data.find(self.newline, at + 1)
        if at < 0:
            return None
        end = at - len(self.carriage_return)
        if end >= pos and data.startswith(self.carriage_return, end):
            return at + len(self.newline), data[pos:end]
        return at + len(self.newline), data[pos:at]

    def flush(self, data: bytes) -> bytes:
        return data.removesuffix(self.carriage_return)


class NoSplitter(Splitter):
    """Encoding `nop`: the bytes as they come, cut only by max_log_size and force flushes."""

    def split(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        return None


class StartSplitter(Splitter):
    """An entry runs from a match of the start pattern to the next one; bytes before the first
    match are an entry of their own."""

    def __init__(self, pattern: re.Pattern[bytes], omit: bool) -> None:
        self.pattern = pattern
        self.omit = omit

    def split(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        first = self.pattern.search(data, pos)
        if first is None:
            return None
        if first.start() > pos:
            return first.start(), data[pos : first.start()]
        if first.end() >= len(data):
            return None
        second = self.pattern.search(data, max(first.end(), first.start() + 1))
        if second is None:
            return None
        start = first.end() if self.omit else pos
        return second.start(), data[start : second.start()]

    def flush(self, data: bytes) -> bytes:
        m = self.pattern.match(data)
        return data[m.end() :] if self.omit and m else data

    def at_boundary(self, data: bytes, pos: int) -> bool:
        return pos < len(data) and self.pattern.match(data, pos) is not None


class EndSplitter(Splitter):
    """An entry runs to the end of a match of the end pattern."""

    def __init__(self, pattern: re.Pattern[bytes], omit: bool) -> None:
        self.pattern = pattern
        self.omit = omit

    def split(self, data: bytes, pos: int) -> tuple[int, bytes] | None:
        m = self.pattern.search(data, pos)
        while m is not None and m.end() == pos:  # an empty match ends nothing
            if pos + 1 > len(data):
                return None
            m = self.pattern.search(data, m.end() + 1)
        if m is None:
            return None
        return m.end(), data[pos : m.start() if self.omit else m.end()]


def build_splitter(multiline: MultilineConfig | None, codec: str, unit: int) -> Splitter:
    if codec == "nop":
        return NoSplitter()
    if multiline is None:
        return NewlineSplitter(codec, unit)
    if multiline.line_start_pattern:
        pattern = re.compile(go_regex(multiline.line_start_pattern).encode(), re.MULTILINE)
        return StartSplitter(pattern, multiline.omit_pattern)
    pattern = re.compile(go_regex(multiline.line_end_pattern).encode(), re.MULTILINE)
    return EndSplitter(pattern, multiline.omit_pattern)
