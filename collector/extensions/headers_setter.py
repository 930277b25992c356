"""Extension `headers_setter`: sets request headers of the exporters naming it in `auth`, from
fixed values or from the metadata of the client whose data is being sent, as the OTel
Collector's extension of that name. With a receiver's `include_metadata` and the batch
processor's `metadata_keys`, a multi-tenant pipeline forwards each tenant's X-Scope-OrgID:

    extensions:
      headers_setter:
        headers:
          - {key: X-Scope-OrgID, from_context: x-scope-orgid, default_value: anonymous}
    exporters:
      otlp: {endpoint: "tempo:4317", auth: {authenticator: headers_setter}}

A metadata key with several values gives its first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from collector.core import client
from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig


class HeaderConfig(ComponentConfig):
    key: str = Field(min_length=1)
    """The header's name. Required."""
    action: Literal["insert", "update", "upsert", "delete"] = "upsert"
    """insert (only when the request lacks the header), update (only when it has it), upsert
    (default) or delete."""
    value: str | None = None
    """A fixed value."""
    from_context: str | None = None
    """The client metadata key (a request header the receiver kept with include_metadata)
    whose value is sent."""
    default_value: str | None = None
    """With from_context: the value when the client has no such metadata (default: the
    header is then not set)."""

    @model_validator(mode="after")
    def _one_source(self) -> HeaderConfig:
        if self.action == "delete":
            if self.value is not None or self.from_context is not None:
                raise ValueError("action delete takes no value or from_context")
        elif (self.value is None) == (self.from_context is None):
            raise ValueError("set exactly one of value and from_context")
        if self.default_value is not None and self.from_context is None:
            raise ValueError("default_value goes with from_context")
        return self


class Config(ComponentConfig):
    headers: list[HeaderConfig] = Field(min_length=1)
    """The headers to set, in order. Required."""


class HeadersSetter:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config

    async def start(self, host) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def authorize(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> dict[str, str | None]:
        present = {k.lower() for k in headers}
        sender = client.current()
        out: dict[str, str | None] = {}
        for h in self.config.headers:
            name = h.key.lower()
            has = name in present or name in {k.lower() for k, v in out.items() if v is not None}
            if h.action == "delete":
                out[h.key] = None
                continue
            if (h.action == "insert" and has) or (h.action == "update" and not has):
                continue
            if h.from_context is not None:
                values = sender.get(h.from_context)
                value = values[0] if values else h.default_value
            else:
                value = h.value
            if value is not None:
                out[h.key] = value
        return out


factory = Factory(
    kind=Kind.EXTENSION,
    type="headers_setter",
    config=Config,
    create=HeadersSetter,
    signals={},
    description="Sets exporters' request headers from fixed values or the client's metadata "
    "(multi-tenant X-Scope-OrgID).",
)
