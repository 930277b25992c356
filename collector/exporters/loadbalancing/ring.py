"""Rendezvous (highest random weight) hashing: which backend owns a routing key.

A key hashes to one of 16384 slots, and every member scores every slot: the highest score
owns the slot and its keys. A member joining takes exactly the slots it now outscores everyone
on, and a member leaving hands only its own slots to their runners-up: no other key moves. The
scores depend on the slot and the member's endpoint alone, so every collector with the same
members routes a key to the same backend. A slot's owner is worked out once, on first use, so
a lookup costs one hash of the key however many members there are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

_MASK = (1 << 64) - 1
# Enough slots that each member's share of the keys is within about 1% of even.
_SLOTS = 1 << 14


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def _score(slot: int, seed: int) -> int:
    """The splitmix64 finalizer of slot XOR member seed: a slot's scores on different members
    behave as independent random numbers, at a fraction of a keyed hash's cost."""
    x = ((slot ^ seed) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 31)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 29)


class Ring:
    """A set of members (endpoints), fixed once made, and the owner of each key among them."""

    def __init__(self, members: Iterable[str] = ()) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        self._seeds = [(member, _hash64(member.encode())) for member in self.members]
        self._slots: list[str | None] = [None] * _SLOTS if self.members else []

    def __len__(self) -> int:
        return len(self.members)

    def owner(self, key: bytes) -> str:
        """The member that owns `key`; LookupError when there are no members."""
        if not self._seeds:
            raise LookupError("no backends")
        slot = _hash64(key) & (_SLOTS - 1)
        owner = self._slots[slot]
        if owner is None:
            owner = self._slots[slot] = self._highest(slot)
        return owner

    def _highest(self, slot: int) -> str:
        best, owner = -1, ""
        for member, seed in self._seeds:
            score = _score(slot, seed)
            if score > best:
                best, owner = score, member
        return owner

    def lookup(self) -> Callable[[bytes], str]:
        """`owner`, remembering its answers: for one batch, where keys repeat (the spans of a
        trace)."""
        seen: dict[bytes, str] = {}
        owner = self.owner

        def cached(key: bytes) -> str:
            member = seen.get(key)
            if member is None:
                member = seen[key] = owner(key)
            return member

        return cached
