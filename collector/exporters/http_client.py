"""What the HTTP exporters share: client TLS, the aiohttp session, bounded response reads and
the Retry-After header."""

from __future__ import annotations

import email.utils
import time
from urllib.parse import urlsplit

import aiohttp

from collector.exporters.sender import TLSClientConfig

MAX_RESPONSE = 64 * 1024  # responses are small; never buffer a huge one


class TLSConfig(TLSClientConfig):
    insecure: bool = False
    """Accepted for compatibility with Collector configs: over HTTP the endpoint's scheme
    decides, `http://` plain text and `https://` TLS (default false)."""


def client_session(url: str, tls: TLSConfig) -> aiohttp.ClientSession:
    """A session for `url`; TLS per `tls` when the scheme is https."""
    secure = urlsplit(url).scheme == "https"
    connector = aiohttp.TCPConnector(ssl=tls.ssl_context() if secure else False)
    # No client-side total timeout: the sender's `timeout` bounds every attempt.
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), or None."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def read_body(response: aiohttp.ClientResponse) -> bytes:
    """At most MAX_RESPONSE bytes of the response body."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(MAX_RESPONSE):
        body += chunk
        if len(body) >= MAX_RESPONSE:
            break
    return bytes(body[:MAX_RESPONSE])
