"""What the HTTP exporters share: client TLS, the aiohttp session, bounded response reads and
the Retry-After header."""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Mapping
from typing import Protocol, cast
from urllib.parse import urlsplit

import aiohttp

from collector.core.component import ComponentID, Host
from collector.core.config_types import ComponentConfig
from collector.exporters.sender import TLSClientConfig

MAX_RESPONSE = 64 * 1024  # responses are small; never buffer a huge one


class AuthConfig(ComponentConfig):
    authenticator: str
    """The id of the extension that authorizes each request, like `sigv4auth` (it must be
    listed in service::extensions). Required."""


class Authenticator(Protocol):
    """An extension that authorizes outgoing HTTP requests."""

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        """Headers to add to the request (a signature over the others and the body)."""
        ...


def authenticator(host: Host, auth: AuthConfig | None) -> Authenticator | None:
    """The extension `auth` names, None without `auth`; ValueError when it is not a running
    authenticator."""
    if auth is None:
        return None
    extension = host.extension(ComponentID.parse(auth.authenticator))
    if extension is None or not hasattr(extension, "authorize"):
        raise ValueError(
            f"auth::authenticator: {auth.authenticator!r} is not an authenticator extension "
            "listed in service::extensions"
        )
    return cast(Authenticator, extension)


class TLSConfig(TLSClientConfig):
    insecure_skip_verify: bool = False
    """Accept any server certificate, without verifying it (default false). Only for tests."""


def ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def client_session(url: str, tls: TLSConfig) -> aiohttp.ClientSession:
    """A session for `url`; TLS per `tls` when the scheme is https."""
    secure = urlsplit(url).scheme == "https"
    connector = aiohttp.TCPConnector(ssl=ssl_context(tls) if secure else False)
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
