"""The sender chain every network exporter shares: queue -> retry -> timeout -> push.

An exporter implements only `push(batch)`, raising PermanentError (never retried) or
RetryableError (retried with exponential backoff, honouring the server's throttle delay). The
config blocks and their defaults are those of the OTel Collector's exporterhelper:
`sending_queue`, `retry_on_failure` and `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Literal, TypeVar

from pydantic import Field, model_validator

from collector.core import client, tasks
from collector.core.client import ClientInfo
from collector.core.component import Host, Settings
from collector.core.config_types import ComponentConfig, Duration, format_duration
from collector.core.consumer import PermanentError, RetryableError
from collector.core.health import ExportFailures
from collector.core.pdata import REJECTED_FIELDS, REQUEST_TYPES, Encoded, count_items, new_batch
from collector.core.signals import ITEM_NAMES, Signal
from collector.core.split import split_batch
from collector.core.storage import QueueStore, queue_store
from collector.core.telemetry import DropLog, go_duration

Push = Callable[[object], Awaitable[None]]
# Once shutting down, retries wait at most this long: the shutdown timeout is the budget left.
_SHUTDOWN_RETRY_S = 0.5


class QueueBatchConfig(ComponentConfig):
    """Batching in the sending queue, as the Collector now recommends over the batch processor:
    the consumers merge queued batches before they send."""

    flush_timeout: Duration = Field(0.2, gt=0)
    """Send what was gathered this long after its first batch, however small (default 200ms)."""
    min_size: int = Field(8192, ge=0)
    """Send as soon as this much is gathered, in units of `sizer` (default 8192)."""
    max_size: int = Field(0, ge=0)
    """Split larger requests to at most this many items (default 0 = no limit); only with the
    `items` sizer."""
    sizer: Literal["items", "bytes"] = "items"
    """What `min_size` and `max_size` count: `items` (default) or `bytes`."""

    @model_validator(mode="after")
    def _check_sizes(self) -> QueueBatchConfig:
        if self.max_size and self.sizer != "items":
            raise ValueError("max_size: only with sizer items")
        if self.max_size and self.max_size < self.min_size:
            raise ValueError("max_size: must be at least min_size")
        return self


class QueueConfig(ComponentConfig):
    enabled: bool = True
    """Buffer batches in memory and send them from background consumers (default true). When
    false, consume() sends inline and returns the final error to the caller."""
    num_consumers: int = Field(10, ge=1)
    """How many batches are sent concurrently from the queue (default 10)."""
    queue_size: int = Field(1000, ge=1)
    """The most the queue holds, in units of `sizer` (default 1000). When full, new batches are
    refused with a retryable error (the receiver answers 503 / UNAVAILABLE), unless
    `block_on_overflow`. A single batch larger than this is refused as a permanent error."""
    sizer: Literal["requests", "items", "bytes"] = "requests"
    """What `queue_size` counts: `requests` (batches, default), `items` (spans, data points,
    log records) or `bytes` (of the batches' protobuf encoding)."""
    block_on_overflow: bool = False
    """When the queue is full, wait for room instead of refusing the batch (default false). The
    sender upstream, such as a receiver's client, then waits too."""
    batch: QueueBatchConfig | None = None
    """Merge queued batches before sending (default none; `batch: {}` for the defaults)."""
    wait_for_result: bool = False
    """Hold each batch's sender until the batch was exported or given up on, and hand it the
    outcome (default false: done once queued). A receiver then answers its client only after
    the backend took the data."""
    storage: str | None = None
    """A storage extension, like `file_storage`, that keeps the queue on disk (default none:
    in memory). A batch is acknowledged once stored, and what was stored and not yet sent when
    the process stopped or crashed is sent after the restart (at least once: a batch in flight
    at a crash is sent again)."""


class RetryConfig(ComponentConfig):
    enabled: bool = True
    """Retry batches that failed with a retryable error (default true). When false, a batch gets
    one attempt."""
    initial_interval: Duration = 5.0
    """Wait before the first retry (default 5s); grows by `multiplier` per retry."""
    randomization_factor: float = Field(0.5, ge=0, le=1)
    """Jitter: each wait is drawn from interval * [1 - factor, 1 + factor] (default 0.5;
    0 = no jitter)."""
    multiplier: float = Field(1.5, ge=1)
    """Growth of the wait between retries (default 1.5)."""
    max_interval: Duration = 30.0
    """Upper bound of the wait between retries (default 30s)."""
    max_elapsed_time: Duration = 300.0
    """Give up on a batch once this much time has passed since its first attempt (default 300s;
    0 = retry forever)."""

    @model_validator(mode="after")
    def _check_intervals(self) -> RetryConfig:
        if self.enabled and self.initial_interval <= 0:
            raise ValueError("initial_interval must be greater than 0")
        if self.enabled and self.max_interval < self.initial_interval:
            raise ValueError("max_interval must not be less than initial_interval")
        return self


class SenderConfig(ComponentConfig):
    """The blocks every network exporter's config carries."""

    timeout: Duration = Field(5.0, ge=0)
    """Time limit of one send attempt (default 5s; 0 = none). A timed-out attempt is retried."""
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    """In-memory queue between the pipeline and the backend."""
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    """Retries of retryable failures with exponential backoff."""


class TLSClientConfig(ComponentConfig):
    """Client TLS files, as in the Collector's `tls` block (PEM files; empty = not used)."""

    ca_file: str = ""
    """CA certificates that verify the server (default empty = the system's trusted roots)."""
    cert_file: str = ""
    """Client certificate for mutual TLS (default empty = none); needs `key_file`."""
    key_file: str = ""
    """Private key of `cert_file` (default empty = none)."""
    server_name_override: str = ""
    """Host name the server's certificate is checked against (default empty = the endpoint's
    host)."""
    insecure_skip_verify: bool = False
    """Accept any server certificate, without verifying it (default false). Only for tests."""

    @model_validator(mode="after")
    def _check_pair(self) -> TLSClientConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        return self

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        if self.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def check_partial_success(response, signal: Signal, log) -> None:
    """Raise PermanentError(rejected=n) when an OTLP export response rejected n items; log a
    warning when it carries only a message."""
    partial = response.partial_success
    rejected = getattr(partial, REJECTED_FIELDS[signal])
    if rejected:
        raise PermanentError(partial.error_message or "no message", rejected=rejected)
    if partial.error_message:
        log.warning(f"partial success response: {partial.error_message}")


class Backoff:
    """Exponential backoff with jitter, as github.com/cenkalti/backoff computes it."""

    def __init__(self, cfg: RetryConfig) -> None:
        self._cfg = cfg
        self._interval = cfg.initial_interval

    def next(self) -> float:
        cfg = self._cfg
        jitter = cfg.randomization_factor * (2 * random.random() - 1)
        delay = self._interval * (1 + jitter)
        self._interval = min(self._interval * cfg.multiplier, cfg.max_interval)
        return delay


def _measure(batch, sizer: str) -> int:
    """`batch`'s size in `sizer` units: requests, items or bytes of its protobuf encoding."""
    if sizer == "requests":
        return 1
    if sizer == "items":
        return count_items(batch)
    return len(batch.data) if isinstance(batch, Encoded) else batch.ByteSize()


def _by_client(entries: list) -> list[tuple[ClientInfo, list]]:
    """The batches of queue entries in runs of the same client (each run is sent under its
    client's metadata), in order."""
    runs: list[tuple[ClientInfo, list]] = []
    for entry in entries:
        sender = entry[4] or ClientInfo()
        if runs and runs[-1][0] == sender:
            runs[-1][1].append(entry[1])
        else:
            runs.append((sender, [entry[1]]))
    return runs


class Sender:
    """Queue -> retry -> timeout -> push for one exporter and signal.

    Counts sent / send_failed / enqueue_failed items in the service's telemetry and logs one
    line per batch it gives up on.
    """

    def __init__(
        self, settings: Settings, signal: Signal, push: Push, config: SenderConfig
    ) -> None:
        self._push = push
        self._queue_cfg = config.sending_queue
        self._retry_cfg = config.retry_on_failure
        self._timeout = config.timeout
        self._log = settings.logger
        self._signal = signal
        self._items = ITEM_NAMES[signal].replace("_", " ")
        t, exporter = settings.telemetry, str(settings.id)
        self._sent = t.exporter_sent[signal].labels(exporter=exporter)
        self._failed = t.exporter_send_failed[signal].labels(exporter=exporter)
        self._enqueue_failed = t.exporter_enqueue_failed[signal].labels(exporter=exporter)
        # Entries are (storage key or None, batch, size in sizer units, future of its outcome
        # or None, its client); the queue itself is unbounded, `_used` against queue_size
        # bounds it.
        self._queue: asyncio.Queue | None = None
        self._used = 0
        self._room = asyncio.Event()  # set when a batch leaves the queue (or at shutdown)
        self._batch_cfg = self._queue_cfg.batch
        self._max_size = self._batch_cfg.max_size if self._batch_cfg else 0
        self._gathering = asyncio.Lock()
        if self._queue_cfg.enabled:
            self._queue = asyncio.Queue()
            gauges = dict(exporter=exporter, data_type=signal.value)
            t.exporter_queue_capacity.labels(**gauges).set(self._queue_cfg.queue_size)
            t.exporter_queue_size.labels(**gauges).set_function(lambda: self._used)
        self._workers: list[asyncio.Task] = []
        self._in_flight = 0  # items the consumers are sending right now
        self._closed = False
        self._closing = asyncio.Event()  # wakes retries asleep in their backoff
        self._store: QueueStore | None = None
        self._failures = settings.shared.get(ExportFailures)
        # A full or failing disk refuses every batch: one line per 10 s says so, with counts.
        self._store_refusals = DropLog(
            self._log,
            "persistent queue cannot store: data refused, clients told to retry",
            ITEM_NAMES[signal],
        )

    async def open_storage(self, host: Host, owner: str) -> None:
        """With `sending_queue.storage`, keep the queue there and queue what it holds from
        before (a stop or a crash), ahead of anything new."""
        name = self._queue_cfg.storage
        if not name or self._queue is None:
            return
        store = queue_store(host, name, owner)
        records = await asyncio.to_thread(store.records)
        # Records beyond the configured size (it may have shrunk) still all get queued.
        restored = 0
        for key, record in records:
            try:
                batch = REQUEST_TYPES[self._signal].FromString(record)
            except Exception:
                self._log.error(f"persistent queue: record {key} is not a batch; dropped")
                store.remove(key)
                continue
            size = _measure(batch, self._queue_cfg.sizer)
            self._used += size
            self._queue.put_nowait((key, batch, size, None, None))  # clients are not stored
            restored += count_items(batch)
        self._store = store
        if restored:
            self._log.info(
                f"persistent queue: {restored} {self._items} from before the restart queued"
            )

    def start(self) -> None:
        if self._queue is None or self._workers or self._closed:
            return
        self._workers = [
            asyncio.create_task(self._consume_queue(self._queue), name=f"sender-{i}")
            for i in range(self._queue_cfg.num_consumers)
        ]

    async def send(self, batch) -> None:
        if self._closed:
            raise RetryableError("exporter is shutting down")
        if self._queue is None:
            await self._export(batch)
            return
        size, capacity = _measure(batch, self._queue_cfg.sizer), self._queue_cfg.queue_size
        if size > capacity:
            self._enqueue_failed.inc(count_items(batch))
            raise PermanentError(
                f"a batch of {size} {self._queue_cfg.sizer} is larger than the sending queue "
                f"({capacity})"
            )
        while self._used + size > capacity:
            if not self._queue_cfg.block_on_overflow or self._closed:
                self._enqueue_failed.inc(count_items(batch))
                raise RetryableError("sending queue is full")
            self._room.clear()
            await self._room.wait()
        self._used += size  # reserved while the batch is stored
        key = None
        if self._store is not None:
            data = batch.data if isinstance(batch, Encoded) else batch.SerializeToString()
            try:
                key = await asyncio.to_thread(self._store.add, data)
            except OSError as e:
                self._release(size)
                self._enqueue_failed.inc(count_items(batch))
                self._store_refusals.drop(e.strerror or repr(e), count_items(batch))
                raise RetryableError(f"persistent queue cannot store: {e.strerror}") from None
        outcome = (
            asyncio.get_running_loop().create_future() if self._queue_cfg.wait_for_result else None
        )
        self._queue.put_nowait((key, batch, size, outcome, client.current()))
        if outcome is not None:
            await outcome

    def _release(self, size: int) -> None:
        self._used -= size
        self._room.set()

    async def flush(self) -> None:
        """Wait until every batch queued so far has been sent (or given up on)."""
        if self._queue is not None and self._workers:
            await self._queue.join()

    async def shutdown(self) -> None:
        """Refuse new batches, send everything queued, then stop the consumers. If cancelled
        (the service's shutdown timeout), drop what is left and stop at once. Retries asleep
        in their backoff wake and try again at once."""
        self._closed = True
        self._closing.set()
        self._room.set()  # senders waiting for room give up
        queue = self._queue
        if queue is None or not self._workers:
            return
        try:
            await queue.join()
        finally:
            left = self._in_flight
            while not queue.empty():
                _, batch, size, outcome, _ = queue.get_nowait()
                left += count_items(batch)
                self._release(size)
                if outcome is not None and not outcome.done():
                    outcome.set_exception(RetryableError("exporter is shutting down"))
                queue.task_done()
            if left and self._store is not None:
                self._log.warning(
                    f"shutdown interrupted; {left} {self._items} stay in the persistent queue "
                    "and are sent after the restart"
                )
            elif left:
                self._failed.inc(left)
                self._log.error(
                    f"shutdown interrupted; dropping {left} {self._items} still queued or in flight"
                )
            await tasks.cancel(self._workers)
            self._workers = []

    async def _consume_queue(self, queue: asyncio.Queue) -> None:
        while True:
            entries: list = []
            try:
                if self._batch_cfg is None:
                    entries.append(self._take(await queue.get()))
                else:
                    async with self._gathering:  # one consumer gathers at a time
                        await self._gather(queue, entries)
                # _export counts and logs a failure; the data is then dropped, and its waiting
                # senders, if any, told.
                error: Exception | None = None
                for sender, batches in _by_client(entries):
                    with client.using(sender):  # for authenticators like headers_setter
                        for chunk in self._requests(batches):
                            try:
                                await self._export(chunk)
                            except Exception as e:
                                error = error or e
                for key, _, _, outcome, _ in entries:
                    if outcome is not None and not outcome.done():
                        if error is None:
                            outcome.set_result(None)
                        else:
                            outcome.set_exception(error)
                    if key is not None:  # sent or given up: either way done with
                        self._store_remove(key)
            finally:
                for _, batch, _, _, _ in entries:
                    self._in_flight -= count_items(batch)
                    queue.task_done()

    def _take(self, entry: tuple) -> tuple:
        """An entry the consumer took off the queue: its room is free, its items in flight."""
        self._release(entry[2])
        self._in_flight += count_items(entry[1])
        return entry

    async def _gather(self, queue: asyncio.Queue, entries: list) -> None:
        """Take queued entries until they hold `batch.min_size` or `batch.flush_timeout` has
        passed since the first."""
        cfg = self._batch_cfg
        assert cfg is not None
        entries.append(self._take(await queue.get()))
        gathered = _measure(entries[0][1], cfg.sizer)
        deadline = asyncio.get_running_loop().time() + cfg.flush_timeout
        while gathered < cfg.min_size:
            try:
                if self._closed:  # what is queued still goes together, without waiting
                    entry = queue.get_nowait()
                else:
                    async with asyncio.timeout_at(deadline):
                        entry = await queue.get()
            except (TimeoutError, asyncio.QueueEmpty):
                return
            entries.append(self._take(entry))
            gathered += _measure(entry[1], cfg.sizer)

    def _requests(self, batches: list) -> list:
        """The gathered batches as the requests to send: merged, then cut to `max_size`."""
        if len(batches) == 1:
            merged = batches[0]
        elif all(isinstance(b, Encoded) for b in batches):
            merged = Encoded.join(batches)  # concatenated requests are one request
        else:
            merged = new_batch(self._signal)
            for batch in batches:
                merged.MergeFrom(batch.decode() if isinstance(batch, Encoded) else batch)
        if self._max_size and count_items(merged) > self._max_size:
            if isinstance(merged, Encoded):
                merged = merged.decode()
            return split_batch(merged, self._max_size)
        return [merged]

    def _store_remove(self, key: int) -> None:
        assert self._store is not None
        try:
            self._store.remove(key)
        except OSError as e:  # sent twice after a restart, at worst
            self._log.warning(f"persistent queue: cannot remove record {key}: {e.strerror}")

    async def _export(self, batch) -> None:
        """One batch through retry and timeout; counts and logs the outcome, raises the final
        error."""
        items = count_items(batch)
        try:
            await self._with_retry(batch)
        except PermanentError as e:
            rejected = items if e.rejected is None else e.rejected
            self._sent.inc(items - rejected)
            self._failed.inc(rejected)
            if e.rejected is None:
                self._log.error(
                    f"exporting failed; dropping {items} {self._items}: "
                    f"permanent error, not retried: {e}"
                )
            else:
                self._log.warning(
                    f"partial success: the backend rejected {rejected} of "
                    f"{items} {self._items}: {e}"
                )
            raise
        except RetryableError as e:
            self._failed.inc(items)
            self._log.error(
                f"exporting failed; dropping {items} {self._items}: no more retries left: {e}"
            )
            raise
        except Exception as e:
            self._failed.inc(items)
            self._log.exception(
                f"exporting failed; dropping {items} {self._items}: unexpected error"
            )
            raise PermanentError(f"unexpected exporter error: {e!r}") from e
        self._sent.inc(items)

    async def _with_retry(self, batch) -> None:
        cfg = self._retry_cfg
        if not cfg.enabled:
            await self._attempt(batch)
            return
        backoff = Backoff(cfg)
        deadline = time.monotonic() + cfg.max_elapsed_time if cfg.max_elapsed_time else None
        while True:
            try:
                await self._attempt(batch)
                return
            except RetryableError as e:
                # The server's throttle delay wins over a shorter backoff, as in the Collector.
                delay = max(backoff.next(), e.retry_after or 0.0)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                if self._closed:
                    delay = min(delay, _SHUTDOWN_RETRY_S)
                self._log.info(f"exporting failed, will retry in {go_duration(delay)}: {e}")
                if self._closed:
                    await asyncio.sleep(delay)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing.wait()

    async def _attempt(self, batch) -> None:
        try:
            if not self._timeout:
                await self._push(batch)
                return
            try:
                async with asyncio.timeout(self._timeout):
                    await self._push(batch)
            except TimeoutError:
                raise RetryableError(
                    f"send attempt timed out after {format_duration(self._timeout)}"
                ) from None
        except Exception:
            self._failures.record()
            raise


C = TypeVar("C", bound=SenderConfig)
T = TypeVar("T")


class Exporter(Generic[C]):
    """Base of the network exporters: owns the Sender; subclasses implement `push` and, when
    they hold a connection, `connect` / `disconnect`."""

    mutates_data = False

    def __init__(self, settings: Settings, config: C, signal: Signal) -> None:
        self.settings = settings
        self.config = config
        self.signal = signal
        self.log = settings.logger
        self.sender = Sender(settings, signal, self.push, config)
        self._threads: ThreadPoolExecutor | None = None

    async def start(self, host) -> None:
        await self.sender.open_storage(host, f"{self.settings.id}_{self.signal.value}")
        await self.connect()
        self.sender.start()

    async def consume(self, batch) -> None:
        await self.sender.send(batch)

    async def flush(self) -> None:
        await self.sender.flush()

    async def shutdown(self) -> None:
        try:
            await self.sender.shutdown()
        finally:
            await self.disconnect()
            if self._threads is not None:
                self._threads.shutdown(wait=False)
                self._threads = None

    async def run_blocking(self, call: Callable[..., T], *args) -> T:
        """`call(*args)` on a thread of the exporter's own, for blocking client libraries (and
        work that releases the GIL, like compression): one thread per queue consumer, so that
        no send waits for a thread."""
        if self._threads is None:
            queue = self.config.sending_queue
            self._threads = ThreadPoolExecutor(
                queue.num_consumers if queue.enabled else 1,
                thread_name_prefix=str(self.settings.id),
            )
        return await asyncio.get_running_loop().run_in_executor(self._threads, call, *args)

    async def connect(self) -> None:
        """Open what push needs (called from start)."""

    async def disconnect(self) -> None:
        """Close what connect opened; idempotent, safe without connect."""

    async def push(self, batch) -> None:
        raise NotImplementedError
