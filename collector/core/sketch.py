"""Streaming quantiles with relative accuracy: DDSketch's logarithmic buckets.

A value v > 0 falls in bucket i = ceil(log_gamma(v)), gamma = (1 + a) / (1 - a). The bucket's
representative 2 * gamma**i / (gamma + 1) is within relative error `a` of every value in the
bucket, so a quantile read from the counts is within `a` of the exact nearest-rank quantile
sorted(values)[floor(q * (n - 1))]. Values <= 0 are counted apart and read back as 0.

Counts live in a dense array over the occupied bucket range (4 bytes a bucket; a latency stream
spans a few hundred buckets at a = 1%), so a quantile is a cumulative sum and a bisection, both
in C. Not thread-safe.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from operator import add

DEFAULT_RELATIVE_ACCURACY = 0.01


def _zeros(n: int) -> array:
    return array("I", [0]) * n


class Sketch:
    """Counts of values per logarithmic bucket; `relative_accuracy` in (0, 1)."""

    __slots__ = ("_gamma", "_multiplier", "count", "counts", "offset", "zeros")

    def __init__(self, relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY) -> None:
        if not 0 < relative_accuracy < 1:
            raise ValueError(f"relative_accuracy must be in (0, 1), got {relative_accuracy}")
        self._gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._multiplier = 1 / math.log(self._gamma)
        self.counts = _zeros(0)
        self.offset = 0  # bucket index of counts[0]
        self.count = 0  # values added, zeros included
        self.zeros = 0  # values <= 0

    def add(self, value: float) -> None:
        self.count += 1
        if value <= 0:
            self.zeros += 1
            return
        i = math.ceil(math.log(value) * self._multiplier) - self.offset
        if not 0 <= i < len(self.counts):
            i = self._cover(i + self.offset, i + self.offset)
        self.counts[i] += 1

    def _cover(self, low: int, high: int) -> int:
        """Grow `counts` to hold bucket indexes low..high; returns the position of `low`."""
        counts = self.counts
        if not counts:
            self.counts = _zeros(high - low + 1)
            self.offset = low
            return 0
        if low < self.offset:
            counts[0:0] = _zeros(self.offset - low)
            self.offset = low
        end = self.offset + len(counts) - 1
        if high > end:
            counts.extend(_zeros(high - end))
        return low - self.offset

    def merge(self, other: Sketch) -> None:
        """Add the counts of `other`, which must have the same relative accuracy."""
        self.count += other.count
        self.zeros += other.zeros
        if not other.counts:
            return
        start = self._cover(other.offset, other.offset + len(other.counts) - 1)
        end = start + len(other.counts)
        self.counts[start:end] = array("I", map(add, self.counts[start:end], other.counts))

    def clear(self) -> None:
        self.counts = _zeros(0)
        self.offset = self.count = self.zeros = 0

    def value(self, index: int) -> float:
        """The representative value of bucket `index`."""
        return 2 * self._gamma**index / (self._gamma + 1)

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Estimates of the quantiles `qs` (each in [0, 1]); NaN for every q when empty."""
        if not self.count:
            return [math.nan] * len(qs)
        cumulative = list(accumulate(self.counts))
        out = []
        for q in qs:
            rank = q * (self.count - 1) - self.zeros
            if rank < 0:
                out.append(0.0)
            else:
                out.append(self.value(bisect_right(cumulative, rank) + self.offset))
        return out


class WindowedSketch:
    """A sketch over a sliding window of `sub_windows` epochs: the current one and those before
    it. Epochs are integers the caller derives from its clock (time // sub-window length); data
    of an epoch is dropped as a whole once it falls out of the window. `total` always holds the
    merged counts of the live epochs."""

    __slots__ = ("_slots", "epoch", "total")

    def __init__(
        self,
        sub_windows: int,
        epoch: int = 0,
        relative_accuracy: float = DEFAULT_RELATIVE_ACCURACY,
    ) -> None:
        self._slots = [Sketch(relative_accuracy) for _ in range(sub_windows)]
        self.total = Sketch(relative_accuracy)
        self.epoch = epoch

    @property
    def count(self) -> int:
        """Values in the window as of the last add or advance."""
        return self.total.count

    def add(self, value: float, epoch: int) -> None:
        """Add `value` at `epoch`; an epoch older than the current one counts as the current."""
        if epoch > self.epoch:
            self.advance(epoch)
        self._slots[self.epoch % len(self._slots)].add(value)
        self.total.add(value)

    def advance(self, epoch: int) -> None:
        """Move the window to end at `epoch`, forgetting the epochs that fall out of it."""
        if epoch <= self.epoch:
            return
        n = len(self._slots)
        # Slots of the epochs entering the window hold epochs now too old to keep.
        for e in range(max(self.epoch + 1, epoch - n + 1), epoch + 1):
            self._slots[e % n].clear()
        self.epoch = epoch
        self.total.clear()
        for slot in self._slots:
            self.total.merge(slot)

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        return self.total.quantiles(qs)
