"""Zipkin's two span models as the wire formats carry them, decoded into one shape per model:
v2 (`json_codec.decode_v2`, `proto.decode`) for `translate.py`, v1 (`json_codec.decode_v1`,
`thrift_codec.decode`) for `translate_v1.py`.

Ids are already bytes here (a trace id 16, left-padded when the sender had 64 bits, a span id
8, none of them zero), times microseconds since the epoch (0: not sent), addresses text.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# A v1 binary annotation's value: its Thrift type's Python value, or JSON's.
TagValue = str | bool | int | float


@dataclass(slots=True)
class Endpoint:
    service_name: str = ""
    ipv4: str = ""
    ipv6: str = ""
    port: int = 0


@dataclass(slots=True)
class Annotation:
    timestamp_us: int
    value: str


@dataclass(slots=True)
class Span:
    """A Zipkin v2 span."""

    trace_id: bytes
    span_id: bytes
    parent_id: bytes = b""
    name: str = ""
    kind: str = ""
    """CLIENT, SERVER, PRODUCER, CONSUMER, or empty."""
    timestamp_us: int = 0
    duration_us: int = 0
    local: Endpoint | None = None
    remote: Endpoint | None = None
    annotations: list[Annotation] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class V1Annotation:
    timestamp_us: int
    value: str
    host: Endpoint | None = None


@dataclass(slots=True)
class BinaryAnnotation:
    key: str
    value: TagValue
    host: Endpoint | None = None
    final: bool = False
    """The value's type is the sender's (Thrift); else it is text that `parse_string_tags`
    may turn into a number or a bool."""


@dataclass(slots=True)
class V1Span:
    """A Zipkin v1 span."""

    trace_id: bytes
    span_id: bytes
    parent_id: bytes = b""
    name: str = ""
    timestamp_us: int = 0
    duration_us: int = 0
    annotations: list[V1Annotation] = field(default_factory=list)
    binary_annotations: list[BinaryAnnotation] = field(default_factory=list)
    debug: bool = False


# --- what the decoders share ------------------------------------------------------------------


def hex_id(text: object, size: int, what: str) -> bytes:
    """`size` bytes from up to 2*size hex digits, left-padded; ValueError when not hex or zero."""
    if not isinstance(text, str) or not text or len(text) > 2 * size:
        raise ValueError(f"{what}: expected up to {2 * size} hex digits, got {text!r}")
    try:
        data = bytes.fromhex(text.rjust(2 * size, "0"))
    except ValueError:
        raise ValueError(f"{what}: not hex: {text!r}") from None
    return nonzero(data, what)


def byte_id(data: bytes, size: int, what: str) -> bytes:
    """`size` bytes from `size` or, for a 128-bit trace id, 8 (left-padded)."""
    if len(data) == size or (size == 16 and len(data) == 8):
        return nonzero(data.rjust(size, b"\0"), what)
    expected = "16 or 8" if size == 16 else str(size)
    raise ValueError(f"{what}: {len(data)} bytes, expected {expected}")


def nonzero(data: bytes, what: str) -> bytes:
    if not any(data):
        raise ValueError(f"{what}: is zero")
    return data


def ip_text(data: bytes, size: int, what: str) -> str:
    """The text of a packed IPv4 (4 bytes) or IPv6 (16 bytes) address; empty for none."""
    if not data:
        return ""
    if len(data) != size:
        raise ValueError(f"{what}: {len(data)} bytes, expected {size}")
    return str(ipaddress.IPv4Address(data) if size == 4 else ipaddress.IPv6Address(data))


def port(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what}: {value} is not a port")
    return value
