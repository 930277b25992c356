"""The `file` exporter: writes every batch to a local file, as the OTel Collector's fileexporter.

Each export request becomes one OTLP/JSON line (`format: json`) or one protobuf message
preceded by its length as a 4-byte big-endian integer (`format: proto`), as the Collector
writes them. Exporters of every signal, and of every component writing to the same path, share
one writer, so records never interleave and a file is never rotated twice. All file I/O of a
writer runs in order on one dedicated thread, so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import Field, field_validator

from collector.core import otlpjson
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import RetryableError
from collector.core.pdata import count_items
from collector.core.signals import Signal

_MIB = 1024 * 1024
_BUFFER_BYTES = 256 * 1024
# Backup names carry the rotation time, as the Collector's (lumberjack) backups do.
_BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S.%f"


class RotationConfig(ComponentConfig):
    max_megabytes: int = Field(100, ge=0)
    """Size in MiB at which the file is rotated. Default 100; 0 means the default."""

    max_days: int = Field(0, ge=0)
    """Days to keep a rotated file, judged by the time in its name. Default 0: no age limit."""

    max_backups: int = Field(100, ge=0)
    """Most rotated files to keep; older ones are deleted. Default 100; 0 keeps all of them."""

    localtime: bool = False
    """Use local time rather than UTC in rotated file names. Default false."""

    @property
    def max_bytes(self) -> int:
        return (self.max_megabytes or 100) * _MIB


class Config(ComponentConfig):
    path: str
    """File to write to; created with its parent directories, appended to when it exists.
    Required."""

    format: Literal["json", "proto"] = "json"
    """`json`: one OTLP/JSON export request per line. `proto`: each export request as protobuf
    bytes preceded by their length (4-byte big-endian). Default json."""

    compression: Literal["", "zstd"] = ""
    """`zstd`: each export request (JSON or protobuf) is written as one zstd frame preceded by
    its length (4-byte big-endian), as the Collector writes it. Default empty: none."""

    rotation: RotationConfig | None = None
    """Rotate by size: the file is renamed to `<name>-<time><ext>` and a new one started. Absent
    (the default) means the file grows without limit."""

    flush_interval: Duration = Field(1.0, ge=0)
    """How often buffered data is flushed and synced to disk (a duration, like 1s). Default 1s;
    0 flushes after every batch. Shutdown always flushes."""

    @field_validator("path")
    @classmethod
    def _non_empty(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("path must be non-empty")
        return path


def _json_line(batch) -> bytes:
    return otlpjson.dumps(batch).encode() + b"\n"


def _proto_frame(batch) -> bytes:
    data = batch.SerializeToString()
    return struct.pack(">I", len(data)) + data


def _zstd_frame(data: bytes) -> bytes:
    import cramjam  # only with compression: the Lambda layer goes without

    compressed = bytes(cramjam.zstd.compress(data))
    return struct.pack(">I", len(compressed)) + compressed


_ENCODERS = {"json": _json_line, "proto": _proto_frame}
_PAYLOADS = {
    "json": lambda batch: otlpjson.dumps(batch).encode(),
    "proto": lambda batch: batch.SerializeToString(),
}


class _Writer:
    """One open file and its rotation state. The methods named `_..._sync` run on the writer's
    own thread only; the async methods queue work there and may be called from the event loop."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.rotation = config.rotation
        self.flush_interval = config.flush_interval
        # What every exporter sharing this writer must agree on.
        self.options = config.model_dump(exclude={"path"})
        self.users = 0
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-exporter")
        self._file: BinaryIO | None = None
        self._size = 0
        self._last_backup_time: datetime | None = None
        self._flusher: asyncio.Task | None = None

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def open(self) -> None:
        await self._run(self._open_sync)
        if self.flush_interval:
            self._flusher = asyncio.create_task(self._flush_periodically())

    async def write(self, data: bytes) -> None:
        await self._run(self._write_sync, data)

    async def flush(self) -> None:
        await self._run(self._flush_sync)

    async def close(self) -> None:
        if self._flusher:
            self._flusher.cancel()
            self._flusher = None
        try:
            await self._run(self._close_sync)
        finally:
            self._io.shutdown(wait=False)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            # The next write reports the failure against the data it concerns.
            with contextlib.suppress(OSError):
                await self.flush()

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=_BUFFER_BYTES)  # noqa: SIM115
        self._size = self._file.tell()

    def _write_sync(self, data: bytes) -> None:
        rotation = self.rotation
        if rotation and self._size and self._size + len(data) > rotation.max_bytes:
            self._rotate_sync()
        assert self._file is not None, "write before open"
        self._file.write(data)
        self._size += len(data)
        if not self.flush_interval:
            self._flush_sync()

    def _flush_sync(self) -> None:
        if self._file:
            self._file.flush()
            os.fsync(self._file.fileno())

    def _close_sync(self) -> None:
        if self._file:
            try:
                self._flush_sync()
            finally:
                self._file.close()
                self._file = None

    def _now(self) -> datetime:
        local = self.rotation is not None and self.rotation.localtime
        now = datetime.now() if local else datetime.now(UTC)
        return now.replace(tzinfo=None)

    def _rotate_sync(self) -> None:
        try:
            self._close_sync()
            self.path.rename(self._backup_path())
        finally:
            self._open_sync()
        self._prune_sync()

    def _backup_path(self) -> Path:
        when = self._now()
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
        # Names are millisecond-precise; keep them unique and ordered under fast rotation.
        if self._last_backup_time and when <= self._last_backup_time:
            when = self._last_backup_time + timedelta(milliseconds=1)
        self._last_backup_time = when
        stamp = when.strftime(_BACKUP_TIME_FORMAT)[:-3]
        return self.path.with_name(f"{self.path.stem}-{stamp}{self.path.suffix}")

    def _backups(self) -> list[tuple[datetime, Path]]:
        """Rotated files of this path, newest first; other files in the directory are ignored."""
        prefix, suffix = self.path.stem + "-", self.path.suffix
        found = []
        for entry in self.path.parent.iterdir():
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(suffix)):
                continue
            stamp = name[len(prefix) : len(name) - len(suffix)]
            try:
                found.append((datetime.strptime(stamp, _BACKUP_TIME_FORMAT), entry))
            except ValueError:
                continue
        return sorted(found, reverse=True)

    def _prune_sync(self) -> None:
        assert self.rotation is not None, "pruning backups without rotation"
        keep = self.rotation.max_backups
        max_days = self.rotation.max_days
        oldest = self._now() - timedelta(days=max_days) if max_days else None
        for i, (when, backup) in enumerate(self._backups()):
            if (keep and i >= keep) or (oldest and when < oldest):
                backup.unlink(missing_ok=True)


class Writers:
    """The service's open writers by resolved path, shared by every file exporter writing
    there (one per signal, or several pipelines into one file)."""

    def __init__(self) -> None:
        self._open: dict[Path, _Writer] = {}

    async def acquire(self, config: Config) -> _Writer:
        path = Path(config.path).resolve()
        writer = self._open.get(path)
        if writer is None:
            writer = self._open[path] = _Writer(path, config)
            try:
                await writer.open()
            except BaseException:
                del self._open[path]
                await writer.close()
                raise
        elif writer.options != config.model_dump(exclude={"path"}):
            raise ValueError(
                f"{path} is already written by a file exporter with different format, "
                "rotation or flush_interval settings"
            )
        writer.users += 1
        return writer

    async def release(self, writer: _Writer) -> None:
        writer.users -= 1
        if writer.users:
            await writer.flush()
        else:
            del self._open[writer.path]
            await writer.close()


class FileExporter:
    """Writes each batch as one record; `start` opens (or joins) the shared writer."""

    mutates_data = False

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        self.config = config
        if config.compression == "zstd":
            payload = _PAYLOADS[config.format]
            self._encode = lambda batch: _zstd_frame(payload(batch))
        else:
            self._encode = _ENCODERS[config.format]
        self._writers = settings.shared.get(Writers)
        self._writer: _Writer | None = None
        exporter = str(settings.id)
        self._sent = settings.telemetry.exporter_sent[signal].labels(exporter=exporter)
        self._failed = settings.telemetry.exporter_send_failed[signal].labels(exporter=exporter)

    async def start(self, host) -> None:
        self._writer = await self._writers.acquire(self.config)

    async def consume(self, batch) -> None:
        items = count_items(batch)
        # Encode on the event loop: the pipeline owns the batch, and another thread would not
        # encode faster under the GIL.
        data = self._encode(batch)
        writer = self._writer
        assert writer is not None, "consume before start"
        try:
            await writer.write(data)
        except OSError as e:
            self._failed.inc(items)
            raise RetryableError(f"writing {writer.path}: {e}") from e
        self._sent.inc(items)

    async def shutdown(self) -> None:
        writer, self._writer = self._writer, None
        if writer:
            await self._writers.release(writer)


factory = Factory(
    kind=Kind.EXPORTER,
    type="file",
    config=Config,
    create=FileExporter,
    signals={s: Stability.ALPHA for s in Signal},
    description="Writes OTLP/JSON lines (or length-prefixed protobuf) to a file, with rotation.",
)
