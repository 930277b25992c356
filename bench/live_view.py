"""What the coldtail_ui page costs the pipeline: the `coldtail_ui` exporter's recording
(collector.core.live_view) per request, beside the tail_latency processor's work on the same
requests, and the cost of building the page's summary.

    python -m bench.live_view [--requests 3000] [--rounds 5]

Requests are bench.throughput's: 100 spans each from a Lambda fleet, one entry span in ten,
tagged by the coldstart and tail_latency processors first as in the default pipeline. Figures
are medians of `rounds`, in microseconds.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bench.throughput import lambda_request
from collector.core.component import Kind
from collector.core.live_view import LiveView
from collector.core.pdata import Traces
from collector.core.signals import Signal
from collector.processors import coldstart, tail_latency
from tests.support.components import make_settings
from tests.support.sinks import NopConsumer


def _processor(module):
    settings = make_settings(Kind.PROCESSOR, module.factory.type, pipeline="traces")
    config = module.factory.config.model_validate({})
    return module.factory.create(settings, config, Signal.TRACES, NopConsumer())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = random.Random(11)
    raw = [lambda_request(rng) for _ in range(args.requests)]
    cold, tail = _processor(coldstart), _processor(tail_latency)
    record, tagging, summary = [], [], []
    for _ in range(args.rounds):
        batches = [Traces.FromString(r) for r in raw]
        started = time.perf_counter()
        for batch in batches:
            tail.process(cold.process(batch))
        tagging.append((time.perf_counter() - started) / len(batches) * 1e6)
        view = LiveView()
        started = time.perf_counter()
        for batch in batches:
            view.record(batch)
        record.append((time.perf_counter() - started) / len(batches) * 1e6)
        started = time.perf_counter()
        view.summary()
        view.traces(50)
        summary.append((time.perf_counter() - started) * 1e6)
    r, t = statistics.median(record), statistics.median(tagging)
    print("coldtail_ui: what the live page costs (medians, microseconds)")
    print(f"  record, per 100-span request      {r:8.1f}")
    print(f"  coldstart + tail_latency, same    {t:8.1f}   (record / tagging = {r / t:.2f})")
    print(f"  summary + traces for the page     {statistics.median(summary):8.1f}   (per refresh)")


if __name__ == "__main__":
    main()
