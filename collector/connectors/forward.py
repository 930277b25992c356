"""The `forward` connector: passes batches unchanged from one pipeline to others of the same
signal, so a pipeline's processed data can feed several differently processed pipelines."""

from __future__ import annotations

from collections.abc import Mapping

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import Consumer
from collector.core.signals import Signal


class Config(ComponentConfig):
    """No options."""


class ForwardConnector:
    # Downstream fan-out copies for the pipelines that mutate; forwarding itself only reads.
    mutates_data = False

    def __init__(
        self, settings: Settings, config: Config, signal: Signal, next: Mapping[Signal, Consumer]
    ) -> None:
        self._next = next.get(signal)

    async def start(self, host) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    async def consume(self, batch) -> None:
        if self._next is not None:
            await self._next.consume(batch)


factory = Factory(
    kind=Kind.CONNECTOR,
    type="forward",
    config=Config,
    create=ForwardConnector,
    signals={s: {s: Stability.BETA} for s in Signal},
    description="Passes data unchanged to the pipelines of the same signal that receive from it.",
)
