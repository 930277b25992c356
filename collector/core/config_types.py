"""Value types shared by component configs: durations, sizes, endpoints, and the config base."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(value: object) -> float:
    """Go-style duration ("200ms", "1m30s") to seconds. A bare integer is nanoseconds, as in Go."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 200ms, 5s or 1m")
    if isinstance(value, int):
        return value * 1e-9
    if isinstance(value, float):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a duration like 200ms, 5s or 1m")
    text = value.strip()
    if text in ("0", "-0"):
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        m = _DURATION_RE.match(text, pos)
        if not m:
            raise ValueError(
                f"invalid duration {value!r}: expected a number with a unit "
                "(ns, us, ms, s, m, h), like 200ms, 5s or 1m"
            )
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not text:
        raise ValueError("invalid duration '': expected a number with a unit, like 200ms")
    return total


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    for unit, scale in (("h", 3600), ("m", 60), ("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        n = seconds / scale
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{round(n)}{unit}"
    return f"{seconds}s"


# Seconds, written in config as a Go duration string.
Duration = Annotated[float, BeforeValidator(parse_duration)]


def null_is_defaults(value: object) -> object:
    """A key with nothing after it (`protocols:`) is YAML null, which the Collector reads as
    "this block, with its defaults"."""
    return {} if value is None else value


# A nested block whose null means its defaults.
Defaulted = BeforeValidator(null_is_defaults)


def histogram_bounds(bounds: list[float], default: Iterable[str]) -> list[float]:
    """Histogram bucket bounds in seconds: the durations `default` when `bounds` is empty, else
    `bounds` when greater than 0 and strictly increasing (ValueError otherwise)."""
    if not bounds:
        return [parse_duration(b) for b in default]
    if any(b <= 0 for b in bounds):
        raise ValueError("bucket bounds must be greater than 0")
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError("bucket bounds must be strictly increasing")
    return bounds


def parse_endpoint(value: object) -> str:
    """host:port with a port in 0..65535 (0 picks a free port)."""
    if not isinstance(value, str):
        raise ValueError("expected host:port, like 127.0.0.1:4317")
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid endpoint {value!r}: expected host:port, like 127.0.0.1:4317")
    return value


def parse_listen_endpoint(value: object) -> str:
    """host:port to listen on; an empty host (":4317") means loopback, not every interface:
    listening beyond the machine must be asked for by name (0.0.0.0)."""
    endpoint = parse_endpoint(value)
    return "127.0.0.1" + endpoint if endpoint.startswith(":") else endpoint


# "host:port" for a listener.
ListenEndpoint = Annotated[str, BeforeValidator(parse_listen_endpoint)]


class ComponentConfig(BaseModel):
    """Base of every component's config: unknown keys are errors; field docstrings are docs."""

    # defer_build: a model's validator is built when first used, so a collector pays start-up
    # time only for the components its config names.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, frozen=False, defer_build=True
    )
