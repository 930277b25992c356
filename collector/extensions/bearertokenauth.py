"""Extension `bearertokenauth`: a static token, as the OTel Collector's extension of that
name. Receivers naming it in `auth` accept only requests whose header carries `<scheme>
<token>` (401 / UNAUTHENTICATED otherwise); exporters naming it send that header.

The token comes from `token` or from `filename`, read again when the file changes, so that a
rotated secret takes effect without a restart. It is a secret: never logged, never echoed in an
error, compared in constant time.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping

from pydantic import SecretStr, model_validator

from collector.core.auth import Unauthenticated
from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig


class Config(ComponentConfig):
    scheme: str = "Bearer"
    """Scheme before the token in the header (default Bearer; empty = the token alone)."""
    token: SecretStr = SecretStr("")
    """The token; shown as ********** wherever the config is printed."""
    filename: str = ""
    """File holding the token instead of `token`, read again whenever it changes (default
    empty)."""
    header: str = "Authorization"
    """Header carrying the token (default Authorization)."""

    @model_validator(mode="after")
    def _one_source(self) -> Config:
        if bool(self.token.get_secret_value()) == bool(self.filename):
            raise ValueError("set exactly one of token and filename")
        return self


class BearerTokenAuth:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self._header = config.header.lower()
        self._token = config.token.get_secret_value()
        self._stamp: float | None = None

    async def start(self, host) -> None:
        if self.config.filename:
            self._read_file()  # a missing file fails the start, naming it

    async def shutdown(self) -> None:
        pass

    def _value(self) -> str:
        if self.config.filename:
            try:
                if os.stat(self.config.filename).st_mtime != self._stamp:
                    self._read_file()
            except (OSError, ValueError):
                pass  # mid-rotation: keep the token read last
        scheme = self.config.scheme
        return f"{scheme} {self._token}" if scheme else self._token

    def _read_file(self) -> None:
        path = self.config.filename
        try:
            stamp = os.stat(path).st_mtime
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise ValueError(f"filename: cannot read {path}: {e.strerror}") from None
        if not token:
            raise ValueError(f"filename: {path} is empty")
        self._token, self._stamp = token, stamp

    def authenticate(self, headers: Mapping[str, str]) -> None:
        sent = headers.get(self._header)
        if sent is None:
            raise Unauthenticated(f"missing {self.config.header} header")
        if not hmac.compare_digest(sent.encode(), self._value().encode()):
            raise Unauthenticated(f"invalid {self.config.header} header")

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str]:
        return {self.config.header: self._value()}


factory = Factory(
    kind=Kind.EXTENSION,
    type="bearertokenauth",
    config=Config,
    create=BearerTokenAuth,
    signals={},
    description="Checks (receivers) or sends (exporters) a static bearer token.",
)
