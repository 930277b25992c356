"""Consumers that record or fail, for tests of any component."""

from __future__ import annotations

import asyncio

from collector.core.pdata import count_items


class SinkConsumer:
    """Records every batch it receives. Set `mutates_data` to exercise fan-out copying, and
    `accepts_encoded` to be handed pdata.Encoded batches where a component can."""

    def __init__(self, mutates_data: bool = False, accepts_encoded: bool = False) -> None:
        self.mutates_data = mutates_data
        self.accepts_encoded = accepts_encoded
        self.batches: list = []
        self._changed = asyncio.Event()

    async def consume(self, batch) -> None:
        self.batches.append(batch)
        self._changed.set()

    @property
    def item_count(self) -> int:
        return sum(count_items(b) for b in self.batches)

    async def wait_for(self, items: int, timeout: float = 5.0) -> None:
        """Wait until at least `items` items have arrived; TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while self.item_count < items:
                self._changed.clear()
                await self._changed.wait()

    def reset(self) -> None:
        self.batches.clear()


class ErrorConsumer:
    """Raises `error` for every batch (after recording it)."""

    mutates_data = False

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.batches: list = []

    async def consume(self, batch) -> None:
        self.batches.append(batch)
        raise self.error


class NopConsumer:
    mutates_data = False

    async def consume(self, batch) -> None:
        return None
