"""Timestamps parsed as the Collector's stanza parses them: `strptime` layouts with stanza's
directives (`%L` milliseconds, `%f` microseconds, `%s` nanoseconds, `%z` offsets, ...), Go
`gotime` layouts (`2006-01-02T15:04:05.999Z07:00`) and `epoch` numbers (`s`, `ms`, `us`,
`ns`, `s.ms`, `s.us`, `s.ns`). Both layout kinds compile to one regular expression."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTHS = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)

# Zone abbreviations with one common meaning, for `%Z` when neither `time_zone_locations` nor
# the layout's location knows the abbreviation.
_ABBREVIATIONS = {
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "UT": 0,
    "WET": 0,
    "WEST": 60,
    "BST": 60,
    "CET": 60,
    "CEST": 120,
    "MET": 60,
    "MEST": 120,
    "EET": 120,
    "EEST": 180,
    "MSK": 180,
    "IST": 330,
    "SGT": 480,
    "HKT": 480,
    "JST": 540,
    "KST": 540,
    "AWST": 480,
    "ACST": 570,
    "ACDT": 630,
    "AEST": 600,
    "AEDT": 660,
    "NZST": 720,
    "NZDT": 780,
    "HST": -600,
    "AKST": -540,
    "AKDT": -480,
    "PST": -480,
    "PDT": -420,
    "MST": -420,
    "MDT": -360,
    "CST": -360,
    "CDT": -300,
    "EST": -300,
    "EDT": -240,
    "AST": -240,
    "ADT": -180,
    "NST": -210,
    "NDT": -150,
}

# Directive -> (regular expression, what the matched text sets).
_FRACTION = r"\d+"
_DIRECTIVES: dict[str, str] = {
    "Y": r"\d{4}",
    "y": r"\d{2}",
    "m": r"\d{2}",
    "o": r"[ \d]?\d",
    "q": r"\d{1,2}",
    "b": "|".join(m[:3] for m in _MONTHS),
    "B": "|".join(_MONTHS),
    "d": r"\d{2}",
    "e": r"[ \d]?\d",
    "g": r"\d{1,2}",
    "a": "|".join(d[:3] for d in _DAYS),
    "A": "|".join(_DAYS),
    "H": r"\d{2}",
    "I": r"\d{1,2}",
    "l": r"\d{1,2}",
    "p": "am|pm",
    "P": "am|pm",
    "M": r"\d{2}",
    "S": r"\d{2}",
    "L": r"\d{3}",
    "f": r"\d{6}",
    "s": r"\d{9}",
    "Z": r"[A-Za-z]{1,5}|[A-Za-z]{3}[+-]\d{1,2}",
    "z": r"Z|[+-]\d{2}:?\d{2}(?::?\d{2})?",
    "i": r"Z|[+-]\d{2}",
    "j": r"Z|[+-]\d{2}:\d{2}",
    "k": r"Z|[+-]\d{2}:\d{2}:\d{2}",
    # internal: unpadded minute and second (Go's 4 and 5), an optional fraction after any
    # separator (Go's .999), and fixed-width fractions of N digits (Go's .000)
    "minute": r"\d{1,2}",
    "second": r"\d{1,2}",
    "frac": _FRACTION,
}
_SHORTHANDS = {
    "D": "%m/%d/%y",
    "F": "%Y-%m-%d",
    "T": "%H:%M:%S",
    "r": "%l:%M:%S %p",
    "c": "%a %b %d %H:%M:%S %Y",
    "R": "%H:%M",
}
_LITERALS = {"n": "\n", "t": "\t", "%": "%"}

Token = tuple[str, str]  # ("lit", text) or ("dir", directive)


def strptime_tokens(layout: str) -> list[Token]:
    """ValueError for a directive stanza does not know."""
    tokens: list[Token] = []
    i = 0
    while i < len(layout):
        c = layout[i]
        if c != "%":
            tokens.append(("lit", c))
            i += 1
            continue
        if i + 1 >= len(layout):
            raise ValueError("layout ends with a lone %")
        d = layout[i + 1]
        i += 2
        if d in _SHORTHANDS:
            tokens.extend(strptime_tokens(_SHORTHANDS[d]))
        elif d in _LITERALS:
            tokens.append(("lit", _LITERALS[d]))
        elif d in _DIRECTIVES and len(d) == 1:
            tokens.append(("dir", d))
        else:
            raise ValueError(f"unknown directive %{d} in layout {layout!r}")
    # ".%L" and friends: an optional fraction after a period or comma, any number of digits,
    # as Go parses its ".999" (which is what stanza's strptime gives these).
    out: list[Token] = []
    for token in tokens:
        if (
            token[0] == "dir"
            and token[1] in "Lfs"
            and out
            and out[-1] in (("lit", "."), ("lit", ","))
        ):
            out[-1] = ("dir", "frac")
            continue
        out.append(token)
    return out


# Go's layout elements, longest first where one is the prefix of another.
_GO_ELEMENTS: list[tuple[str, str]] = [
    ("January", "B"),
    ("Jan", "b"),
    ("Monday", "A"),
    ("Mon", "a"),
    ("MST", "Z"),
    ("2006", "Y"),
    ("002", "yday"),
    ("01", "m"),
    ("02", "d"),
    ("03", "I"),
    ("04", "M"),
    ("05", "S"),
    ("06", "y"),
    ("15", "H"),
    ("_2", "e"),
    ("1", "q"),
    ("2", "g"),
    ("3", "l"),
    ("4", "minute"),
    ("5", "second"),
    ("PM", "p"),
    ("pm", "P"),
    ("-07:00:00", "k"),
    ("-070000", "z"),
    ("-0700", "z"),
    ("-07:00", "j"),
    ("-07", "i"),
    ("Z07:00:00", "k"),
    ("Z070000", "z"),
    ("Z0700", "z"),
    ("Z07:00", "j"),
    ("Z07", "i"),
]
_GO_FRACTION = re.compile(r"[.,](0+|9+)(?!\d)")


def gotime_tokens(layout: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(layout):
        m = _GO_FRACTION.match(layout, i)
        if m is not None and tokens and tokens[-1][0] == "dir":
            run = m.group(1)
            if run[0] == "9":
                tokens.append(("dir", "frac"))
            else:
                tokens.append(("lit", layout[i]))
                tokens.append(("fixed", str(len(run))))
            i = m.end()
            continue
        for text, directive in _GO_ELEMENTS:
            if layout.startswith(text, i):
                if directive == "yday":
                    raise ValueError("day of year (002) is not supported in gotime layouts")
                tokens.append(("dir", directive))
                i += len(text)
                break
        else:
            tokens.append(("lit", layout[i]))
            i += 1
    return tokens


def _offset_minutes(text: str) -> int:
    if text == "Z":
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return sign * (hours * 60 + minutes)


def _location(name: str) -> tzinfo | None:
    """None is the machine's local time."""
    if name in ("", "Local"):
        return None
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown location {name!r}: expected an IANA time zone") from None


class TimeParser:
    """Parses one layout into nanoseconds since the epoch; ValueError for a value that does not
    fit (the message says why)."""

    def __init__(
        self,
        layout_type: str,
        layout: str,
        location: str = "Local",
        time_zone_locations: dict[str, str] | None = None,
        clock: Callable[[], datetime] = datetime.now,
    ) -> None:
        self.layout_type = layout_type
        self.layout = layout
        self.location = _location(location)
        self.zones = {k: _location(v) for k, v in (time_zone_locations or {}).items()}
        self.clock = clock
        if layout_type == "epoch":
            scales = {"s": 9, "ms": 6, "us": 3, "ns": 0, "s.ms": 9, "s.us": 9, "s.ns": 9}
            if layout not in scales:
                raise ValueError(f"invalid epoch layout {layout!r}: expected one of {list(scales)}")
            self._scale = scales[layout]
            return
        if layout_type not in ("strptime", "gotime"):
            raise ValueError(f"invalid layout_type {layout_type!r}")
        if not layout:
            raise ValueError("layout is required")
        tokens = strptime_tokens(layout) if layout_type == "strptime" else gotime_tokens(layout)
        parts: list[str] = []
        self._groups: list[tuple[str, str]] = []  # (group name, directive)
        for kind, value in tokens:
            if kind == "lit":
                parts.append(re.escape(value))
                continue
            name = f"g{len(self._groups)}"
            if kind == "fixed":
                parts.append(rf"(?P<{name}>\d{{{value}}})")
                self._groups.append((name, "frac"))
            elif value == "frac":
                parts.append(rf"(?:[.,](?P<{name}>{_FRACTION}))?")
                self._groups.append((name, "frac"))
            else:
                parts.append(f"(?P<{name}>{_DIRECTIVES[value]})")
                self._groups.append((name, value))
            if kind == "dir" and value in ("S", "second") and not _fraction_follows(tokens, value):
                # Go takes a fraction after the seconds even when the layout has none.
                extra = f"g{len(self._groups)}"
                parts.append(rf"(?:[.,](?P<{extra}>\d+))?")
                self._groups.append((extra, "frac"))
        self._regex = re.compile("".join(parts), re.IGNORECASE)

    def parse(self, value: Any) -> int:
        if self.layout_type == "epoch":
            return self._epoch(value)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise ValueError(f"type {type(value).__name__} cannot be parsed as a time")
        m = self._regex.fullmatch(value)
        if m is None:
            raise ValueError(f"time {value!r} does not match layout {self.layout!r}")
        return self._build(m)

    def _build(self, m: re.Match) -> int:
        year = month = day = None
        hour = minute = second = nanos = 0
        pm: bool | None = None
        offset: int | None = None
        abbreviation = ""
        for name, directive in self._groups:
            text = m.group(name)
            if text is None:
                continue
            text = text.strip()
            if directive == "Y":
                year = int(text)
            elif directive == "y":
                year = 2000 + int(text) if int(text) < 69 else 1900 + int(text)
            elif directive in "moq":
                month = int(text)
            elif directive in ("b", "B"):
                month = next(i for i, n in enumerate(_MONTHS, 1) if n.startswith(text.lower()))
            elif directive in "deg":
                day = int(text)
            elif directive in "HIl":
                hour = int(text)
            elif directive in ("M", "minute"):
                minute = int(text)
            elif directive in ("S", "second"):
                second = int(text)
            elif directive in ("p", "P"):
                pm = text.lower() == "pm"
            elif directive == "frac":
                nanos = int(text[:9].ljust(9, "0"))
            elif directive == "L":
                nanos = int(text) * 1_000_000
            elif directive == "f":
                nanos = int(text) * 1_000
            elif directive == "s":
                nanos = int(text)
            elif directive in "zijk":
                offset = _offset_minutes(text)
            elif directive == "Z":
                abbreviation = text.upper()
        if pm is not None:
            if hour > 12:
                raise ValueError(f"hour {hour} with AM/PM")
            hour = hour % 12 + (12 if pm else 0)
        if year is None:
            year = self.clock().year  # a layout without a year means this year, as stanza does
        try:
            moment = datetime(year, month or 1, day or 1, hour, minute, second)
        except ValueError as e:
            raise ValueError(f"invalid time: {e}") from None
        aware = moment.replace(tzinfo=self._zone(moment, offset, abbreviation))
        if aware.tzinfo is None:
            aware = moment.astimezone()  # the machine's local time
        return ((aware - _EPOCH) // _SECOND) * 1_000_000_000 + nanos

    def _zone(self, moment: datetime, offset: int | None, abbreviation: str) -> tzinfo | None:
        if offset is not None:
            return timezone(timedelta(minutes=offset))
        if abbreviation:
            if abbreviation in self.zones:
                return self.zones[abbreviation]
            local = moment.replace(tzinfo=self.location) if self.location else moment.astimezone()
            if local.tzname() == abbreviation:
                return local.tzinfo
            if abbreviation in _ABBREVIATIONS:
                return timezone(timedelta(minutes=_ABBREVIATIONS[abbreviation]))
            m = re.fullmatch(r"[A-Z]{3}([+-]\d{1,2})", abbreviation)
            return timezone(timedelta(hours=int(m.group(1)))) if m else UTC
        return self.location

    def _epoch(self, value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("type bool cannot be parsed as a time")
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        try:
            if isinstance(value, int):
                number = Decimal(value)
            elif isinstance(value, float):
                number = Decimal(repr(value))
            elif isinstance(value, str):
                number = Decimal(value.strip())
            else:
                raise ValueError(f"type {type(value).__name__} cannot be parsed as a time")
        except InvalidOperation:
            raise ValueError(f"{value!r} is not an epoch time ({self.layout})") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} is not an epoch time ({self.layout})")
        return int(number.scaleb(self._scale))


def _fraction_follows(tokens: list[Token], directive: str) -> bool:
    index = next(i for i, t in enumerate(tokens) if t == ("dir", directive))
    rest = tokens[index + 1 : index + 3]
    return any(t in (("dir", "frac"), ("dir", "L"), ("dir", "f"), ("dir", "s")) for t in rest) or (
        len(rest) == 2 and rest[1][0] == "fixed"
    )
