"""Extension `file_storage`: the persistent queues of exporters (`sending_queue.storage`) as
files in `directory`, one sub-directory per exporter and signal, one file per queued batch; and
the key-value stores of other components (the `filelog` receiver's offsets), one file per owner
(`<owner>.kv`) holding all its keys.

A batch is written to a temporary file and renamed into place, so a crash never leaves half a
record under a record's name; with `fsync` the file and the directory are synced before the
add returns, which survives a power loss too, at the cost of a disk flush per batch. Each file
starts with a CRC-32 of its content: a damaged one is skipped, counted, logged and moved
aside (`*.damaged`) rather than sent. A full disk makes the add fail, and the exporter refuses
the batch with a retryable error; a directory that cannot be written fails the start.

A key-value store is small (offsets, not data): it is read whole when opened and every change
(a set, a delete, a batch) rewrites the whole file the same way, to a temporary file renamed
over the old one, so a batch is all or nothing and a crash leaves the old or the new content.
A damaged file (its CRC-32 does not match) is logged, moved aside and the store starts empty.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from pydantic import Field

from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig
from collector.core.storage import Operation, OpKind

_HEADER = struct.Struct(">I")  # CRC-32 of the record
_SUFFIX = ".batch"
_KV_MAGIC = b"CTKV1"
_KV_SUFFIX = ".kv"
_LENGTH = struct.Struct(">I")


class Config(ComponentConfig):
    directory: str = "/var/lib/coldtail/file_storage"
    """Where the queues are kept (default /var/lib/coldtail/file_storage); it must exist, or
    `create_directory` be true."""
    create_directory: bool = False
    """Create `directory` when missing (default false)."""
    fsync: bool = False
    """Sync every record and every key-value change to the disk before acknowledging it
    (default false: a process crash loses nothing, a power loss may lose the last records)."""
    compaction: dict = Field(default_factory=dict)
    """Accepted for compatibility with Collector configs: files are removed as they are sent,
    so there is nothing to compact."""


class _FileQueue:
    def __init__(self, directory: Path, fsync: bool, log) -> None:
        self.directory = directory
        self.fsync = fsync
        self.log = log
        self.damaged = 0
        keys = [int(p.stem) for p in directory.glob(f"*{_SUFFIX}") if p.stem.isdigit()]
        self._next = max(keys, default=0) + 1

    def _path(self, key: int) -> Path:
        return self.directory / f"{key:020d}{_SUFFIX}"

    def add(self, record: bytes) -> int:
        key, self._next = self._next, self._next + 1
        temporary = self.directory / f"{key:020d}.tmp"
        try:
            with open(temporary, "wb") as f:
                f.write(_HEADER.pack(zlib.crc32(record)))
                f.write(record)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(temporary, self._path(key))
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        if self.fsync:
            _sync_directory(self.directory)
        return key

    def remove(self, key: int) -> None:
        self._path(key).unlink(missing_ok=True)

    def records(self) -> list[tuple[int, bytes]]:
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)  # written by a process that died before the rename
        found = []
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            data = path.read_bytes()
            header, record = data[: _HEADER.size], data[_HEADER.size :]
            if len(header) < _HEADER.size or _HEADER.unpack(header)[0] != zlib.crc32(record):
                self.damaged += 1
                self.log.error(
                    "persistent queue: damaged record skipped", extra={"kv": {"file": str(path)}}
                )
                path.rename(path.with_suffix(".damaged"))
                continue
            found.append((int(path.stem), record))
        return found


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _encode_map(values: dict[str, bytes]) -> bytes:
    parts = []
    for key, value in values.items():
        encoded = key.encode()
        parts += [_LENGTH.pack(len(encoded)), encoded, _LENGTH.pack(len(value)), value]
    body = b"".join(parts)
    return _KV_MAGIC + _HEADER.pack(zlib.crc32(body)) + body


def _decode_map(data: bytes) -> dict[str, bytes]:
    """The map in `data`; ValueError when it is damaged."""
    head = len(_KV_MAGIC) + _HEADER.size
    if len(data) < head or not data.startswith(_KV_MAGIC):
        raise ValueError("not a key-value file")
    body = data[head:]
    if _HEADER.unpack(data[len(_KV_MAGIC) : head])[0] != zlib.crc32(body):
        raise ValueError("checksum mismatch")
    values, pos = {}, 0
    while pos < len(body):
        parts = []
        for _ in range(2):
            if pos + _LENGTH.size > len(body):
                raise ValueError("truncated")
            (size,) = _LENGTH.unpack_from(body, pos)
            pos += _LENGTH.size
            if pos + size > len(body):
                raise ValueError("truncated")
            parts.append(body[pos : pos + size])
            pos += size
        values[parts[0].decode()] = parts[1]
    return values


class _KeyValueFile:
    """One owner's keys, in memory and in one file rewritten whole on every change."""

    def __init__(self, path: Path, fsync: bool, log) -> None:
        self.path = path
        self.fsync = fsync
        self.log = log
        self.damaged = 0
        self._lock = threading.Lock()
        self._closed = False
        self._temporary = path.with_name(path.name + ".tmp")
        self._temporary.unlink(missing_ok=True)  # a process died before its rename
        self._values: dict[str, bytes] = {}
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        try:
            self._values = _decode_map(data)
        except ValueError as e:
            self.damaged += 1
            self.log.error(
                f"key-value store: damaged file set aside ({e}); starting empty",
                extra={"kv": {"file": str(path)}},
            )
            path.rename(path.with_name(path.name + ".damaged"))

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"key-value store {self.path.name} is closed")

    def get(self, key: str) -> bytes | None:
        with self._lock:
            self._check()
            return self._values.get(key)

    def set(self, key: str, value: bytes) -> None:
        self.batch(Operation(OpKind.SET, key, value))

    def delete(self, key: str) -> None:
        self.batch(Operation(OpKind.DELETE, key))

    def batch(self, *operations: Operation) -> None:
        with self._lock:
            self._check()
            values = dict(self._values)
            changed = False
            for op in operations:
                if op.kind is OpKind.GET:
                    op.value = values.get(op.key)
                elif op.kind is OpKind.SET:
                    if op.value is None:
                        raise ValueError(f"set {op.key!r}: no value")
                    changed = changed or values.get(op.key) != op.value
                    values[op.key] = bytes(op.value)
                elif op.key in values:
                    del values[op.key]
                    changed = True
            if changed:
                self._write(values)
                self._values = values

    def _write(self, values: dict[str, bytes]) -> None:
        try:
            with open(self._temporary, "wb") as f:
                f.write(_encode_map(values))
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(self._temporary, self.path)
        except OSError:
            self._temporary.unlink(missing_ok=True)
            raise
        if self.fsync:
            _sync_directory(self.path.parent)

    def close(self) -> None:
        with self._lock:
            self._closed = True


class FileStorage:
    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger

    async def start(self, host) -> None:
        directory = Path(self.config.directory)
        if self.config.create_directory:
            directory.mkdir(parents=True, exist_ok=True)
        if not directory.is_dir():
            raise ValueError(f"directory: {directory} does not exist (or set create_directory)")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ValueError(f"directory: {directory} is not writable")

    async def shutdown(self) -> None:
        pass

    def queue(self, owner: str) -> _FileQueue:
        directory = Path(self.config.directory) / _file_name(owner)
        try:
            directory.mkdir(exist_ok=True)
        except OSError as e:
            raise ValueError(f"directory: cannot create {directory}: {e.strerror}") from None
        return _FileQueue(directory, self.config.fsync, self.log)

    def key_value(self, owner: str) -> _KeyValueFile:
        path = Path(self.config.directory) / (_file_name(owner) + _KV_SUFFIX)
        try:
            return _KeyValueFile(path, self.config.fsync, self.log)
        except OSError as e:
            raise ValueError(f"directory: cannot open {path}: {e.strerror}") from None


def _file_name(owner: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in owner)


factory = Factory(
    kind=Kind.EXTENSION,
    type="file_storage",
    config=Config,
    create=FileStorage,
    signals={},
    description=(
        "Keeps exporters' sending queues and receivers' checkpoints on disk, so that a restart "
        "sends and resumes them."
    ),
)
