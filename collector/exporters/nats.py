"""Exporter `nats`: OTLP protobuf to a NATS JetStream stream, partitioned for the gateways that
consume it with the `nats` receiver.

Each batch is regrouped by partition (`collector/core/nats_stream.py`: spans by trace id,
metrics and log records by resource, resources and scopes kept), and each partition's part is
published to `<subject>.<signal>.<partition>` with a `Nats-Msg-Id` header that hashes its
content. Parts over the server's max payload are split. Publishes go out asynchronously, at
most `max_pending_acks` awaiting their acknowledgement at once, and a batch counts as sent once
the stream acknowledged all its messages. A retry (the shared sender chain: `sending_queue`,
`retry_on_failure`, `timeout`) sends the same messages with the same ids, so whatever the
stream already stored is dropped there as a duplicate, within the stream's duplicate window.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
from pydantic import Field

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.consumer import PermanentError, RetryableError
from collector.core.nats_stream import (
    HEADER_ROOM,
    MSG_ID_HEADER,
    Link,
    NatsStreamConfig,
    message_id,
    partition_batch,
    subject_of,
)
from collector.core.pdata import Encoded, count_items
from collector.core.signals import ITEM_NAMES, Signal
from collector.core.split import split_batch
from collector.exporters.sender import Exporter, SenderConfig

# With `timeout: 0` (no limit per attempt), acknowledgements are still awaited at most this long.
_ACK_WAIT_S = 30.0


class PublishConfig(NatsStreamConfig):
    max_pending_acks: int = Field(256, ge=1)
    """The most messages published and not yet acknowledged by the stream at once, across the
    exporter's concurrent sends (default 256). More keep a distant or replicated stream busier;
    fewer bound what a reconnect has to resend."""


# With the bases in this order, pydantic lists the sender blocks after the exporter's own options.
class Config(SenderConfig, PublishConfig):
    pass


def fit(batch, limit: int) -> tuple[list[bytes], int]:
    """`batch` encoded as payloads of at most `limit` bytes, halving it by items until each part
    fits, and how many items could not fit even alone (left out)."""
    data = batch.SerializeToString(deterministic=True)
    if len(data) <= limit:
        return [data], 0
    items = count_items(batch)
    if items <= 1:
        return [], items
    parts: list[bytes] = []
    oversized = 0
    for half in split_batch(batch, (items + 1) // 2):
        more, left_out = fit(half, limit)
        parts.extend(more)
        oversized += left_out
    return parts, oversized


class NatsExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._link = Link(
            config, f"coldtail {settings.id} {signal.value}", self.log, config.max_pending_acks
        )
        self._items = ITEM_NAMES[signal].replace("_", " ")
        self.ready = self._link.ready
        """Set once connected and the stream is there."""

    async def connect(self) -> None:
        self._link.open()

    async def disconnect(self) -> None:
        await self._link.close()

    async def push(self, batch) -> None:
        js, client = self._link.js, self._link.client
        if js is None or client is None:
            raise RetryableError(f"NATS not ready: {self._link.error}")
        if isinstance(batch, Encoded):
            batch = batch.decode()
        limit = client.max_payload - HEADER_ROOM
        messages: list[tuple[str, bytes]] = []
        oversized = 0
        for partition, part in partition_batch(batch, self.config.partitions):
            subject = subject_of(self.config.subject, self.signal, partition)
            payloads, left_out = fit(part, limit)
            oversized += left_out
            messages.extend((subject, data) for data in payloads)
        await self._publish(js, messages)
        if oversized:
            raise PermanentError(
                f"{oversized} {self._items} each larger than the server's max payload "
                f"({client.max_payload} bytes)",
                rejected=oversized,
            )

    async def _publish(self, js, messages: list[tuple[str, bytes]]) -> None:
        """Publish every message and wait for all their acknowledgements; RetryableError when
        any is missing (a retry resends them all, and the stream drops what it has)."""
        futures: list[asyncio.Future] = []
        try:
            async with asyncio.timeout(self.config.timeout or _ACK_WAIT_S):
                for subject, data in messages:
                    headers = {MSG_ID_HEADER: message_id(subject, data)}
                    futures.append(await js.publish_async(subject, data, headers=headers))
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError:
            acked = sum(1 for f in futures if f.done() and not f.cancelled() and not f.exception())
            raise RetryableError(
                f"{len(messages) - acked} of {len(messages)} messages not acknowledged in time"
            ) from None
        except (nats.errors.Error, OSError) as e:
            raise RetryableError(f"publishing to NATS failed: {e!r}") from None
        finally:
            for future in futures:
                future.cancel()  # frees its place among the pending acks; no-op once done
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise RetryableError(
                f"{len(errors)} of {len(messages)} messages refused: {_describe(errors[0])}"
            )


def _describe(error: BaseException) -> str:
    if isinstance(error, nats.js.errors.NoStreamResponseError):
        return "no stream takes the subject (yet)"
    if isinstance(error, nats.js.errors.APIError):
        return f"{error.description} (code {error.err_code})"
    return repr(error)


factory = Factory(
    kind=Kind.EXPORTER,
    type="nats",
    config=Config,
    create=NatsExporter,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Publishes OTLP to a NATS JetStream stream, partitioned by trace id (metrics "
    "and logs by resource), for gateways running the nats receiver.",
)
