"""Finding, identifying and reading the files, and their checkpoints (the Collector's
fileconsumer, pkg/stanza/fileconsumer).

Every poll matches the globs, opens each file and reads its first `fingerprint_size` bytes,
its fingerprint. A file whose fingerprint starts with a known one is that file, wherever it now
is (renamed, copied by copytruncate); any other is new, read from its beginning (from its end
only at the first poll with `start_at: end`). Two files with the same fingerprint are read
once. A file matched before and not now (renamed out of the patterns, deleted) is "lost": it
is drained through the handle kept open from before until it has stopped growing for a few
polls. Known files no longer seen are remembered (with their offsets) for a few polls more.

A poll reads each file from its offset up to a budget and returns the entries with what to
commit; the offsets move only at `commit`, which the receiver calls once the pipeline took the
entries (or gave up on them), and the checkpoint is stored then. So a crash reads again at most
what was not acknowledged, and a clean stop reads nothing twice.

Not thread-safe: the receiver calls `poll` and `commit` from one thread at a time, in turn.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.core.storage import KeyValueStore
from collector.receivers.filelog.config import Config, code_unit, codec_name
from collector.receivers.filelog.matching import Matcher
from collector.receivers.filelog.split import NoSplitter, build_splitter

CHUNK = 64 * 1024
FILE_BUDGET = 1024 * 1024  # bytes of entries from one file per poll, past the entry under way
POLL_BUDGET = 4 * 1024 * 1024  # bytes of entries from all files per poll
POLL_ENTRIES = 10_000
LOST_QUIET_POLLS = 3  # a lost file is closed once it has not grown for this many polls
HISTORY_POLLS = 3  # a file not seen is remembered this many polls (more when read in turns)
MAX_REMEMBERED = 10_000
CHECKPOINT_KEY = "knownFiles"
# Non-blocking: opening a named pipe that matched a glob must not hang the poll.
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


@dataclass(eq=False)
class Reader:
    """One file: its identity (fingerprint), how far it was read and acknowledged (offset),
    and an open handle while it is matched or drained."""

    fingerprint: bytes
    offset: int
    path: str
    records: int = 0
    skipping: bool = False  # inside an entry cut at max_log_size: drop to its end
    fd: int | None = None
    inode: tuple[int, int] | None = None
    attributes: dict = field(default_factory=dict)
    end_seen: int = -1  # the file's end at the last read, and since when (monotonic s)
    end_since: float = 0.0
    quiet_polls: int = 0
    age: int = 0  # polls since last seen, in history

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None

    def to_json(self) -> dict:
        return {
            "fingerprint": base64.b64encode(self.fingerprint).decode(),
            "offset": self.offset,
            "path": self.path,
            "records": self.records,
            "skipping": self.skipping,
        }

    @classmethod
    def from_json(cls, data: dict) -> Reader:
        return cls(
            fingerprint=base64.b64decode(data["fingerprint"]),
            offset=int(data["offset"]),
            path=str(data.get("path", "")),
            records=int(data.get("records", 0)),
            skipping=bool(data.get("skipping", False)),
        )


@dataclass
class Token:
    reader: Reader
    data: bytes
    record: int  # number in its file, from 1


@dataclass
class _Read:
    """A poll's reading of one file, committed when the pipeline took its entries."""

    reader: Reader
    offset: int
    records: int
    skipping: bool
    at_end: bool  # nothing left to read, nothing pending
    close: bool = False  # a lost file done draining


@dataclass
class Cycle:
    tokens: list[Token]
    reads: list[_Read]
    more: bool  # a budget stopped the reading: poll again at once


class FileSet:
    def __init__(
        self,
        config: Config,
        log: logging.Logger | logging.LoggerAdapter,
        store: KeyValueStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.log = log
        self.store = store
        self.clock = clock
        self.codec = codec_name(config.encoding)
        self.splitter = build_splitter(config.multiline, self.codec, code_unit(self.codec))
        self.matcher = Matcher(config.include, config.exclude)
        self.active: list[Reader] = []  # matched at the last poll, handles open
        self.lost: list[Reader] = []  # no longer matched, handles open, being drained
        self.history: list[Reader] = []  # closed, remembered for a few polls
        self.polls = 0
        self._turn = 0  # where the next poll starts when files are read in turns
        self._failing: dict[str, str] = {}  # path -> error already logged
        self._saved = b""

    # --- checkpoints ------------------------------------------------------------------------

    def restore(self) -> None:
        """Remember the files of the stored checkpoint (blocking)."""
        if self.store is None:
            return
        data = self.store.get(CHECKPOINT_KEY)
        if not data:
            return
        try:
            known = [Reader.from_json(item) for item in json.loads(data)["files"]]
        except (ValueError, KeyError, TypeError) as e:
            self.log.error(f"filelog: checkpoint unreadable, starting without it: {e}")
            return
        for r in known:
            # A smaller fingerprint_size since: the stored start still identifies the file.
            r.fingerprint = r.fingerprint[: self.config.fingerprint_size]
        self.history = [r for r in known if r.fingerprint][:MAX_REMEMBERED]
        self._saved = data

    def _save(self) -> None:
        if self.store is None:
            return
        known = [r.to_json() for r in (*self.active, *self.lost, *self.history)]
        data = json.dumps({"version": 1, "files": known[:MAX_REMEMBERED]}).encode()
        if data != self._saved:
            try:
                self.store.set(CHECKPOINT_KEY, data)
                self._saved = data
            except OSError as e:
                self.log.error(f"filelog: checkpoint not stored: {e}")

    # --- polling ----------------------------------------------------------------------------

    def poll(self) -> Cycle:
        """Match, identify and read the files (blocking). Offsets move at `commit`."""
        self.polls += 1
        first = self.polls == 1
        paths = self.matcher.paths()
        if first and not paths:
            self.log.warning(
                "filelog: no files match the include patterns yet",
                extra={"kv": {"include": self.config.include}},
            )
        window = paths
        limit = self.config.max_concurrent_files // 2
        if len(paths) > limit:
            start = self._turn % len(paths)
            window = (paths[start:] + paths[:start])[:limit]
            self._turn += limit
        previous = [*self.active, *self.lost]
        by_inode = {r.inode: r for r in previous if r.inode is not None}
        opened = self._open(window)
        # Files still where they were first, so a copy with the same start never takes over
        # the original's reader.
        opened.sort(key=lambda c: c[1] not in by_inode)
        claimed: set[int] = set()
        # Readers whose file was rewritten in place: their handle shows new data, so they are
        # not drained, but another file (the copy of copytruncate) may still be theirs.
        stale: dict[int, tuple[int, int]] = {}
        seen: set[bytes] = set()
        now_active: list[Reader] = []
        new: list[Reader] = []
        for path, inode, size, fd, fingerprint in opened:
            if not fingerprint or fingerprint in seen:
                os.close(fd)  # empty, or a duplicate (mid copytruncate): nothing of its own
                continue
            reader = by_inode.get(inode)
            if reader is not None and (id(reader) in claimed or id(reader) in stale):
                reader = None
            if reader is not None and (
                not fingerprint.startswith(reader.fingerprint) or size < reader.offset
            ):
                stale[id(reader)] = inode
                reader.close()
                reader = None
            if reader is None:
                reader = next(
                    (
                        r
                        for r in previous
                        if id(r) not in claimed
                        and r.inode != inode
                        and stale.get(id(r)) != inode
                        and fingerprint.startswith(r.fingerprint)
                    ),
                    None,
                )
            if reader is not None:
                claimed.add(id(reader))
                reader.close()
            else:
                reader = self._from_history(fingerprint)
            if reader is None:
                if self._copy_in_progress(fingerprint, previous):
                    os.close(fd)
                    continue
                at_end = first and self.config.start_at == "end"
                reader = Reader(fingerprint=b"", offset=size if at_end else 0, path=path)
                new.append(reader)
            else:
                now_active.append(reader)
            seen.add(fingerprint)
            reader.fd, reader.inode, reader.fingerprint = fd, inode, fingerprint
            reader.quiet_polls = 0
            if reader.path != path or not reader.attributes:
                reader.path = path
                reader.attributes = self._attributes(path)
        lost = []
        for r in previous:
            if id(r) in claimed:
                continue
            if id(r) in stale:
                self._forget(r)
            else:
                lost.append(r)
        limit_lost = max(1, self.config.max_concurrent_files // 2)
        for r in lost[:-limit_lost]:
            self._forget(r)
        self.lost = lost[-limit_lost:]
        self.active = now_active + new
        for r in self.history:
            r.age += 1
        keep = HISTORY_POLLS + (len(paths) + limit - 1) // limit
        self.history = [r for r in self.history if r.age <= keep][-MAX_REMEMBERED:]
        return self._read_all()

    def _open(self, paths: list[str]) -> list[tuple[str, tuple[int, int], int, int, bytes]]:
        """(path, inode, size, fd, fingerprint) of each file that opens; failures logged once
        per path and error."""
        oldest = time.time() - self.config.exclude_older_than
        opened = []
        for path in paths:
            try:
                fd = os.open(path, _OPEN_FLAGS)
            except OSError as e:
                if not os.path.isdir(path):
                    self._failed(path, e)
                continue
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or (
                    self.config.exclude_older_than and st.st_mtime < oldest
                ):
                    os.close(fd)
                    continue
                fingerprint = os.pread(fd, self.config.fingerprint_size, 0)
            except OSError as e:
                os.close(fd)
                self._failed(path, e)
                continue
            self._failing.pop(path, None)
            opened.append((path, (st.st_dev, st.st_ino), st.st_size, fd, fingerprint))
        return opened

    def _failed(self, path: str, error: OSError) -> None:
        text = error.strerror or str(error)
        if self._failing.get(path) != text:
            if len(self._failing) < MAX_REMEMBERED:
                self._failing[path] = text
            self.log.warning(f"filelog: cannot read {path}: {text} (logged once)")

    def _from_history(self, fingerprint: bytes) -> Reader | None:
        """The remembered file `fingerprint` continues, the longest match."""
        matches = [r for r in self.history if fingerprint.startswith(r.fingerprint)]
        if not matches:
            return None
        reader = max(matches, key=lambda r: len(r.fingerprint))
        self.history.remove(reader)
        reader.age = 0
        return reader

    def _copy_in_progress(self, fingerprint: bytes, previous: list[Reader]) -> bool:
        """A new file whose whole content so far is the start of a known file's is most likely
        a copy being written (copytruncate): wait until it is whole, or it would be read from
        its beginning."""
        if len(fingerprint) >= self.config.fingerprint_size:
            return False
        return any(
            len(r.fingerprint) > len(fingerprint) and r.fingerprint.startswith(fingerprint)
            for r in (*previous, *self.history)
        )

    def _attributes(self, path: str) -> dict:
        c, attributes = self.config, {}
        if c.include_file_name:
            attributes["log.file.name"] = os.path.basename(path)
        if c.include_file_path:
            attributes["log.file.path"] = path
        if c.include_file_name_resolved or c.include_file_path_resolved:
            resolved = os.path.realpath(path)
            if c.include_file_name_resolved:
                attributes["log.file.name_resolved"] = os.path.basename(resolved)
            if c.include_file_path_resolved:
                attributes["log.file.path_resolved"] = resolved
        return attributes

    def _forget(self, reader: Reader) -> None:
        reader.close()
        reader.age = 0
        self.history.append(reader)

    # --- reading ----------------------------------------------------------------------------

    def _read_all(self) -> Cycle:
        tokens: list[Token] = []
        reads: list[_Read] = []
        budget = POLL_BUDGET
        more = False
        # Lost (rotated) files first: their lines came before the new file's.
        for reader in (*self.lost, *self.active):
            if budget <= 0 or len(tokens) >= POLL_ENTRIES:
                more = True
                break
            lost = reader in self.lost
            read, used, complete = self._read(reader, tokens, min(budget, FILE_BUDGET), lost)
            budget -= used
            more = more or not complete
            reads.append(read)
        return Cycle(tokens, reads, more)

    def _read(
        self, reader: Reader, tokens: list[Token], budget: int, lost: bool
    ) -> tuple[_Read, int, bool]:
        """Read `reader` from its offset; (what to commit, bytes used, whether it got to the
        end)."""
        max_size = self.config.max_log_size
        splitter = self.splitter
        base, buf, pos = reader.offset, b"", 0
        records, skipping = reader.records, reader.skipping

        def emit(data: bytes) -> None:
            nonlocal records
            records += 1
            tokens.append(Token(reader, data, records))

        assert reader.fd is not None
        complete = True  # False: a budget stopped the reading before the file's end
        while complete:
            while True:
                if skipping:
                    if splitter.at_boundary(buf, pos):
                        skipping = False
                        continue
                    found = splitter.split(buf, pos)
                    if found is None:
                        pos = len(buf)  # the rest of an overlong entry: drop it
                        break
                    pos, skipping = found[0], False
                    continue
                found = splitter.split(buf, pos)
                if found is None:
                    if len(buf) - pos < max_size:
                        break
                    emit(buf[pos : pos + max_size])  # cut at max_log_size
                    pos += max_size
                    skipping = not isinstance(splitter, NoSplitter)
                    continue
                pos, data = found
                emit(data)
                if base + pos - reader.offset >= budget or len(tokens) >= POLL_ENTRIES:
                    complete = False
                    break
            if not complete:
                break
            if base + pos - reader.offset >= budget:  # dropping an overlong entry counts too
                complete = False
                break
            try:
                chunk = os.pread(reader.fd, CHUNK, base + len(buf))
            except OSError as e:
                self._failed(reader.path, e)
                break
            if not chunk:
                break
            buf, base, pos = buf[pos:] + chunk, base + pos, 0
        close = False
        if complete:
            end, now = base + len(buf), self.clock()
            if end != reader.end_seen:
                reader.end_seen, reader.end_since, reader.quiet_polls = end, now, 0
            elif lost:
                reader.quiet_polls += 1
            close = lost and reader.quiet_polls >= LOST_QUIET_POLLS
            if pos < len(buf):
                period = self.config.force_flush_period
                if skipping:
                    pos = len(buf)
                elif close or (period and now - reader.end_since >= period):
                    emit(splitter.flush(buf[pos:]))  # no end yet, but the file stopped growing
                    pos = len(buf)
        at_end = complete and pos == len(buf)
        read = _Read(reader, base + pos, records, skipping, at_end, close)
        return read, base + pos - reader.offset, complete

    # --- commit -----------------------------------------------------------------------------

    def commit(self, cycle: Cycle) -> None:
        """The pipeline took (or gave up on) the cycle's entries: move the offsets past them,
        close drained lost files, delete read files when asked, store the checkpoint
        (blocking)."""
        for read in cycle.reads:
            r = read.reader
            r.offset, r.records, r.skipping = read.offset, read.records, read.skipping
            if read.close and r in self.lost:
                self.lost.remove(r)
                self._forget(r)
            elif self.config.delete_after_read and read.at_end and r in self.active:
                self.active.remove(r)
                r.close()
                try:
                    os.unlink(r.path)
                except OSError as e:
                    self._failed(r.path, e)
        self._save()

    def close(self) -> None:
        """Close every handle; what they read is already committed."""
        for r in (*self.active, *self.lost):
            r.close()
