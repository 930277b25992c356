"""Exporter `logging`: the `debug` exporter under the name the OTel Collector used before it was
removed there, so that older configs keep running; validation warns that it is deprecated.

Its old `loglevel` option still sets the verbosity (`debug`: detailed, `info`: normal, `warn`
and `error`: basic) unless `verbosity` is given, and its default verbosity is `normal`, as the
logging exporter's was."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from collector.core.component import Factory, Kind, Stability
from collector.core.signals import Signal
from collector.exporters import debug

_VERBOSITY = {"debug": "detailed", "info": "normal", "warn": "basic", "error": "basic"}


class Config(debug.Config):
    verbosity: Literal["basic", "normal", "detailed"] = "normal"
    """As the debug exporter's, with default normal."""
    loglevel: Literal["debug", "info", "warn", "error"] | None = None
    """The old way to set the verbosity (default none): debug is detailed, info normal, warn
    and error basic. `verbosity` wins when both are set."""

    @model_validator(mode="after")
    def _from_loglevel(self) -> Config:
        if self.loglevel is not None and "verbosity" not in self.model_fields_set:
            self.verbosity = _VERBOSITY[self.loglevel]  # type: ignore[assignment]
        return self


factory = Factory(
    kind=Kind.EXPORTER,
    type="logging",
    config=Config,
    create=debug.DebugExporter,
    signals={s: Stability.DEPRECATED for s in Signal},
    description="Deprecated: the debug exporter under its old name.",
    deprecated="the logging exporter was removed from the OTel Collector: use debug",
)
