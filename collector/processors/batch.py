"""batch processor: merges incoming batches into larger requests and sends them when
`send_batch_size` items are held or `timeout` has passed, as the OTel Collector's batch processor
does. Requests above `send_batch_max_size` items are split.

Data is acknowledged once held, and never dropped for being refused for a while: when the next
consumer refuses a send with a retryable error (an exporter's full sending queue, a memory
limit), the batch is held again and retried with a growing delay, and while it is held new data
is refused with a retryable error (the receiver answers 503 / UNAVAILABLE, so the client retries)
instead of piling up. Only a permanent error of the next consumer drops a batch, logged and
counted as the exporter counts it. At shutdown held data is sent until the service's shutdown
timeout; what is still held then is logged as dropped.
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, model_validator

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer, RetryableError
from collector.core.pdata import Encoded, accepts_encoded, count_items
from collector.core.signals import Signal
from collector.core.split import split_batch
from collector.processors.internal.base import Processor


class Config(ComponentConfig):
    send_batch_size: int = Field(8192, ge=0)
    """Items (spans, metric data points, log records) held after which a batch is sent without
    waiting for the timeout; a trigger, not a size limit. Default 8192. 0: no size trigger, batches
    are sent on timeout only (or at send_batch_max_size items when that is set)."""
    timeout: Duration = Field(0.2, ge=0)
    """Longest time a batch is held before it is sent, whatever its size. Default 200ms. 0: no
    buffering; every incoming batch is sent at once (split by send_batch_max_size), and errors of
    the next consumer then reach the sender."""
    send_batch_max_size: int = Field(0, ge=0)
    """Upper limit of items in one outgoing batch; larger ones are split, keeping resource and
    scope (metrics are split by data point, repeating the metric). Default 0: no limit; otherwise
    it must be at least send_batch_size."""

    @model_validator(mode="after")
    def _max_size(self):
        if 0 < self.send_batch_max_size < self.send_batch_size:
            raise ValueError(
                f"send_batch_max_size ({self.send_batch_max_size}) must be 0 (no limit) or at "
                f"least send_batch_size ({self.send_batch_size})"
            )
        return self


# Delay before a refused batch is offered again, doubling up to the maximum.
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0


# The Collector's buckets for otelcol_processor_batch_batch_send_size.
_SEND_SIZE_BUCKETS = (
    10, 25, 50, 75, 100, 250, 500, 750, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000,
    10000, 20000, 30000, 50000, 100000,
)  # fmt: skip


class _Metrics:
    """The Collector's own metrics of the batch processor."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["processor", "pipeline"]
        self.send_size = Histogram(
            "otelcol_processor_batch_batch_send_size",
            "Number of units in the batch.",
            labels,
            buckets=_SEND_SIZE_BUCKETS,
            registry=registry,
        )
        self.size_trigger = Counter(
            "otelcol_processor_batch_batch_size_trigger_send",
            "Number of times the batch was sent due to a size trigger.",
            labels,
            registry=registry,
        )
        self.timeout_trigger = Counter(
            "otelcol_processor_batch_timeout_trigger_send",
            "Number of times the batch was sent due to a timeout trigger.",
            labels,
            registry=registry,
        )
        self.cardinality = Gauge(
            "otelcol_processor_batch_metadata_cardinality",
            "Number of distinct metadata value combinations being processed.",
            labels,
            registry=registry,
        )


class BatchProcessor(Processor):
    # Held batches become (and are merged into) the outgoing requests, so each must be ours.
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self._held: list = []
        self._held_items = 0
        self._trigger = config.send_batch_size or config.send_batch_max_size
        self._deadline = 0.0
        self._wake = asyncio.Event()
        self._timer: asyncio.Task | None = None
        self._stopping = False
        self._encoded = False  # whether held data is kept as Encoded, decided at start
        # Set while the next consumer refuses: the delay before the held data is offered again.
        self._refused_for: float | None = None
        metrics = settings.telemetry.metric_set(_Metrics)
        labels = {"processor": str(settings.id), "pipeline": settings.pipeline}
        self._send_size = metrics.send_size.labels(**labels)
        self._size_trigger = metrics.size_trigger.labels(**labels)
        self._timeout_trigger = metrics.timeout_trigger.labels(**labels)
        metrics.cardinality.labels(**labels).set(1)  # no metadata_keys: one batcher

    @property
    def accepts_encoded(self) -> bool:
        # Encoded batches are only concatenated, never split: they pass when the next consumer
        # takes them and no size limit asks for splitting.
        return not self.config.send_batch_max_size and accepts_encoded(self.next)

    async def start(self, host) -> None:
        self._encoded = self.accepts_encoded
        if self.config.timeout > 0 and self._timer is None:
            self._timer = asyncio.create_task(self._run_timer(), name=f"{self.settings.id} timer")

    async def shutdown(self) -> None:
        self._stopping = True
        if self._timer is not None:
            # Not cancelled: a send in progress must finish rather than lose its batch.
            self._wake.set()
            await self._timer
            self._timer = None
        try:
            while self._held:
                await self._send(self._take(everything=True))
                if self._refused_for is not None:
                    await asyncio.sleep(self._refused_for)
        finally:
            if self._held:  # the service's shutdown timeout cancelled the retries
                self.log.error(
                    "batch dropped at shutdown: the next consumer kept refusing it",
                    extra={"kv": {"items": self._held_items}},
                )

    async def flush(self) -> None:
        """Send everything held now (the Lambda extension does this before each freeze)."""
        if self._held:
            await self._send(self._take(everything=True))

    async def consume(self, batch) -> None:
        items = count_items(batch)
        self._incoming.inc(items)
        if items == 0:
            return
        if self.config.timeout == 0 or self._stopping:
            for chunk in self._split(batch):
                await self.forward(chunk)
            return
        if self._refused_for is not None:
            raise RetryableError(
                "the batch processor holds data the next consumer refused",
                retry_after=self._refused_for,
            )
        if not self._held:
            self._deadline = asyncio.get_running_loop().time() + self.config.timeout
            self._wake.set()
        if self._encoded:
            # Encoded as it arrives: one large encoding at the send would hold every receiver.
            batch = Encoded.of(batch)
        self._held.append(batch)
        self._held_items += items
        if self._trigger and self._held_items >= self._trigger:
            self._size_trigger.inc()
            await self._send(self._take(everything=False))

    async def _run_timer(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._wake.clear()
            if not self._held:
                await self._wake.wait()
                continue
            delay = self._deadline - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            if self._refused_for is None:  # not a retry of refused data
                self._timeout_trigger.inc()
            await self._send(self._take(everything=True))

    def _take(self, everything: bool) -> list:
        """Remove the held data as outgoing batches. Unless `everything`, a last chunk smaller
        than the size trigger stays held for the next send."""
        held, total = self._held, self._held_items
        self._held, self._held_items = [], 0
        if self._encoded:
            # Concatenating wire forms instead of merging messages and encoding the result
            # (with the exporter's threads): otlp -> batch -> otlp over gRPC went from 72.7k to
            # 100.5k spans per CPU-second in bench/throughput.py.
            return [Encoded.join(held)]
        merged = held[0]
        for batch in held[1:]:
            merged.MergeFrom(batch)
        chunks = self._split(merged)
        max_size = self.config.send_batch_max_size
        rest = total - max_size * (len(chunks) - 1) if max_size else total
        if not everything and rest < self._trigger:
            self._held, self._held_items = [chunks.pop()], rest
            self._deadline = asyncio.get_running_loop().time() + self.config.timeout
        return chunks

    def _split(self, batch) -> list:
        limit = self.config.send_batch_max_size
        return split_batch(batch, limit) if limit else [batch]

    async def _send(self, chunks: list) -> None:
        """Forward `chunks` in order; when one is refused for now, hold it and the rest again,
        ahead of what arrived meanwhile, and offer them after a delay."""
        for i, chunk in enumerate(chunks):
            try:
                await self.forward(chunk)
                self._send_size.observe(count_items(chunk))
            except RetryableError as exc:
                back = chunks[i:]
                self._held[:0] = back
                self._held_items += sum(count_items(c) for c in back)
                delay = min(2 * (self._refused_for or _RETRY_FIRST_S / 2), _RETRY_MAX_S)
                self._refused_for = max(delay, exc.retry_after or 0.0)
                self._deadline = asyncio.get_running_loop().time() + self._refused_for
                self._wake.set()
                return
            except Exception as exc:
                self.log.error(
                    "batch dropped: the next consumer failed",
                    extra={"kv": {"items": count_items(chunk), "error": repr(exc)}},
                )
            self._refused_for = None


factory = Factory(
    kind=Kind.PROCESSOR,
    type="batch",
    config=Config,
    create=BatchProcessor,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.BETA,
        Signal.LOGS: Stability.BETA,
    },
    description="Merges batches and sends them by size or timeout, splitting above a maximum size.",
)
