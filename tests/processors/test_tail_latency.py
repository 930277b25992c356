import math
import random
from bisect import insort

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.component import Kind
from collector.core.pdata import get_attr, iter_spans
from collector.core.signals import Signal
from collector.core.sketch import Sketch, WindowedSketch
from collector.core.telemetry import Telemetry
from collector.processors.tail_latency import Config, factory
from tests.processors import make_processor
from tests.support.builders import make_traces
from tests.support.components import make_settings
from tests.support.sinks import SinkConsumer

# The sketch guarantees relative error 1%; the margin absorbs float rounding only.
ACCURACY = 0.01 + 1e-9
CHECKOUT = {
    "processor": "tail_latency",
    "pipeline": "traces",
    "service_name": "checkout",
    "span_name": "GET /items/{id}",
    "span_kind": "server",
}


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spans(durations_ms, **kwargs):
    """One batch with a span per duration (ms), in order; kwargs go to make_traces."""
    batch = make_traces(len(durations_ms), **kwargs)
    for span, ms in zip(batch.resource_spans[0].scope_spans[0].spans, durations_ms, strict=True):
        span.end_time_unix_nano = span.start_time_unix_nano + round(ms * 1e6)
    return batch


def tags(batch) -> list[str | None]:
    return [get_attr(span.attributes, "coldtail.latency.tail") for _, _, span in iter_spans(batch)]


def percentile_ms(processor, percentile: str, **labels) -> float | None:
    return processor.settings.telemetry.registry.get_sample_value(
        "coldtail_tail_latency_percentile_ms", {**CHECKOUT, **labels, "percentile": percentile}
    )


def exact(values, q: float):
    """Nearest-rank quantile, the value the sketch's guarantee refers to."""
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def close(estimate: float, truth: float) -> bool:
    return abs(estimate - truth) <= ACCURACY * truth


# --- config ---------------------------------------------------------------------------------


def test_config_defaults_and_normalized_percentiles():
    config = Config()
    assert (config.window, config.sub_windows, config.min_samples) == (300.0, 5, 50)
    assert config.percentiles == [95, 99]
    assert config.dimensions == ["service.name", "span.name", "span.kind"]
    assert (config.spans, config.max_keys) == ("entry", 10000)
    assert Config(percentiles=[99.9, 95, 99, 95]).percentiles == [95, 99, 99.9]


# --- accuracy -------------------------------------------------------------------------------


def latencies_ms(n: int, rng: random.Random, cold_starts: float = 0.0) -> list[float]:
    """Log-normal around 120 ms; a `cold_starts` fraction is 10-30 times slower."""
    out = []
    for _ in range(n):
        value = rng.lognormvariate(math.log(120), 0.7)
        if rng.random() < cold_starts:
            value *= rng.uniform(10, 30)
        out.append(value)
    return out


def test_sketch_quantiles_within_relative_accuracy():
    values = [*latencies_ms(20000, random.Random(1), cold_starts=0.02), 0.0, 0.0]
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    qs = [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    for q, estimate in zip(qs, sketch.quantiles(qs), strict=True):
        assert close(estimate, exact(values, q)), q
    assert math.isnan(Sketch().quantiles([0.5])[0])


def test_windowed_sketch_merges_live_epochs_only():
    window = WindowedSketch(sub_windows=3)
    window.add(10, epoch=0)
    window.add(20, epoch=1)
    window.add(30, epoch=2)
    assert window.count == 3
    window.advance(3)  # epoch 0 falls out
    assert window.count == 2
    assert close(window.quantiles([0.0])[0], 20)
    window.add(40, epoch=1)  # late: counts in the current epoch
    window.advance(5)  # epochs 1 and 2 fall out
    assert window.count == 1
    assert close(window.quantiles([0.5])[0], 40)
    window.advance(100)
    assert window.count == 0


def test_percentile_metrics_match_exact_percentiles_of_the_window():
    """p50/p95/p99 of a stream with cold start outliers, as the window slides over 12 minutes,
    are within 1% of the exact percentiles of the spans in the live sub-windows."""
    clock = FakeClock()
    processor, _ = make_processor(factory, {"window": "10m", "sub_windows": 5}, clock=clock)
    rng = random.Random(2)
    seen: list[tuple[int, float]] = []  # (sub-window, latency ms)
    for minute in range(12):
        clock.now = minute * 60.0
        sub_window = minute // 2
        for _ in range(4):
            batch = latencies_ms(500, rng, cold_starts=0.02)
            processor.process(spans(batch))
            seen.extend((sub_window, ms) for ms in batch)
        live = [ms for w, ms in seen if w > sub_window - 5]
        for percentile, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            estimate = percentile_ms(processor, percentile)
            assert close(estimate, exact(live, q)), (minute, percentile, estimate)
    assert len(live) < len(seen)  # the window did slide


def test_p99_tags_have_high_precision_and_recall():
    """Truth for a span: its latency is at or above the exact p99 of every latency in the
    window when it is judged, itself included (the window holds the whole stream here). That
    is the population the processor estimates from, so the test measures the sketch's error
    and the threshold refresh lag, not the sampling noise of a p99 estimated from a sample."""
    processor, _ = make_processor(factory, {"window": "1h"}, clock=FakeClock())
    rng = random.Random(3)
    window: list[int] = []
    true_positives = false_positives = false_negatives = 0
    for round_ in range(22):
        batch = spans(latencies_ms(1000, rng))
        processor.process(batch)
        for _, _, span in iter_spans(batch):
            insort(window, span.end_time_unix_nano - span.start_time_unix_nano)
            if round_ < 2:  # warm-up
                continue
            duration = span.end_time_unix_nano - span.start_time_unix_nano
            truth = duration >= window[math.floor(0.99 * (len(window) - 1))]
            tagged = get_attr(span.attributes, "coldtail.latency.tail") == "p99"
            true_positives += truth and tagged
            false_positives += tagged and not truth
            false_negatives += truth and not tagged
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / (true_positives + false_negatives)
    assert true_positives > 150
    assert precision >= 0.95, (precision, recall)
    assert recall >= 0.95, (precision, recall)


# --- tagging --------------------------------------------------------------------------------


def test_tags_highest_percentile_crossed_with_its_threshold():
    processor, _ = make_processor(factory, {"min_samples": 101}, clock=FakeClock())
    warm_up = list(range(1, 101))
    random.Random(4).shuffle(warm_up)
    assert tags(processor.process(spans(warm_up))) == [None] * 100

    batch = processor.process(spans([200, 97, 50]))
    assert tags(batch) == ["p99", "p95", None]
    first, second, _ = (span for _, _, span in iter_spans(batch))
    # Windows at judgment: 1..100 + 200 (p99 = 100), then + 97 (p95 = 96).
    assert close(get_attr(first.attributes, "coldtail.latency.threshold_ms"), 100)
    assert close(get_attr(second.attributes, "coldtail.latency.threshold_ms"), 96)
    assert isinstance(get_attr(first.attributes, "coldtail.latency.threshold_ms"), float)


def test_steady_latency_has_no_tail_but_a_slower_span_does():
    processor, _ = make_processor(factory, {"min_samples": 50}, clock=FakeClock())
    # p95 and p99 share the median's bucket: equal latencies are not a tail.
    assert tags(processor.process(spans([20.0] * 200))) == [None] * 200
    assert tags(processor.process(spans([20.1, 21.0, 200.0]))) == [None, "p99", "p99"]


def test_no_tags_before_min_samples():
    processor, _ = make_processor(factory, {"min_samples": 50}, clock=FakeClock())
    # Rising latencies: every span is the slowest yet, so it is tagged once judged at all.
    assert tags(processor.process(spans(range(1, 50)))) == [None] * 49
    assert percentile_ms(processor, "p50") is None
    assert tags(processor.process(spans([50, 51]))) == ["p99", "p99"]
    assert close(percentile_ms(processor, "p50"), 26)


def test_fractional_percentile_label():
    processor, _ = make_processor(
        factory, {"percentiles": [99.9], "min_samples": 2}, clock=FakeClock()
    )
    assert tags(processor.process(spans([5, 60]))) == [None, "p99.9"]
    assert close(percentile_ms(processor, "p99.9"), 5)


def test_window_rotation_forgets_old_spans():
    clock = FakeClock()
    processor, _ = make_processor(factory, {"window": "5m", "sub_windows": 5}, clock=clock)
    processor.process(spans([10 + i / 100 for i in range(100)]))
    clock.now = 240.0  # last sub-window still holding the first spans
    processor.process(spans([100 + i / 100 for i in range(100)]))
    assert percentile_ms(processor, "p50") < 11

    clock.now = 300.0  # the first sub-window falls out
    assert close(percentile_ms(processor, "p50"), 100.5)
    assert tags(processor.process(spans([99]))) == [None]

    clock.now = 600.0  # everything falls out: counting starts over
    assert percentile_ms(processor, "p50") is None
    assert tags(processor.process(spans(range(1, 50)))) == [None] * 49
    assert tags(processor.process(spans([50]))) == ["p99"]


# --- keys -----------------------------------------------------------------------------------


def test_keys_separate_by_dimension():
    processor, _ = make_processor(factory, {"min_samples": 100}, clock=FakeClock())
    fast, slow = {"service.name": "fast"}, {"service.name": "slow"}
    processor.process(spans(range(1, 101), resource=fast))
    processor.process(spans(range(1001, 1101), resource=slow))
    assert tags(processor.process(spans([500], resource=fast))) == ["p99"]
    assert tags(processor.process(spans([500], resource=slow))) == [None]
    assert close(percentile_ms(processor, "p50", service_name="fast"), 51)
    assert close(percentile_ms(processor, "p50", service_name="slow"), 1050)


def test_dimension_looks_up_span_then_resource_attributes():
    processor, _ = make_processor(
        factory, {"dimensions": ["faas.trigger"], "min_samples": 1}, clock=FakeClock()
    )
    resource = {"service.name": "checkout", "faas.trigger": "http"}
    processor.process(spans([10], resource=resource))
    processor.process(spans([20], resource=resource, attributes={"faas.trigger": "pubsub"}))
    processor.process(spans([30]))
    registry = processor.settings.telemetry.registry
    base = {"processor": "tail_latency", "pipeline": "traces", "percentile": "p50"}
    for trigger, ms in (("http", 10), ("pubsub", 20), ("", 30)):
        value = registry.get_sample_value(
            "coldtail_tail_latency_percentile_ms", {**base, "faas_trigger": trigger}
        )
        assert close(value, ms), trigger


def test_http_route_replaces_span_name():
    processor, _ = make_processor(factory, {"min_samples": 1}, clock=FakeClock())
    processor.process(spans([10], name="GET", attributes={"http.route": "/users/{id}"}))
    processor.process(spans([20], name="GET", attributes={"http.route": "/orders"}))
    processor.process(spans([30], name="GET"))
    assert close(percentile_ms(processor, "p50", span_name="/users/{id}"), 10)
    assert close(percentile_ms(processor, "p50", span_name="/orders"), 20)
    assert close(percentile_ms(processor, "p50", span_name="GET"), 30)


@pytest.mark.parametrize(("spans_setting", "measured"), [("entry", False), ("all", True)])
def test_entry_spans_only_by_default(spans_setting, measured):
    processor, _ = make_processor(
        factory, {"spans": spans_setting, "min_samples": 2}, clock=FakeClock()
    )
    child = spans([10, 20], kind=Span.SPAN_KIND_CLIENT, parent_span_id=b"\x01" * 8)
    root_client = spans([30], kind=Span.SPAN_KIND_CLIENT)  # no parent: an entry span
    assert tags(processor.process(child)) == ([None, "p99"] if measured else [None, None])
    assert tags(processor.process(root_client)) == (["p99"] if measured else [None])
    p50 = percentile_ms(processor, "p50", span_kind="client")
    assert close(p50, 20) if measured else p50 is None


def test_cold_start_dimension():
    processor, _ = make_processor(
        factory,
        {"dimensions": ["service.name", "coldtail.cold_start"], "min_samples": 100},
        clock=FakeClock(),
    )
    processor.process(spans(range(1001, 1101), attributes={"coldtail.cold_start": True}))
    processor.process(spans(range(1, 101), attributes={"coldtail.cold_start": False}))
    # A cold start slower than every warm span is ordinary among cold starts.
    cold = spans([1050], attributes={"coldtail.cold_start": True})
    assert tags(processor.process(cold)) == [None]
    registry = processor.settings.telemetry.registry
    base = {"processor": "tail_latency", "pipeline": "traces", "service_name": "checkout"}
    for cold_start, ms in (("true", 1050), ("false", 50)):
        labels = {**base, "coldtail_cold_start": cold_start, "percentile": "p50"}
        value = registry.get_sample_value("coldtail_tail_latency_percentile_ms", labels)
        assert close(value, ms), cold_start


def test_tail_spans_counted_by_cold_start():
    processor, _ = make_processor(factory, {"min_samples": 100}, clock=FakeClock())
    processor.process(spans(range(1, 101)))
    processor.process(spans([500], attributes={"coldtail.cold_start": True}))
    processor.process(spans([600], attributes={"faas.coldstart": True}))
    processor.process(spans([700], attributes={"coldtail.cold_start": False}))
    processor.process(spans([800]))
    processor.process(spans([99]))  # p95 only

    registry = processor.settings.telemetry.registry

    def tail_spans(tail: str, cold_start: str) -> float | None:
        return registry.get_sample_value(
            "coldtail_tail_latency_tail_spans_total",
            {**CHECKOUT, "tail": tail, "cold_start": cold_start},
        )

    assert (tail_spans("p99", "true"), tail_spans("p99", "false")) == (2, 1)
    assert (tail_spans("p99", "unknown"), tail_spans("p95", "unknown")) == (2, 1)
    assert tail_spans("p95", "true") == 0


def test_max_keys_evicts_least_recently_seen_key():
    processor, _ = make_processor(
        factory, {"dimensions": ["service.name"], "max_keys": 2, "min_samples": 1}
    )
    for service in ("a", "b", "a", "c"):
        processor.process(spans([10], resource={"service.name": service}))

    registry = processor.settings.telemetry.registry
    base = {"processor": "tail_latency", "pipeline": "traces"}

    def p50(service: str) -> float | None:
        labels = {**base, "service_name": service, "percentile": "p50"}
        return registry.get_sample_value("coldtail_tail_latency_percentile_ms", labels)

    assert p50("a") is not None and p50("c") is not None
    assert p50("b") is None
    assert registry.get_sample_value("coldtail_tail_latency_evicted_keys_total", base) == 1
    assert registry.get_sample_value("coldtail_tail_latency_keys", base) == 2


# --- lifecycle and own metrics ----------------------------------------------------------------


async def test_pipelines_share_a_registry_and_shutdown_removes_metrics():
    telemetry = Telemetry()
    processors = []
    for pipeline in ("traces", "traces/2"):
        settings = make_settings(Kind.PROCESSOR, "tail_latency", pipeline, telemetry)
        config = Config(min_samples=1)
        processor = factory.create(settings, config, Signal.TRACES, SinkConsumer())
        await processor.start(None)
        processors.append(processor)
    processors[0].process(spans([10]))
    processors[1].process(spans([20]))
    await processors[1].consume(spans([30]))

    text = telemetry.exposition().decode()
    assert text.count("# TYPE coldtail_tail_latency_percentile_ms gauge") == 1
    assert 'percentile="p99",pipeline="traces/2",processor="tail_latency"' in text
    assert "coldtail_tail_latency_tail_spans_total{" in text
    assert close(percentile_ms(processors[0], "p50"), 10)
    assert close(percentile_ms(processors[1], "p50", pipeline="traces/2"), 20)

    await processors[1].shutdown()
    await processors[1].shutdown()
    assert percentile_ms(processors[1], "p50", pipeline="traces/2") is None
    assert close(percentile_ms(processors[0], "p50"), 10)
