"""Thrift read from one request body or datagram, bounded by it: a read-only transport whose
reads past the end are EOFError, and protocols that take no string or container longer than
the data itself, so that a malformed length cannot make the decoder allocate more. Imported
only by the Thrift decoders (the jaeger receiver, zipkin's v1 Thrift bodies): the thrift
package is not in the Lambda layer."""

from __future__ import annotations

from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.TCompactProtocol import TCompactProtocol
from thrift.transport.TTransport import TTransportBase


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
