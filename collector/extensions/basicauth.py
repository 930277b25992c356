"""Extension `basicauth`: HTTP Basic authentication, as the OTel Collector's extension of that
name. With `htpasswd`, receivers naming it accept only requests whose `Authorization: Basic`
credentials match an entry (401 / UNAUTHENTICATED otherwise); with `client_auth`, exporters
naming it send those credentials.

Entries are `user:password` lines, from `htpasswd.file` and `htpasswd.inline`; the password may
be bcrypt (`$2y$`, as `htpasswd -B` writes), SHA-1 (`{SHA}`) or plain text. Other hashes (MD5
`$apr1$`, crypt) fail the start naming the line. Passwords are secrets: never logged, never
echoed, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping

from pydantic import SecretStr, model_validator

from collector.core.auth import Unauthenticated
from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig


class HtpasswdConfig(ComponentConfig):
    file: str = ""
    """An htpasswd file (default empty)."""
    inline: SecretStr = SecretStr("")
    """htpasswd lines written in the config, like `${env:USER}:${env:PASSWORD}` (default
    empty)."""


class ClientAuthConfig(ComponentConfig):
    username: str
    """User name exporters send. Required."""
    password: SecretStr
    """Password exporters send. Required."""


class Config(ComponentConfig):
    htpasswd: HtpasswdConfig | None = None
    """Credentials receivers accept (server side)."""
    client_auth: ClientAuthConfig | None = None
    """Credentials exporters send (client side)."""

    @model_validator(mode="after")
    def _one_side(self) -> Config:
        if (self.htpasswd is None) == (self.client_auth is None):
            raise ValueError("set exactly one of htpasswd (receivers) and client_auth (exporters)")
        return self


def _checker(line_no: int, source: str, stored: str) -> Callable[[str], bool]:
    """A function telling whether a password matches the stored one."""
    if stored.startswith(("$2a$", "$2b$", "$2y$")):
        import bcrypt

        hashed = stored.replace("$2y$", "$2b$", 1).encode()
        return lambda password: bcrypt.checkpw(password.encode(), hashed)
    if stored.startswith("{SHA}"):
        digest = stored.removeprefix("{SHA}").encode()
        return lambda password: hmac.compare_digest(
            base64.b64encode(hashlib.sha1(password.encode()).digest()), digest
        )
    if stored.startswith("$"):
        raise ValueError(
            f"htpasswd {source} line {line_no}: unsupported hash {stored.split('$')[1]!r}; "
            "use bcrypt (htpasswd -B) or {SHA}"
        )
    return lambda password: hmac.compare_digest(password.encode(), stored.encode())


class BasicAuth:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self._users: dict[str, Callable[[str], bool]] = {}

    async def start(self, host) -> None:
        htpasswd = self.config.htpasswd
        if htpasswd is None:
            return
        sources = []
        if htpasswd.file:
            try:
                with open(htpasswd.file, encoding="utf-8") as f:
                    sources.append((f"file {htpasswd.file}", f.read()))
            except OSError as e:
                message = f"htpasswd::file: cannot read {htpasswd.file}: {e.strerror}"
                raise ValueError(message) from None
        sources.append(("inline", htpasswd.inline.get_secret_value()))
        for source, text in sources:
            for line_no, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                user, sep, stored = line.strip().partition(":")
                if not sep or not user:
                    raise ValueError(f"htpasswd {source} line {line_no}: expected user:password")
                self._users[user] = _checker(line_no, source, stored)
        if not self._users:
            raise ValueError("htpasswd: no users in file or inline")

    async def shutdown(self) -> None:
        pass

    def authenticate(self, headers: Mapping[str, str]) -> None:
        if self.config.htpasswd is None:
            raise Unauthenticated("basicauth has no htpasswd: it only authorizes exporters")
        value = headers.get("authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            raise Unauthenticated("missing Basic credentials in the Authorization header")
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed Basic credentials") from None
        check = self._users.get(user)
        if not sep or check is None or not check(password):
            raise Unauthenticated("invalid user or password")

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        client = self.config.client_auth
        if client is None:
            raise RuntimeError("basicauth has no client_auth: it only checks receivers' requests")
        pair = f"{client.username}:{client.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


factory = Factory(
    kind=Kind.EXTENSION,
    type="basicauth",
    config=Config,
    create=BasicAuth,
    signals={},
    description="Checks (receivers, htpasswd) or sends (exporters) HTTP Basic credentials.",
)
