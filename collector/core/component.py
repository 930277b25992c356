"""Component identity, kinds, stability and the factory registry.

Every component type registers one factory. A factory is plain data plus a `create` callable
(usually the component class itself), so every component has the same shape:

    receiver:   create(settings, config, next: Mapping[Signal, Consumer])   one per ID
    processor:  create(settings, config, signal, next: Consumer)            one per pipeline
    exporter:   create(settings, config, signal)                            one per (ID, signal)
    connector:  create(settings, config, signal, next: Mapping[Signal, Consumer])   one per
                                                                            (ID, input signal)
    extension:  create(settings, config)                                    one per ID
"""

from __future__ import annotations

import builtins
import enum
import importlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel

from collector.core.signals import Signal

if TYPE_CHECKING:
    from collector.core.telemetry import Telemetry


class Kind(enum.StrEnum):
    RECEIVER = "receiver"
    PROCESSOR = "processor"
    EXPORTER = "exporter"
    CONNECTOR = "connector"
    EXTENSION = "extension"

    @property
    def section(self) -> str:
        """The top-level config key holding components of this kind."""
        return self.value + "s"


class Stability(enum.StrEnum):
    DEVELOPMENT = "development"
    ALPHA = "alpha"
    BETA = "beta"
    STABLE = "stable"
    DEPRECATED = "deprecated"


_TYPE_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


@dataclass(frozen=True, order=True)
class ComponentID:
    """`type` or `type/name`, as in the OTel Collector."""

    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: str) -> ComponentID:
        if not isinstance(text, str):
            raise ValueError(f"component id must be a string, got {type(text).__name__}")
        type_, sep, name = text.strip().partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(
                f"invalid component id {text!r}: the type must start with a letter and hold only "
                "letters, digits and '_'"
            )
        if sep and not name:
            raise ValueError(f"invalid component id {text!r}: empty name after '/'")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class Component(Protocol):
    async def start(self, host: Host) -> None:
        """Return quickly; own (and later cancel) the tasks you start."""

    async def shutdown(self) -> None:
        """Idempotent, safe without start; flush what you hold."""


class Host(Protocol):
    """What the service offers components at start."""

    @property
    def status(self) -> str:
        """One of "starting", "ready", "stopping", "stopped"."""

    def extension(self, id: ComponentID) -> Component | None: ...

    def layout(self) -> dict[str, Any]:
        """The running service as plain data, for pages that show it: `pipelines` (id ->
        receivers, processors, exporters: component id strings) and `extensions` (ids)."""
        ...


T = TypeVar("T")


class Shared:
    """State that components of one service share, one object per type, created on first use
    (e.g. the Lambda init reports that the Telemetry API receiver records and the coldstart
    processor reads). The service owns it: state lives and dies with the service, never in a
    module global."""

    def __init__(self) -> None:
        self._objects: dict[type, Any] = {}

    def get(self, kind: type[T]) -> T:
        """The service's `kind()`, made by the first call."""
        if kind not in self._objects:
            self._objects[kind] = kind()
        return self._objects[kind]


@dataclass
class Settings:
    """Passed to every create call. `telemetry` and `shared` are the service's, the same for all
    its components."""

    id: ComponentID
    kind: Kind
    telemetry: Telemetry
    pipeline: str = ""  # set for processors (one instance per pipeline)
    logger: logging.Logger | logging.LoggerAdapter = field(
        default_factory=lambda: logging.getLogger("coldtail")
    )
    shared: Shared = field(default_factory=Shared)


@dataclass(frozen=True)
class Factory:
    kind: Kind
    type: str
    config: builtins.type[BaseModel]  # `builtins.`: the field above shadows `type` here
    create: Callable[..., Any]
    # Signal -> stability. For connectors: input signal -> (output signal -> stability).
    signals: Mapping[Any, Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    # Set for a type kept only for old configs: validation warns with this message.
    deprecated: str = ""

    def supports(self, signal: Signal) -> bool:
        return signal in self.signals

    def connects(self, signal_in: Signal, signal_out: Signal) -> bool:
        return signal_out in self.signals.get(signal_in, {})


class Registry:
    """Factories by kind and type name (aliases included). A type may be registered lazily, by
    the module that defines its `factory`, imported on first use: a collector then imports only
    the components its config names (the Lambda extension's init time is the function's)."""

    def __init__(self, missing: Callable[[Kind, str], str | None] | None = None) -> None:
        self._factories: dict[Kind, dict[str, Factory | str]] = {k: {} for k in Kind}
        self._missing = missing

    def missing(self, kind: Kind, type_: str) -> str | None:
        """What to know about an OTel Collector component type this registry lacks, if it is a
        known one."""
        return self._missing(kind, type_) if self._missing is not None else None

    def register(self, factory: Factory) -> Factory:
        table = self._factories[factory.kind]
        for name in (factory.type, *factory.aliases):
            if isinstance(table.get(name), Factory):
                raise ValueError(f"duplicate {factory.kind} type {name!r}")
            table[name] = factory
        return factory

    def register_lazy(self, kind: Kind, names: tuple[str, ...], module: str) -> None:
        """`names` (type and aliases) of `kind` are defined by `module`.factory."""
        table = self._factories[kind]
        for name in names:
            if name in table:
                raise ValueError(f"duplicate {kind} type {name!r}")
            table[name] = module

    def get(self, kind: Kind, type_: str) -> Factory | None:
        entry = self._factories[kind].get(type_)
        if isinstance(entry, str):
            factory = importlib.import_module(entry).factory
            if factory.kind is not kind or type_ not in (factory.type, *factory.aliases):
                raise ValueError(f"{entry}.factory is not the {kind} type {type_!r}")
            self.register(factory)
            return factory
        return entry

    def types(self, kind: Kind) -> list[str]:
        """Canonical type names and aliases, sorted."""
        return sorted(self._factories[kind])

    def factories(self, kind: Kind | None = None) -> list[Factory]:
        """Every factory (importing all lazily registered modules)."""
        kinds = [kind] if kind else list(Kind)
        seen: dict[int, Factory] = {}
        for k in kinds:
            for name in list(self._factories[k]):
                f = self.get(k, name)
                if f is not None:
                    seen.setdefault(id(f), f)
        return sorted(seen.values(), key=lambda f: (list(Kind).index(f.kind), f.type))
