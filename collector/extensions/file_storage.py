"""Extension `file_storage`: the persistent queues of exporters (`sending_queue.storage`) as
files in `directory`, one sub-directory per exporter and signal, one file per queued batch.

A batch is written to a temporary file and renamed into place, so a crash never leaves half a
record under a record's name; with `fsync` the file and the directory are synced before the
add returns, which survives a power loss too, at the cost of a disk flush per batch. Each file
starts with a CRC-32 of its content: a damaged one is skipped, counted, logged and moved
aside (`*.damaged`) rather than sent. A full disk makes the add fail, and the exporter refuses
the batch with a retryable error; a directory that cannot be written fails the start.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from pydantic import Field

from collector.core.component import Factory, Kind, Settings
from collector.core.config_types import ComponentConfig

_HEADER = struct.Struct(">I")  # CRC-32 of the record
_SUFFIX = ".batch"


class Config(ComponentConfig):
    directory: str = "/var/lib/coldtail/file_storage"
    """Where the queues are kept (default /var/lib/coldtail/file_storage); it must exist, or
    `create_directory` be true."""
    create_directory: bool = False
    """Create `directory` when missing (default false)."""
    fsync: bool = False
    """Sync every record to the disk before acknowledging it (default false: a process crash
    loses nothing, a power loss may lose the last records)."""
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
            descriptor = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
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
        directory = Path(self.config.directory) / "".join(
            c if c.isalnum() or c in "-_." else "_" for c in owner
        )
        try:
            directory.mkdir(exist_ok=True)
        except OSError as e:
            raise ValueError(f"directory: cannot create {directory}: {e.strerror}") from None
        return _FileQueue(directory, self.config.fsync, self.log)


factory = Factory(
    kind=Kind.EXTENSION,
    type="file_storage",
    config=Config,
    create=FileStorage,
    signals={},
    description="Keeps exporters' sending queues on disk, so that a restart sends them.",
)
