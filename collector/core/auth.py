"""Authentication between components and the authenticator extensions they name in
`auth: {authenticator: NAME}`: receivers ask a server authenticator about each request's
headers, exporters ask a client authenticator for the headers to add."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

from collector.core.component import ComponentID, Host
from collector.core.config_types import ComponentConfig


class AuthConfig(ComponentConfig):
    authenticator: str
    """The id of the extension that authenticates each request, like `sigv4auth` or
    `bearertokenauth` (it must be listed in service::extensions). Required."""


class Unauthenticated(Exception):
    """The request's credentials are missing or wrong; the message says which, never what
    was sent."""


class ClientAuthenticator(Protocol):
    """An extension that authorizes outgoing requests."""

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> Mapping[str, str | None]:
        """Headers to set on the request (a token, or a signature over the others and the
        body); a None value removes that header."""
        ...


class ServerAuthenticator(Protocol):
    """An extension that checks incoming requests."""

    def authenticate(self, headers: Mapping[str, str]) -> None:
        """Raise Unauthenticated unless `headers` (names lower-case) carry valid credentials."""
        ...


def with_auth_headers(
    headers: Mapping[str, str], extra: Mapping[str, str | None]
) -> dict[str, str]:
    """`headers` with an authenticator's `extra` set, case-insensitively; None removes one."""
    names = {k.lower() for k in extra}
    kept = {k: v for k, v in headers.items() if k.lower() not in names}
    return kept | {k: v for k, v in extra.items() if v is not None}


def client_authenticator(host: Host, auth: AuthConfig | None) -> ClientAuthenticator | None:
    """The extension `auth` names, None without `auth`; ValueError when it is not a running
    client authenticator."""
    return cast(ClientAuthenticator | None, _extension(host, auth, "authorize", "client"))


def server_authenticator(host: Host, auth: AuthConfig | None) -> ServerAuthenticator | None:
    """The extension `auth` names, None without `auth`; ValueError when it is not a running
    server authenticator."""
    return cast(ServerAuthenticator | None, _extension(host, auth, "authenticate", "server"))


def _extension(host: Host, auth: AuthConfig | None, method: str, side: str) -> object | None:
    if auth is None:
        return None
    extension = host.extension(ComponentID.parse(auth.authenticator))
    if extension is None or not hasattr(extension, method):
        raise ValueError(
            f"auth::authenticator: {auth.authenticator!r} is not a {side} authenticator "
            "extension listed in service::extensions"
        )
    return extension
