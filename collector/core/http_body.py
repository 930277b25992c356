"""Request bodies of HTTP receivers: read up to a size limit and inflated (gzip, deflate) up to
the same limit, so that neither a huge body nor a compression bomb is ever held whole."""

from __future__ import annotations

import zlib

from aiohttp import web

# zlib window bits per Content-Encoding ("deflate" is the zlib format, as in HTTP).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class RequestError(Exception):
    """A request refused before it reaches the pipeline, with its HTTP status."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


def decompress(body: bytes, content_encoding: str, limit: int) -> bytes:
    """Inflate `body`, producing at most `limit` bytes: a compression bomb is refused as soon
    as its output passes the limit, without inflating the rest."""
    coding = content_encoding.strip().lower()
    if coding in ("", "identity"):
        return body
    wbits = _WBITS.get(coding)
    if wbits is None:
        raise RequestError(400, f"unsupported Content-Encoding {content_encoding!r}")
    parts: list[bytes] = []
    size = 0
    remaining = body
    # gzip allows several concatenated members; each needs a fresh decompressor.
    while remaining:
        inflater = zlib.decompressobj(wbits)
        try:
            part = inflater.decompress(remaining, limit + 1 - size)
        except zlib.error as e:
            raise RequestError(400, f"invalid {coding} body: {e}") from None
        size += len(part)
        if size > limit:
            raise RequestError(413, f"decompressed body exceeds {limit} bytes")
        if not inflater.eof:
            raise RequestError(400, f"truncated {coding} body")
        parts.append(part)
        remaining = inflater.unused_data if coding == "gzip" else b""
    return b"".join(parts)


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request's body, inflated per its Content-Encoding; RequestError 413 past `limit`
    bytes as sent or inflated, 400 when it cannot be inflated."""
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(413, f"body of {request.content_length} bytes exceeds {limit}")
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return decompress(b"".join(chunks), request.headers.get("Content-Encoding", ""), limit)
