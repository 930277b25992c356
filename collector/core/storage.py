"""Persistent storage for components, as the OTel Collector's storage extensions offer it: an
exporter whose `sending_queue.storage` names a storage extension keeps its queue there, so that
what it acknowledged survives a crash and is sent after the restart."""

from __future__ import annotations

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


class Storage(Protocol):
    """A storage extension."""

    def queue(self, owner: str) -> QueueStore:
        """The queue store of `owner` (a component id and signal); ValueError when it cannot be
        opened (no such directory, not writable)."""
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
