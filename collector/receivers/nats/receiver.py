"""The `nats` receiver: a gateway's share of the partitions the `nats` exporter publishes.

Each signal's partition is read through one durable pull consumer of the group
(`<group>_<signal>_<partition>`) filtered on that partition's subject alone. Servers before
2.10 ignore a consumer's `filter_subjects` (a list) and would deliver the whole stream, so the
receiver sends the single `filter_subject` every version knows and checks that the consumer
the server answers with has exactly that filter; it refuses to start otherwise.

The messages of one fetch go to the pipeline as one batch. They are acknowledged only after the
pipeline accepted it (or, with `ack_delay`, that long after), marked in progress while the
pipeline takes long, delivered again after `nak_delay` when the pipeline refuses with a
retryable error, and terminated (never delivered again) when they cannot be decoded or the
pipeline refuses them for good. The stream gives up on a message after `max_deliver`
deliveries. Which partitions this gateway reads is decided by `ownership.py`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Mapping

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.nats_stream import close, connect, ensure_stream, subject_of
from collector.core.pdata import REQUEST_TYPES, check_ids, count_items
from collector.core.signals import ITEM_NAMES, Signal
from collector.core.telemetry import DropLog
from collector.receivers.nats.config import Config
from collector.receivers.nats.ownership import Ownership

# A fetch waits this long for messages; a partition given up stops within it.
_FETCH_WAIT_S = 1.0
# Consumers created or checked at once at start.
_CONSUMER_SETUP_CONCURRENCY = 16


class FilterNotKept(RuntimeError):
    """The server answered with a consumer that does not filter as asked."""


def check_filter(info: api.ConsumerInfo, subject: str) -> None:
    """FilterNotKept unless the consumer `info` describes delivers exactly `subject`."""
    config = info.config
    kept = config.filter_subject or ""
    many = config.filter_subjects or []
    if (kept == subject and not many) or (not kept and many == [subject]):
        return
    got = many or kept or "every subject of the stream"
    raise FilterNotKept(
        f"consumer {info.name} filters {got!r}, not {subject!r}: the server did not keep the "
        "filter (nats-server before 2.10 ignores filter_subjects), or another client created "
        "the consumer differently; refusing to consume the whole stream"
    )


class _AckHolder:
    """Accepted messages kept unacknowledged for `delay` (config `ack_delay`), marked in
    progress every `beat` seconds meanwhile, so that a crash hands them to a survivor."""

    def __init__(self, delay: float, beat: float) -> None:
        self._delay = delay
        self._beat = beat
        self._held: collections.deque[tuple[float, list[Msg]]] = collections.deque()
        self._added = asyncio.Event()

    def hold(self, msgs: list[Msg]) -> None:
        self._held.append((asyncio.get_running_loop().time() + self._delay, msgs))
        self._added.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self._beat
        while True:
            now = loop.time()
            while self._held and self._held[0][0] <= now:
                await _settle(self._held.popleft()[1], "ack")
            if now >= next_beat:
                for _, msgs in self._held:
                    await _settle(msgs, "in_progress")
                next_beat = now + self._beat
            wake = min(next_beat, self._held[0][0]) if self._held else next_beat
            self._added.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._added.wait(), max(wake - now, 0.001))

    async def release_all(self) -> None:
        """Acknowledge everything held now (at shutdown the pipeline flushes what it holds)."""
        while self._held:
            await _settle(self._held.popleft()[1], "ack")


async def _settle(msgs: list[Msg], how: str, **kwargs) -> None:
    """ack, nak, term or in_progress each message; a connection gone meanwhile is not an error
    here: unacknowledged messages come back after ack_wait."""
    for msg in msgs:
        with contextlib.suppress(nats.errors.Error, OSError):
            await getattr(msg, how)(**kwargs)


class _Reader:
    """Reads one signal's partition while this member owns it."""

    def __init__(self, receiver: NatsReceiver, signal: Signal, partition: int) -> None:
        self._receiver = receiver
        self.signal = signal
        self.partition = partition
        self._stopping = False
        self._task = asyncio.create_task(
            self._run(), name=f"nats {signal.value} partition {partition}"
        )

    async def _run(self) -> None:
        r = self._receiver
        js = r.js
        assert js is not None
        durable = r.config.durable(self.signal.value, self.partition)
        sub = await js.pull_subscribe_bind(consumer=durable, stream=r.config.stream)
        try:
            while not self._stopping:
                try:
                    msgs = await sub.fetch(r.config.fetch_batch, timeout=_FETCH_WAIT_S)
                except TimeoutError:  # nothing to fetch (nats-py raises both kinds)
                    continue
                except (nats.errors.Error, OSError) as e:
                    r.fetch_errors.drop(repr(e))
                    await asyncio.sleep(_FETCH_WAIT_S)
                    continue
                try:
                    await r.handle(self.signal, msgs)
                except Exception:  # unacknowledged, they come back after ack_wait
                    r.log.exception(f"partition {self.partition}: handling messages failed")
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def stop(self) -> asyncio.Task:
        """Stop after the current fetch and batch; the task to await for that."""
        self._stopping = True
        return self._task


class NatsReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = dict(next)
        self.log = settings.logger
        self.client: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.ownership: Ownership | None = None
        self._readers: dict[int, list[_Reader]] = {}
        self._tasks: list[asyncio.Task] = []
        self._beat = config.ack_wait / 3
        self._holder = _AckHolder(config.ack_delay, self._beat) if config.ack_delay else None
        self._counters = {
            signal: settings.telemetry.receiver_counters(signal, str(settings.id), "nats")
            for signal in self.next
        }
        self._undecodable = DropLog(self.log, "undecodable NATS messages terminated", "messages")
        self.fetch_errors = DropLog(self.log, "fetching from NATS failed; retrying", "errors")

    async def start(self, host: Host) -> None:
        cfg = self.config
        self.client = await connect(cfg, f"coldtail {self.settings.id} {cfg.member}", self.log)
        self.js = self.client.jetstream()
        try:
            await ensure_stream(self.js, cfg, self.log)
            await self._set_up_consumers(self.js)
            kv = await self._lease_bucket(self.js)
        except BaseException:
            await close(self.client)
            self.client = self.js = None
            raise
        self.ownership = Ownership(
            kv,
            cfg.member,
            cfg.group_members,
            cfg.partitions,
            cfg.lease_ttl,
            gain=self._gain,
            lose=self._lose,
            drop=self._drop,
            log=self.log,
        )
        self._tasks.append(asyncio.create_task(self.ownership.run(), name="nats leases"))
        if self._holder is not None:
            self._tasks.append(asyncio.create_task(self._holder.run(), name="nats held acks"))

    async def _set_up_consumers(self, js: JetStreamContext) -> None:
        """Create (or find) the group's durable consumer of every partition of every signal and
        check each one filters its partition alone."""
        limit = asyncio.Semaphore(_CONSUMER_SETUP_CONCURRENCY)

        async def one(signal: Signal, p: int) -> None:
            subject = subject_of(self.config.subject, signal, p)
            wanted = self._consumer_config(signal, p)
            async with limit:
                try:
                    info = await js.add_consumer(self.config.stream, wanted)
                except nats.js.errors.APIError as e:
                    raise RuntimeError(
                        f"cannot create consumer {wanted.durable_name} on stream "
                        f"{self.config.stream}: {e.description}"
                    ) from None
            check_filter(info, subject)

        await asyncio.gather(*(one(s, p) for s in self.next for p in range(self.config.partitions)))

    def _consumer_config(self, signal: Signal, p: int) -> api.ConsumerConfig:
        cfg = self.config
        return api.ConsumerConfig(
            durable_name=cfg.durable(signal.value, p),
            filter_subject=subject_of(cfg.subject, signal, p),
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=cfg.ack_wait,
            max_deliver=cfg.max_deliver,
            max_ack_pending=cfg.max_ack_pending,
            replay_policy=api.ReplayPolicy.INSTANT,
        )

    async def _lease_bucket(self, js: JetStreamContext):
        """The group's lease bucket, created when missing; an existing one must have the TTL
        this member's timing assumes."""
        cfg = self.config
        try:
            return await js.create_key_value(
                api.KeyValueConfig(
                    bucket=cfg.bucket,
                    history=1,
                    ttl=cfg.lease_ttl,
                    storage=api.StorageType.FILE,
                    replicas=cfg.replicas,
                )
            )
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(cfg.bucket)
        status = await kv.status()
        if status.ttl is None or abs(status.ttl - cfg.lease_ttl) > 1e-3:
            raise ValueError(
                f"lease_ttl: the group's lease bucket {cfg.bucket} expires entries after "
                f"{status.ttl}s, not {cfg.lease_ttl}s: every member must use the same lease_ttl"
            )
        return kv

    async def _gain(self, p: int) -> None:
        self._readers[p] = [_Reader(self, signal, p) for signal in self.next]

    async def _lose(self, p: int) -> None:
        tasks = [reader.stop() for reader in self._readers.pop(p, [])]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _drop(self, p: int) -> None:
        for reader in self._readers.pop(p, []):
            reader.stop()

    async def handle(self, signal: Signal, msgs: list[Msg]) -> None:
        """Hand one fetch's messages to the pipeline as one batch and settle them."""
        batch, good, bad = self._decode(signal, msgs)
        await _settle(bad, "term")
        if not good:
            return
        items = count_items(batch)
        if items == 0:
            await _settle(good, "ack")
            return
        accepted, refused = self._counters[signal]
        alive = asyncio.create_task(self._keep_alive(good))
        try:
            await self.next[signal].consume(batch)
        except RetryableError as e:
            refused.inc(items)
            await self._retry_later(good, e, items, signal)
            return
        except PermanentError as e:
            refused.inc(items)
            self.log.error(
                f"the pipeline refused {items} {_items(signal)} for good; their messages are "
                f"terminated: {e}"
            )
            await _settle(good, "term")
            return
        except Exception as e:
            refused.inc(items)
            self.log.exception("the pipeline failed unexpectedly; messages delivered again")
            await self._retry_later(good, RetryableError(repr(e)), items, signal)
            return
        finally:
            alive.cancel()
        accepted.inc(items)
        if self._holder is not None:
            self._holder.hold(good)
        else:
            await _settle(good, "ack")

    def _decode(self, signal: Signal, msgs: list[Msg]) -> tuple[object, list[Msg], list[Msg]]:
        """The messages' batches merged into one (concatenated protobuf is one request), the
        messages that hold them, and those that cannot be decoded."""
        request = REQUEST_TYPES[signal]
        try:
            data = b"".join(m.data for m in msgs)
            batch = request.FromString(data)
            check_ids(batch, data)
            return batch, msgs, []
        except Exception:
            pass  # find which ones
        good, bad = [], []
        for msg in msgs:
            try:
                check_ids(request.FromString(msg.data))
                good.append(msg)
            except Exception as e:
                self._undecodable.drop(f"{msg.subject}: {str(e) or type(e).__name__}")
                bad.append(msg)
        return request.FromString(b"".join(m.data for m in good)), good, bad

    async def _keep_alive(self, msgs: list[Msg]) -> None:
        """Mark the messages in progress while the pipeline works on them, so that the stream
        does not deliver them again after ack_wait."""
        while True:
            await asyncio.sleep(self._beat)
            await _settle(msgs, "in_progress")

    async def _retry_later(
        self, msgs: list[Msg], error: RetryableError, items: int, signal: Signal
    ) -> None:
        delay = max(self.config.nak_delay, error.retry_after or 0.0)
        last = [m for m in msgs if _deliveries(m) >= self.config.max_deliver]
        if last:
            self.log.error(
                f"the pipeline refused messages delivered {self.config.max_deliver} times "
                f"(max_deliver); the stream gives up on them: {error}"
            )
        else:
            self.log.warning(
                f"the pipeline refused {items} {_items(signal)}; delivered again in "
                f"{delay:g}s: {error}"
            )
        await _settle(msgs, "nak", delay=delay)

    async def shutdown(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Readers stop and what they took is acknowledged before the leases go: the next
        # owner then starts where this one ended, without redeliveries.
        await asyncio.gather(*(self._lose(p) for p in list(self._readers)))
        if self._holder is not None:
            await self._holder.release_all()
        if self.ownership is not None:
            await self.ownership.stop()
            self.ownership = None
        client, self.client, self.js = self.client, None, None
        if client is not None:
            await close(client)  # writes the acknowledgements out first


def _deliveries(msg: Msg) -> int:
    try:
        return msg.metadata.num_delivered
    except Exception:
        return 1


def _items(signal: Signal) -> str:
    return ITEM_NAMES[signal].replace("_", " ")


factory = Factory(
    kind=Kind.RECEIVER,
    type="nats",
    config=Config,
    create=NatsReceiver,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Consumes the partitions the nats exporter publishes to NATS JetStream, shared "
    "among a group of gateways with leases, acknowledging after the pipeline accepted the data.",
)
