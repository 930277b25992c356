"""The shape shared by processors: count items in and out, transform, hand to the next consumer."""

from __future__ import annotations

from collector.core import wire
from collector.core.component import Settings
from collector.core.consumer import Consumer
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.processors.internal import entries


class Processor:
    """Base processor. Subclasses override `process` (a synchronous, in-place transform returning
    the batch to forward, or None to drop it on purpose), or `consume` for processors that hold or
    refuse data, using `forward` to emit."""

    mutates_data = True
    # Changes attributes only, never which items there are or a span's kind, parent or name:
    # the item count and the spans processors.internal.entries found stay true past it.
    attributes_only = False
    # Changes nothing but the attributes of spans processors.internal.entries found: the batch's
    # received wire form stays true past it but for those spans (core.wire).
    marked_spans_only = False

    def __init__(self, settings: Settings, config, signal: Signal, next: Consumer) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.next = next
        self.log = settings.logger
        labels = dict(
            processor=str(settings.id), pipeline=settings.pipeline, otel_signal=signal.value
        )
        self._incoming = settings.telemetry.processor_incoming.labels(**labels)
        self._outgoing = settings.telemetry.processor_outgoing.labels(**labels)

    async def start(self, host) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    def process(self, batch):
        return batch

    async def consume(self, batch) -> None:
        n = count_items(batch)
        self._incoming.inc(n)
        out = self.process(batch)
        if out is not None:
            await self.forward(out, n if out is batch and self.attributes_only else None)

    async def forward(self, batch, items: int | None = None) -> None:
        """Hand `batch` on; `items` is its count when known."""
        n = count_items(batch) if items is None else items
        if n == 0:
            return
        if self.mutates_data and not self.marked_spans_only:
            wire.drop(batch)
            if not self.attributes_only:
                entries.forget(batch)
        await self.next.consume(batch)
        self._outgoing.inc(n)
