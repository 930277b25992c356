"""Recording components for service tests: they record their lifecycle and the data they see.

`recording_registry()` holds receiver `testrecv`, processor `testproc`, exporter `testexp`,
connector `testconn` (same signal in and out) and extension `testext`. Every instance is kept in
`INSTANCES` by (kind, id, pipeline or signal) and logs start/shutdown into `EVENTS`.
"""

from __future__ import annotations

from collector.core.component import Factory, Kind, Registry, Stability
from collector.core.config_types import ComponentConfig
from collector.core.signals import Signal
from collector.processors.internal.base import Processor

EVENTS: list[str] = []
INSTANCES: dict[tuple, object] = {}

ALL = {s: Stability.DEVELOPMENT for s in Signal}


class RecordingConfig(ComponentConfig):
    mutates: bool = False
    """Whether the component declares that it mutates data."""
    tag: str = ""
    """For processors: an attribute key set on every resource (to observe copies)."""


class _Lifecycle:
    label = ""

    async def start(self, host) -> None:
        EVENTS.append(f"start {self.label}")

    async def shutdown(self) -> None:
        EVENTS.append(f"shutdown {self.label}")


class RecordingReceiver(_Lifecycle):
    def __init__(self, settings, config, next) -> None:
        self.next = next
        self.label = f"receiver {settings.id}"
        INSTANCES[(Kind.RECEIVER, str(settings.id))] = self

    async def emit(self, signal: Signal, batch) -> None:
        await self.next[signal].consume(batch)


class RecordingProcessor(Processor):
    def __init__(self, settings, config, signal, next) -> None:
        super().__init__(settings, config, signal, next)
        self.mutates_data = config.mutates
        self.label = f"processor {settings.id} in {settings.pipeline}"
        INSTANCES[(Kind.PROCESSOR, str(settings.id), settings.pipeline)] = self

    async def start(self, host) -> None:
        EVENTS.append(f"start {self.label}")

    async def shutdown(self) -> None:
        EVENTS.append(f"shutdown {self.label}")

    def process(self, batch):
        if self.config.tag:
            from collector.core.pdata import resources, set_attr

            for r in resources(batch):
                set_attr(r.resource.attributes, self.config.tag, True)
        return batch


class RecordingExporter(_Lifecycle):
    def __init__(self, settings, config, signal) -> None:
        self.mutates_data = config.mutates
        self.batches: list = []
        self.label = f"exporter {settings.id} ({signal})"
        INSTANCES[(Kind.EXPORTER, str(settings.id), signal.value)] = self

    async def consume(self, batch) -> None:
        self.batches.append(batch)


class RecordingConnector(_Lifecycle):
    mutates_data = False

    def __init__(self, settings, config, signal, next) -> None:
        self.next = next.get(signal)
        self.label = f"connector {settings.id} ({signal})"
        INSTANCES[(Kind.CONNECTOR, str(settings.id), signal.value)] = self

    async def consume(self, batch) -> None:
        if self.next:
            await self.next.consume(batch)


class RecordingExtension(_Lifecycle):
    def __init__(self, settings, config) -> None:
        self.label = f"extension {settings.id}"


def recording_registry() -> Registry:
    reg = Registry()
    reg.register(Factory(Kind.RECEIVER, "testrecv", RecordingConfig, RecordingReceiver, ALL))
    reg.register(Factory(Kind.PROCESSOR, "testproc", RecordingConfig, RecordingProcessor, ALL))
    reg.register(Factory(Kind.EXPORTER, "testexp", RecordingConfig, RecordingExporter, ALL))
    reg.register(
        Factory(
            Kind.CONNECTOR,
            "testconn",
            RecordingConfig,
            RecordingConnector,
            {s: {s: Stability.DEVELOPMENT} for s in Signal},
        )
    )
    reg.register(Factory(Kind.EXTENSION, "testext", RecordingConfig, RecordingExtension, {}))
    return reg


def reset() -> None:
    EVENTS.clear()
    INSTANCES.clear()
