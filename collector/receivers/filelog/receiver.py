"""The `filelog` receiver: tails files into OTLP log records (one per line or multiline entry),
through the configured operators, checkpointing each file's offset in a storage extension once
the pipeline accepted what was read up to it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from collections.abc import Mapping

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.consumer import Consumer, PermanentError
from collector.core.pdata import Logs, copy_batch, python_to_any_value
from collector.core.signals import Signal
from collector.core.storage import key_value_store
from collector.core.telemetry import DropLog
from collector.receivers.filelog.config import Config, codec_name
from collector.receivers.filelog.entry import Entry
from collector.receivers.filelog.fileset import Cycle, FileSet, Token
from collector.receivers.filelog.operators import Pipeline


class FileLogReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.LOGS]
        self.log = settings.logger
        self.id = settings.id
        self.codec = codec_name(config.encoding)
        self.pipeline = Pipeline(config.operators, self.log)
        self._nested = any(
            isinstance(v, dict | list)
            for v in (*config.attributes.values(), *config.resource.values())
        )
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.LOGS, str(settings.id), ""
        )
        self._refusals = DropLog(
            self.log, "filelog: log records refused by the pipeline and dropped", "log_records"
        )
        self.files: FileSet | None = None
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def start(self, host: Host) -> None:
        store = None
        if self.config.storage:
            store = key_value_store(host, self.config.storage, f"receiver_{self.id}")
        files = FileSet(self.config, self.log, store)
        await asyncio.to_thread(files.restore)
        self.files = files
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(files), name=f"filelog {self.id}")

    async def _run(self, files: FileSet) -> None:
        loop = asyncio.get_running_loop()
        failures: set[str] = set()
        while not self._stop.is_set():
            started = loop.time()
            try:
                cycle, batch, count = await asyncio.to_thread(self._poll, files)
                if count and not await self._deliver(batch, count):
                    return  # stopping before the pipeline took it: a restart reads it again
                await asyncio.to_thread(files.commit, cycle)
            except Exception as e:  # a bug must not end the tailing for good
                if type(e).__name__ not in failures:
                    failures.add(type(e).__name__)
                    self.log.exception(f"filelog: poll failed (logged once): {e!r}")
                cycle = Cycle([], [], False)
            if cycle.more:
                await asyncio.sleep(0)
                continue
            wait = self.config.poll_interval - (loop.time() - started)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)

    def _poll(self, files: FileSet) -> tuple[Cycle, Logs, int]:
        """Read the files and make their entries a batch (on a worker thread)."""
        cycle = files.poll()
        batch, count = self._batch(cycle.tokens)
        return cycle, batch, count

    def _batch(self, tokens: list[Token]) -> tuple[Logs, int]:
        batch = Logs()
        scopes: dict[str, object] = {}
        observed = time.time_ns()
        config, count = self.config, 0
        for token in tokens:
            body = self._body(token.data)
            if not body:
                continue  # an empty line is no entry
            # Operators change maps in place: nested values from the config are copied.
            attributes = {**self._copy(config.attributes), **token.reader.attributes}
            if config.include_file_record_number:
                attributes["log.file.record_number"] = token.record
            resource = self._copy(config.resource)
            entry = self.pipeline.run(Entry(body, attributes, resource, observed=observed))
            if entry is None:
                continue
            key = json.dumps(entry.resource, sort_keys=True, default=str) if entry.resource else ""
            scope = scopes.get(key)
            if scope is None:
                resource_logs = batch.resource_logs.add()
                for name, value in entry.resource.items():
                    attribute = resource_logs.resource.attributes.add()
                    attribute.key = name
                    python_to_any_value(value, attribute.value)
                scope = scopes[key] = resource_logs.scope_logs.add()
            _fill(scope.log_records.add(), entry)  # type: ignore[attr-defined]
            count += 1
        return batch, count

    def _copy(self, values: dict) -> dict:
        return copy.deepcopy(values) if self._nested else dict(values)

    def _body(self, data: bytes) -> str | bytes:
        c = self.config
        text: str | bytes = data if self.codec == "nop" else data.decode(self.codec, "replace")
        if not c.preserve_leading_whitespaces:
            text = text.lstrip()
        if not c.preserve_trailing_whitespaces:
            text = text.rstrip()
        return text

    async def _deliver(self, batch: Logs, count: int) -> bool:
        """Hand `batch` to the pipeline, retrying as `retry_on_failure` says. True once it was
        accepted or given up (the offsets may move past it), False when the receiver stops
        first."""
        retry = self.config.retry_on_failure
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry.max_elapsed_time if retry.max_elapsed_time else None
        interval = retry.initial_interval
        while True:
            try:
                # A retried batch goes as it was read, whatever a first attempt changed in it.
                await self.next.consume(copy_batch(batch) if retry.enabled else batch)
                self._accepted.inc(count)
                return True
            except Exception as e:
                permanent = isinstance(e, PermanentError)
                if (
                    not retry.enabled
                    or permanent
                    or (deadline is not None and loop.time() + interval > deadline)
                ):
                    self._refused.inc(count)
                    self._refusals.drop(str(e)[:200] or type(e).__name__, count)
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
                return False
            interval = min(interval * 2, retry.max_interval)

    async def shutdown(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await task  # the poll under way finishes and commits
        except Exception:
            self.log.exception("filelog: the tailing task failed")
        if self.files is not None:
            await asyncio.to_thread(self.files.close)
        self._refusals.flush()


def _fill(record: LogRecord, entry: Entry) -> None:
    record.time_unix_nano = entry.timestamp
    record.observed_time_unix_nano = entry.observed
    record.severity_number = entry.severity  # type: ignore[assignment]
    record.severity_text = entry.severity_text
    if entry.body is not None:
        python_to_any_value(entry.body, record.body)
    for key, value in entry.attributes.items():
        attribute = record.attributes.add()
        attribute.key = key
        python_to_any_value(value, attribute.value)


factory = Factory(
    kind=Kind.RECEIVER,
    type="filelog",
    aliases=("file_log",),
    config=Config,
    create=FileLogReceiver,
    signals={Signal.LOGS: Stability.ALPHA},
    description="Tails log files into log records, parsed by operators, with checkpoints.",
)
