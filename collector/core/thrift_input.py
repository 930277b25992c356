"""Thrift read from one request body or datagram, bounded by it: a read-only transport whose
reads past the end are EOFError, and protocols that take no string or container longer than
the data itself, so that a malformed length cannot make the decoder allocate more; and structs
read by a table of their IDL's fields into dicts. Imported only by the Thrift decoders (the
jaeger receiver, zipkin's v1 Thrift bodies): the thrift package is not in the Lambda layer.

As Thrift's generated readers do, a field with an unknown id or an unexpected wire type is
skipped, and a missing required field is an error. Any malformed input is a ValueError,
whatever the library raised (`decoding`): bodies and datagrams come from the network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.Thrift import TType
from thrift.transport.TTransport import TTransportBase

T = TypeVar("T")
BINARY = "binary"  # a STRING field whose value is bytes, not text
_INT64 = range(-(1 << 63), 1 << 63)


class Field(NamedTuple):
    name: str
    wire_type: int  # a TType
    of: Any = None
    """The Struct of a STRUCT field or of a LIST's elements; BINARY for a STRING of bytes."""
    required: bool = False


class Struct:
    def __init__(self, name: str, fields: dict[int, Field]) -> None:
        self.name = name
        self.fields = fields
        self.required = frozenset(f.name for f in fields.values() if f.required)


class Invalid(ValueError):
    """Input that breaks the IDL (a missing required field, a list of the wrong type)."""


class _Bytes(TTransportBase):
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, sz: int) -> bytes:
        chunk = self._data[self._pos : self._pos + sz]
        self._pos += len(chunk)
        return chunk

    def readAll(self, sz: int) -> bytes:
        start, end = self._pos, self._pos + sz
        if sz < 0 or end > len(self._data):
            raise EOFError(f"{sz} bytes wanted at offset {start}, past the end")
        self._pos = end
        return self._data[start:end]


def protocol(data: bytes, compact: bool = False) -> TBinaryProtocol | TCompactProtocol:
    """A binary (or compact) protocol reading `data`."""
    limits = {"string_length_limit": len(data), "container_length_limit": len(data)}
    if compact:
        return TCompactProtocol(_Bytes(data), **limits)
    return TBinaryProtocol(_Bytes(data), **limits)


def decoding(read: Callable[[], T]) -> T:
    """`read()`, any failure on malformed input a ValueError."""
    try:
        return read()
    except Invalid:
        raise
    # The library raises TProtocolException, TTransportException, EOFError, struct.error,
    # UnicodeDecodeError, KeyError and AssertionError (TCompactProtocol's state checks) on
    # malformed input; whichever it is, the input is what is wrong.
    except Exception as e:
        raise ValueError(f"malformed Thrift: {type(e).__name__}: {e}") from None


def read_struct(protocol, spec: Struct) -> dict[str, Any]:
    """The fields of `spec` read, by name."""
    values: dict[str, Any] = {}
    protocol.readStructBegin()
    while True:
        _, wire_type, field_id = protocol.readFieldBegin()
        if wire_type == TType.STOP:
            break
        field = spec.fields.get(field_id)
        if field is None or field.wire_type != wire_type:
            protocol.skip(wire_type)
        else:
            values[field.name] = _read_value(protocol, field)
        protocol.readFieldEnd()
    protocol.readStructEnd()
    missing = spec.required - values.keys()
    if missing:
        raise Invalid(f"{spec.name}: required field {min(missing)} is missing")
    return values


def read_list(protocol, of: Struct) -> list[dict[str, Any]]:
    """A `list<of>`."""
    element_type, size = protocol.readListBegin()
    if element_type != TType.STRUCT:
        raise Invalid(
            f"list<{of.name}> sent with elements of wire type {element_type}, expected a list "
            "of structs"
        )
    items = [read_struct(protocol, of) for _ in range(size)]
    protocol.readListEnd()
    return items


def _read_value(protocol, field: Field) -> Any:
    wire_type = field.wire_type
    if wire_type == TType.STRING:
        data = protocol.readBinary()
        # Go's Thrift does not check UTF-8 either; protobuf strings must be valid.
        return data if field.of is BINARY else data.decode("utf-8", "replace")
    if wire_type == TType.I64:
        value = protocol.readI64()
        if value not in _INT64:  # a compact varint can hold 70 bits
            raise Invalid(f"i64 out of range: {value}")
        return value
    if wire_type == TType.I32:
        return protocol.readI32()
    if wire_type == TType.I16:
        return protocol.readI16()
    if wire_type == TType.DOUBLE:
        return protocol.readDouble()
    if wire_type == TType.BOOL:
        return protocol.readBool()
    if wire_type == TType.STRUCT:
        return read_struct(protocol, field.of)
    return read_list(protocol, field.of)
