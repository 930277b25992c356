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
from types import MappingProxyType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import Field, model_validator

from collector.core import client
from collector.core.client import ClientInfo
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer, PermanentError, RetryableError
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

    metadata_keys: list[str] = Field(default_factory=list)
    """Client metadata keys (request headers or gRPC metadata, with the receiver's
    include_metadata) whose values split batching: data of each combination of values is
    batched and sent apart, carrying those values as its client metadata, as multi-tenant
    pipelines need (default none)."""
    metadata_cardinality_limit: int = Field(1000, ge=1)
    """Most combinations of metadata_keys values batched at once; data of a further one is
    refused (default 1000)."""

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


class _Batcher:
    """One batch under construction, its timer and its refusal state. A processor has one, or
    with `metadata_keys` one per combination of their values, each sent with those values as
    its client metadata."""

    def __init__(self, processor: BatchProcessor, sender: ClientInfo | None) -> None:
        self.processor = processor
        self.config: Config = processor.config
        self.sender = sender
        self.held: list = []
        self.held_items = 0
        self.deadline = 0.0
        self.wake = asyncio.Event()
        self.timer: asyncio.Task | None = None
        # Set while the next consumer refuses: the delay before the held data is offered again.
        self.refused_for: float | None = None

    def start_timer(self) -> None:
        if self.config.timeout > 0 and self.timer is None:
            name = f"{self.processor.settings.id} timer"
            self.timer = asyncio.create_task(self._run_timer(), name=name)

    async def stop(self) -> None:
        if self.timer is not None:
            # Not cancelled: a send in progress must finish rather than lose its batch.
            self.wake.set()
            await self.timer
            self.timer = None
        try:
            while self.held:
                await self._send(self._take(everything=True))
                if self.refused_for is not None:
                    await asyncio.sleep(self.refused_for)
        finally:
            if self.held:  # the service's shutdown timeout cancelled the retries
                self.processor.log.error(
                    "batch dropped at shutdown: the next consumer kept refusing it",
                    extra={"kv": {"items": self.held_items}},
                )

    async def flush(self) -> None:
        if self.held:
            await self._send(self._take(everything=True))

    async def add(self, batch, items: int) -> None:
        if self.refused_for is not None:
            raise RetryableError(
                "the batch processor holds data the next consumer refused",
                retry_after=self.refused_for,
            )
        if not self.held:
            self.deadline = asyncio.get_running_loop().time() + self.config.timeout
            self.wake.set()
        if self.processor.encoded:
            # Encoded as it arrives: one large encoding at the send would hold every receiver.
            batch = Encoded.of(batch, items)
        self.held.append(batch)
        self.held_items += items
        trigger = self.processor.trigger
        if trigger and self.held_items >= trigger:
            self.processor.size_trigger.inc()
            await self._send(self._take(everything=False))

    async def _run_timer(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.processor.stopping:
            self.wake.clear()
            if not self.held:
                await self.wake.wait()
                continue
            delay = self.deadline - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
                continue
            if self.refused_for is None:  # not a retry of refused data
                self.processor.timeout_trigger.inc()
            await self._send(self._take(everything=True))

    def _take(self, everything: bool) -> list:
        """Remove the held data as outgoing batches. Unless `everything`, a last chunk smaller
        than the size trigger stays held for the next send."""
        held, total = self.held, self.held_items
        self.held, self.held_items = [], 0
        if self.processor.encoded:
            # Concatenating wire forms instead of merging messages and encoding the result
            # (with the exporter's threads): otlp -> batch -> otlp over gRPC went from 72.7k to
            # 100.5k spans per CPU-second in bench/throughput.py.
            return [Encoded.join(held)]
        merged = held[0]
        for batch in held[1:]:
            merged.MergeFrom(batch)
        chunks = self.processor.split(merged)
        max_size = self.config.send_batch_max_size
        rest = total - max_size * (len(chunks) - 1) if max_size else total
        if not everything and rest < self.processor.trigger:
            self.held, self.held_items = [chunks.pop()], rest
            self.deadline = asyncio.get_running_loop().time() + self.config.timeout
        return chunks

    async def _send(self, chunks: list) -> None:
        """Forward `chunks` in order; when one is refused for now, hold it and the rest again,
        ahead of what arrived meanwhile, and offer them after a delay."""
        for i, chunk in enumerate(chunks):
            try:
                await self._forward(chunk)
                self.processor.send_size.observe(count_items(chunk))
            except RetryableError as exc:
                back = chunks[i:]
                self.held[:0] = back
                self.held_items += sum(count_items(c) for c in back)
                delay = min(2 * (self.refused_for or _RETRY_FIRST_S / 2), _RETRY_MAX_S)
                self.refused_for = max(delay, exc.retry_after or 0.0)
                self.deadline = asyncio.get_running_loop().time() + self.refused_for
                self.wake.set()
                return
            except Exception as exc:
                self.processor.log.error(
                    "batch dropped: the next consumer failed",
                    extra={"kv": {"items": count_items(chunk), "error": repr(exc)}},
                )
            self.refused_for = None

    async def _forward(self, chunk) -> None:
        if self.sender is None:
            await self.processor.forward(chunk)
        else:
            with client.using(self.sender):
                await self.processor.forward(chunk)


class BatchProcessor(Processor):
    # Held batches become (and are merged into) the outgoing requests, so each must be ours.
    mutates_data = True

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        super().__init__(settings, config, signal, next)
        self.trigger = config.send_batch_size or config.send_batch_max_size
        self.stopping = False
        self.started = False
        self.encoded = False  # whether held data is kept as Encoded, decided at start
        self._keys = [key.lower() for key in config.metadata_keys]
        self._batchers: dict[tuple, _Batcher] = {}
        metrics = settings.telemetry.metric_set(_Metrics)
        labels = {"processor": str(settings.id), "pipeline": settings.pipeline}
        self.send_size = metrics.send_size.labels(**labels)
        self.size_trigger = metrics.size_trigger.labels(**labels)
        self.timeout_trigger = metrics.timeout_trigger.labels(**labels)
        self._cardinality = metrics.cardinality.labels(**labels)
        self._cardinality.set(0 if self._keys else 1)

    @property
    def accepts_encoded(self) -> bool:
        # Encoded batches are only concatenated, never split: they pass when the next consumer
        # takes them and no size limit asks for splitting.
        return not self.config.send_batch_max_size and accepts_encoded(self.next)

    async def start(self, host) -> None:
        self.encoded = self.accepts_encoded
        self.started = True
        for batcher in self._batchers.values():
            batcher.start_timer()

    async def shutdown(self) -> None:
        self.stopping = True
        for batcher in list(self._batchers.values()):
            await batcher.stop()

    async def flush(self) -> None:
        """Send everything held now (the Lambda extension does this before each freeze)."""
        for batcher in list(self._batchers.values()):
            await batcher.flush()

    async def consume(self, batch) -> None:
        items = count_items(batch)
        self._incoming.inc(items)
        if items == 0:
            return
        if self.config.timeout == 0 or self.stopping:
            for chunk in self.split(batch):
                await self.forward(chunk)
            return
        await self._batcher().add(batch, items)

    def _batcher(self) -> _Batcher:
        """The batcher of the current client's values of metadata_keys."""
        sender = client.current()
        key = tuple(sender.get(k) for k in self._keys)
        batcher = self._batchers.get(key)
        if batcher is None:
            if len(self._batchers) >= self.config.metadata_cardinality_limit:
                raise PermanentError(
                    "too many combinations of metadata_keys values: over "
                    f"metadata_cardinality_limit ({self.config.metadata_cardinality_limit})"
                )
            values = {k: v for k, v in zip(self._keys, key, strict=True) if v}
            metadata = ClientInfo(metadata=MappingProxyType(values)) if self._keys else None
            batcher = self._batchers[key] = _Batcher(self, metadata)
            self._cardinality.set(len(self._batchers) if self._keys else 1)
            if self.started:
                batcher.start_timer()
        return batcher

    def split(self, batch) -> list:
        limit = self.config.send_batch_max_size
        return split_batch(batch, limit) if limit else [batch]


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
