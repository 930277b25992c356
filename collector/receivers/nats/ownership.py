"""Which gateway of a group consumes which partition: rendezvous hashing over the members alive,
enforced with leases in a JetStream key-value bucket.

The bucket's entries expire `lease_ttl` after their last write (the bucket's max age, counted
by the server, so no two clocks are compared). Every member writes `members.<name>` each
round (a third of the TTL) to say it is alive, and for each partition the member ranked first
among the living (`owner`) holds `leases.<partition>`: it creates the key (only when absent)
and renews it with a compare-and-set on its revision. A member that has not renewed a lease
for two thirds of the TTL stops consuming that partition before the lease can expire, so two
members never consume one partition at once. When a member dies, its keys expire and the
survivors, ranking the partition among themselves, create the lease and consume the
partition's durable consumer, which redelivers whatever the dead member had not acknowledged.
When a member comes back, whoever holds its partitions sees it alive, stops consuming them and
deletes the leases, so it gets them back.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import nats.js.errors

MEMBER_PREFIX = "members."
LEASE_PREFIX = "leases."
# JetStream's error code for a compare-and-set on a revision that is no longer the last.
_WRONG_LAST_SEQUENCE = 10071


def rank(member: str, partition: int) -> int:
    """`member`'s weight for `partition` (highest wins): 8 bytes of a SHA-256, the same on
    every member."""
    digest = hashlib.sha256(f"{member}\0{partition}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def owner(members: Iterable[str], partition: int) -> str:
    """The member that should consume `partition` when `members` are alive. Removing a member
    moves only its own partitions, spread over the others."""
    return max(members, key=lambda m: (rank(m, partition), m))


@dataclass
class Lease:
    revision: int
    renewed: float
    """When the write that last renewed it was sent (the server's TTL runs from later)."""


Change = Callable[[int], Awaitable[None]]


class Ownership:
    """Holds this member's leases and says when to start and stop consuming a partition:
    `gain(p)` once its lease is ours, `lose(p)` before giving it up (awaited), `drop(p)` when
    it may already be someone else's (fenced or taken: stop at once, not awaited)."""

    def __init__(
        self,
        kv,
        member: str,
        members: list[str],
        partitions: int,
        ttl: float,
        *,
        gain: Change,
        lose: Change,
        drop: Callable[[int], None],
        log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self.member = member
        self._others = [m for m in members if m != member]
        self._partitions = partitions
        self._ttl = ttl
        self.interval = ttl / 3
        self._gain, self._lose, self._drop = gain, lose, drop
        self._log = log
        self._clock = clock
        self.held: dict[int, Lease] = {}
        self.alive: set[str] = {member}
        self._reported: frozenset[int] = frozenset()

    async def run(self) -> None:
        """Rounds every third of the TTL until cancelled. The first only announces this member,
        so that members starting together see each other before claiming anything."""
        claim = False
        while True:
            try:
                await self.round(claim=claim)
            except Exception as e:  # the next round tries again; fencing still applies
                self._log.warning(f"partition leases: {e!r}")
                self._fence()
            claim = True
            await asyncio.sleep(self.interval)

    async def round(self, claim: bool = True) -> None:
        started = self._clock()
        try:
            self.alive = await self._members_alive()
        except Exception as e:
            self._log.warning(f"partition leases: cannot reach the bucket: {e!r}")
            self._fence()
            return
        wanted = {p for p in range(self._partitions) if owner(self.alive, p) == self.member}
        # Renewed first, those given up included: they stay ours while their readers stop.
        await asyncio.gather(*(self._renew(p, started) for p in list(self.held)))
        for p in sorted(set(self.held) - wanted):
            await self._release(p)
        self._fence()
        if claim:
            missing = sorted(wanted - set(self.held))
            await asyncio.gather(*(self._claim(p, started) for p in missing))
        self._report()

    async def stop(self) -> None:
        """Give up every lease and leave the group, so that the others take over at once."""
        for p in sorted(self.held):
            await self._release(p)
        try:
            await self._kv.delete(MEMBER_PREFIX + self.member)
        except Exception as e:  # it expires anyway
            self._log.warning(f"partition leases: cannot leave the group: {e!r}")
        self._report()

    async def _members_alive(self) -> set[str]:
        await self._kv.put(MEMBER_PREFIX + self.member, b"")
        present = await asyncio.gather(*(self._present(m) for m in self._others))
        return {self.member, *(m for m, here in zip(self._others, present, strict=True) if here)}

    async def _present(self, member: str) -> bool:
        try:
            await self._kv.get(MEMBER_PREFIX + member)
        except nats.js.errors.KeyNotFoundError:
            return False
        return True

    async def _claim(self, p: int, started: float) -> None:
        try:
            revision = await self._kv.create(LEASE_PREFIX + str(p), self.member.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # still held by another member, until it lets go or its lease expires
        except Exception as e:
            self._log.warning(f"partition leases: cannot claim partition {p}: {e!r}")
            return
        self.held[p] = Lease(revision, started)
        await self._gain(p)

    async def _renew(self, p: int, started: float) -> None:
        lease = self.held.get(p)
        if lease is None:
            return
        try:
            lease.revision = await self._kv.update(
                LEASE_PREFIX + str(p), self.member.encode(), last=lease.revision
            )
            lease.renewed = started
        except nats.js.errors.KeyWrongLastSequenceError:
            # It expired and another member holds it now: stop without waiting.
            self._log.warning(f"partition {p}: lease lost to another member")
            del self.held[p]
            self._drop(p)
        except Exception as e:  # retried next round; _fence stops in time
            self._log.warning(f"partition {p}: cannot renew its lease: {e!r}")

    def _fence(self) -> None:
        """Stop consuming partitions whose lease may expire before the next round."""
        limit = self._ttl - self.interval
        now = self._clock()
        for p, lease in list(self.held.items()):
            if now - lease.renewed > limit:
                self._log.warning(
                    f"partition {p}: lease not renewed for {now - lease.renewed:.1f}s; "
                    "stopped consuming it"
                )
                del self.held[p]
                self._drop(p)

    async def _release(self, p: int) -> None:
        lease = self.held.pop(p)
        await self._lose(p)
        try:
            await self._kv.delete(LEASE_PREFIX + str(p), last=lease.revision)
        except nats.js.errors.APIError as e:
            if e.err_code != _WRONG_LAST_SEQUENCE:  # else it expired meanwhile: nothing to do
                self._log.warning(f"partition {p}: cannot release its lease: {e.description}")
        except Exception as e:  # it expires anyway
            self._log.warning(f"partition {p}: cannot release its lease: {e!r}")

    def _report(self) -> None:
        held = frozenset(self.held)
        if held == self._reported:
            return
        self._reported = held
        self._log.info(
            f"member {self.member} consumes {len(held)} of {self._partitions} partitions",
            extra={"kv": {"partitions": _ranges(sorted(held)), "alive": sorted(self.alive)}},
        )


def _ranges(numbers: list[int]) -> str:
    """`[0, 1, 2, 5]` as "0-2,5"."""
    parts: list[str] = []
    start = prev = None
    for n in [*numbers, None]:
        if n is not None and prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = n
    return ",".join(parts)
