"""Persistent storage for components, as the OTel Collector's storage extensions offer it: an
exporter whose `sending_queue.storage` names a storage extension keeps its queue there, so that
what it acknowledged survives a crash and is sent after the restart; a receiver whose `storage`
names one keeps small state there (the `filelog` receiver's file offsets) in a key-value store,
the Collector's storage client (Get, Set, Delete, Batch)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, cast

from collector.core.component import ComponentID, Host


class QueueStore(Protocol):
    """The records of one queue, in the order they were added. Blocking file I/O: call it off
    the event loop."""

    def add(self, record: bytes) -> int:
        """Store `record` durably enough for the extension's settings; its key. OSError when
        it cannot (a full disk): the caller refuses the data instead."""
        ...

    def remove(self, key: int) -> None:
        """Forget a record that was sent or given up."""
        ...

    def records(self) -> list[tuple[int, bytes]]:
        """What was added and not removed, oldest first; damaged records are skipped,
        counted and logged by the store."""
        ...


class OpKind(enum.Enum):
    GET = "get"
    SET = "set"
    DELETE = "delete"


@dataclass
class Operation:
    """One step of `KeyValueStore.batch`: a GET fills in `value` (None when the key is absent);
    a SET stores `value`; a DELETE forgets the key."""

    kind: OpKind
    key: str
    value: bytes | None = None


class KeyValueStore(Protocol):
    """Small values by key, private to one owner. Each change is durable on return, as far as
    the extension's settings go (with `fsync`, across a power loss; without, across a crash of
    the process), and atomic: after a crash a key holds its old or its new value, never a mix.
    Blocking file I/O: call it off the event loop. Safe to call from several threads."""

    def get(self, key: str) -> bytes | None:
        """The value of `key`; None when it has none."""
        ...

    def set(self, key: str, value: bytes) -> None:
        """Store `value` under `key`. OSError when it cannot (a full disk): the old value stays."""
        ...

    def delete(self, key: str) -> None:
        """Forget `key`; nothing happens when it has no value."""
        ...

    def batch(self, *operations: Operation) -> None:
        """Apply `operations` in order, all of them or (OSError) none: a GET sees the SETs and
        DELETEs before it in the same batch."""
        ...

    def close(self) -> None:
        """Release the store; a later call to it is an error."""
        ...


class Storage(Protocol):
    """A storage extension."""

    def queue(self, owner: str) -> QueueStore:
        """The queue store of `owner` (a component id and signal); ValueError when it cannot be
        opened (no such directory, not writable)."""
        ...

    def key_value(self, owner: str) -> KeyValueStore:
        """The key-value store of `owner` (a component kind and id, like `receiver_filelog/app`);
        ValueError when it cannot be opened."""
        ...


def queue_store(host: Host, storage: str, owner: str) -> QueueStore:
    """The queue of `owner` in the storage extension named `storage`; ValueError when that is
    not a running storage extension."""
    extension = host.extension(ComponentID.parse(storage))
    if extension is None or not hasattr(extension, "queue"):
        raise ValueError(
            f"sending_queue::storage: {storage!r} is not a storage extension listed in "
            "service::extensions"
        )
    return cast(Storage, extension).queue(owner)


def key_value_store(host: Host, storage: str, owner: str) -> KeyValueStore:
    """The key-value store of `owner` in the storage extension named `storage`; ValueError when
    that is not a running storage extension or the store cannot be opened."""
    extension = host.extension(ComponentID.parse(storage))
    if extension is None or not hasattr(extension, "key_value"):
        raise ValueError(
            f"storage: {storage!r} is not a storage extension listed in service::extensions"
        )
    return cast(Storage, extension).key_value(owner)
