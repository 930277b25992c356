"""Quantile sketch benchmark: the `ddsketch` package's DDSketch against coldtail's own
log-bucket sketch (collector.core.sketch), both at 1% relative accuracy.

    python -m bench.sketch [--values 200000] [--keys 50]

Prints adds per second, three-quantile reads (p50, p95, p99) per second on one sketch and over a
5-sub-window sliding window, worst relative error against exact percentiles, and memory per key
(a window of 5 sub-windows of 1000 span durations each). Needs `pip install ddsketch` for the
comparison; without it only coldtail's sketch is measured.
"""

from __future__ import annotations

import argparse
import math
import random
import time
import tracemalloc
from collections.abc import Callable

from collector.core.sketch import Sketch, WindowedSketch

ACCURACY = 0.01
QUANTILES = (0.5, 0.95, 0.99)
SUB_WINDOWS = 5
PER_SUB_WINDOW = 1000


def durations(n: int, seed: int = 7) -> list[int]:
    """Span durations in ns: log-normal around 120 ms with 2% cold starts 10-30x slower."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        value = rng.lognormvariate(math.log(120e6), 0.7)
        if rng.random() < 0.02:
            value *= rng.uniform(10, 30)
        out.append(int(value))
    return out


def rate(operation: Callable[[], object], repeat: int) -> float:
    """Calls of `operation` per second, best of 3 rounds of `repeat` calls."""
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            operation()
        best = min(best, time.perf_counter() - start)
    return repeat / best


def memory_per_key(build: Callable[[], object], keys: int) -> float:
    """Bytes allocated per object built by `build`, averaged over `keys` objects."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [build() for _ in range(keys)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return (after - before) / keys


class Candidate:
    """One sketch implementation behind the operations the processor needs."""

    def __init__(self, name: str, new: Callable[[], object]) -> None:
        self.name = name
        self.new = new

    def add_all(self, values: list[int]):
        sketch = self.new()
        for v in values:
            self.add(sketch, v)
        return sketch

    def add(self, sketch, value: int) -> None:
        sketch.add(value)


class Own(Candidate):
    def __init__(self) -> None:
        super().__init__("coldtail Sketch", lambda: Sketch(ACCURACY))

    def quantiles(self, sketch) -> list[float]:
        return sketch.quantiles(QUANTILES)

    def window(self, values: list[int]):
        window = WindowedSketch(SUB_WINDOWS)
        for i, v in enumerate(values):
            window.add(v, i // PER_SUB_WINDOW)
        return window

    def window_quantiles(self, window) -> list[float]:
        return window.quantiles(QUANTILES)


class Package(Candidate):
    def __init__(self, ddsketch_class) -> None:
        super().__init__("ddsketch.DDSketch", lambda: ddsketch_class(ACCURACY))

    def quantiles(self, sketch) -> list[float]:
        return [sketch.get_quantile_value(q) for q in QUANTILES]

    def window(self, values: list[int]) -> list:
        return [
            self.add_all(values[i : i + PER_SUB_WINDOW])
            for i in range(0, len(values), PER_SUB_WINDOW)
        ]

    def window_quantiles(self, window: list) -> list[float]:
        merged = self.new()
        for sketch in window:
            merged.merge(sketch)
        return self.quantiles(merged)


def worst_error(estimates: list[float], values: list[int]) -> float:
    ordered = sorted(values)
    exact = [ordered[math.floor(q * (len(ordered) - 1))] for q in QUANTILES]
    return max(abs(e - x) / x for e, x in zip(estimates, exact, strict=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sketch", description=__doc__)
    parser.add_argument("--values", type=int, default=200_000, help="values added per round")
    parser.add_argument("--keys", type=int, default=50, help="keys built to measure memory")
    args = parser.parse_args(argv)

    candidates: list[Candidate] = [Own()]
    try:
        from ddsketch import DDSketch
    except ImportError:
        print("ddsketch is not installed (pip install ddsketch): measuring coldtail's only\n")
    else:
        candidates.append(Package(DDSketch))

    values = durations(args.values)
    window_values = values[: SUB_WINDOWS * PER_SUB_WINDOW]
    print(
        f"{'sketch':<20}{'adds/s':>12}{'3 quantiles/s':>16}{'window 3q/s':>14}"
        f"{'worst error':>14}{'bytes/key':>12}"
    )
    for c in candidates:
        sketch = c.new()
        start = time.perf_counter()
        for v in values:
            c.add(sketch, v)
        adds = len(values) / (time.perf_counter() - start)
        reads = rate(lambda c=c, sketch=sketch: c.quantiles(sketch), 2000)
        window = c.window(window_values)
        window_reads = rate(lambda c=c, window=window: c.window_quantiles(window), 500)
        error = max(
            worst_error(c.quantiles(sketch), values),
            worst_error(c.window_quantiles(window), window_values),
        )
        per_key = memory_per_key(lambda c=c: c.window(window_values), args.keys)
        print(
            f"{c.name:<20}{adds:>12,.0f}{reads:>16,.0f}{window_reads:>14,.0f}"
            f"{error:>13.3%}{per_key:>12,.0f}"
        )


if __name__ == "__main__":
    main()
