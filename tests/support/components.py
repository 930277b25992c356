"""Settings and hosts for creating components outside a service."""

from __future__ import annotations

from collector.core.component import ComponentID, Kind, Settings, Shared
from collector.core.telemetry import Telemetry, component_logger


def make_settings(
    kind: Kind | str,
    id: str,
    pipeline: str = "",
    telemetry: Telemetry | None = None,
    shared: Shared | None = None,
) -> Settings:
    """Settings as a service gives them; pass the same `telemetry` and `shared` to components
    that must see each other's metrics and state."""
    kind = Kind(kind)
    cid = ComponentID.parse(id)
    return Settings(
        id=cid,
        kind=kind,
        telemetry=telemetry or Telemetry(),
        pipeline=pipeline,
        logger=component_logger(kind.value, cid, pipeline),
        shared=shared or Shared(),
    )


class StaticHost:
    """A Host whose status tests set by hand."""

    def __init__(self, status: str = "ready", extensions: dict | None = None) -> None:
        self.status = status
        self._extensions = extensions or {}

    def extension(self, id: ComponentID):
        return self._extensions.get(id)

    def layout(self) -> dict:
        return {"pipelines": {}, "extensions": [str(e) for e in self._extensions]}
