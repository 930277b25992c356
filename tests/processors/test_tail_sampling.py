import math
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from collector.core.component import Kind
from collector.core.config import ConfigError, validate
from collector.core.consumer import RetryableError
from collector.core.pdata import Traces, get_attr, iter_spans
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.processors.tail_sampling import factory
from collector.processors.tail_sampling.config import Config
from collector.processors.tail_sampling.policies.base import Decision
from collector.processors.tail_sampling.policies.composite import CompositePolicy
from collector.processors.tail_sampling.policies.probabilistic import fnv1a_64
from collector.processors.tail_sampling.policies.rate_limiting import RateLimitingPolicy
from collector.processors.tail_sampling.trace import Fragment, Trace
from collector.registry import registry
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_traces
from tests.support.components import make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

SIDECAR = Path(__file__).parents[2] / "config" / "sidecar.yaml"
BASE_NS = 1_700_000_000 * 10**9
KEEP_ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def test_defaults():
    config = Config.model_validate({"policies": [{"name": "all", "type": "always_sample"}]})
    assert (config.decision_wait, config.num_traces) == (30.0, 50_000)
    cache = config.decision_cache
    assert (cache.sampled_cache_size, cache.non_sampled_cache_size) == (100_000, 100_000)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def build(config: dict, policies: list[dict] | None = None):
    """(processor, sink, clock); `policies` default to keeping errors."""
    clock = Clock()
    config = {"decision_wait": "10s", "policies": policies or [KEEP_ERRORS], **config}
    processor, sink = make_processor(factory, config, clock=clock)
    return processor, sink, clock


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def spans(
    tid: bytes,
    n: int = 1,
    *,
    start_ms: float = 0,
    duration_ms: float = 10,
    attributes: dict | None = None,
    resource: dict | None = None,
    status: int = Status.STATUS_CODE_UNSET,
    trace_state: str = "",
) -> Traces:
    """`n` spans of trace `tid` under one resource, all starting at `start_ms`."""
    batch = make_traces(n, trace_id=tid, attributes=attributes, resource=resource)
    for _, _, span in iter_spans(batch):
        span.start_time_unix_nano = BASE_NS + int(start_ms * 1e6)
        span.end_time_unix_nano = span.start_time_unix_nano + int(duration_ms * 1e6)
        span.status.code = status
        span.trace_state = trace_state
    return batch


def spans_by_trace(sink: SinkConsumer) -> Counter:
    return Counter(span.trace_id for batch in sink.batches for _, _, span in iter_spans(batch))


def metric(processor, name: str, **labels) -> float:
    labels = {"processor": str(processor.settings.id), "pipeline": "traces", **labels}
    value = processor.settings.telemetry.registry.get_sample_value(
        f"otelcol_processor_tail_sampling_{name}", labels
    )
    return value or 0.0


ERROR = {"status": Status.STATUS_CODE_ERROR}
OK = {"status": Status.STATUS_CODE_OK}


def error_traces(*ns: int) -> Traces:
    """One batch holding an error span of each trace `trace_id(n)`."""
    batch = Traces()
    for n in ns:
        batch.MergeFrom(spans(trace_id(n), **ERROR))
    return batch


def policy(type_: str, **options) -> dict:
    return {"type": type_, type_: options} if options else {"type": type_}


def string_attr(**options) -> dict:
    return policy("string_attribute", key="http.route", **options)


POLICY_CASES = [
    # (policy, the trace's spans (one batch each), kept)
    (policy("always_sample"), [{}], True),
    (policy("probabilistic", sampling_percentage=100), [{}], True),
    (policy("probabilistic", sampling_percentage=0), [{}], False),
    (policy("status_code", status_codes=["ERROR"]), [{}, ERROR], True),
    (policy("status_code", status_codes=["ERROR"]), [OK, {}], False),
    (policy("status_code", status_codes=["OK", "UNSET"]), [{}], True),
    (policy("status_code", status_codes=["OK"]), [ERROR, {}], False),
    # Neither span lasts 100ms; the trace, first start to last end, lasts 120ms.
    (
        policy("latency", threshold_ms=100),
        [{"duration_ms": 50}, {"start_ms": 80, "duration_ms": 40}],
        True,
    ),
    (policy("latency", threshold_ms=100), [{"duration_ms": 100}], True),
    (policy("latency", threshold_ms=100), [{"duration_ms": 99}], False),
    (policy("latency", threshold_ms=100, upper_threshold_ms=110), [{"duration_ms": 110}], True),
    (policy("latency", threshold_ms=100, upper_threshold_ms=110), [{"duration_ms": 120}], False),
    (policy("latency", threshold_ms=0), [{"duration_ms": 0}], True),
    (string_attr(values=["/pay"]), [{}, {"attributes": {"http.route": "/pay"}}], True),
    (string_attr(values=["/pay"]), [{"resource": {"http.route": "/pay"}}], True),
    (string_attr(values=["/pay"]), [{"attributes": {"http.route": "/pay/now"}}], False),
    (string_attr(values=["/pay"]), [{"attributes": {"route": "/pay"}}], False),
    (string_attr(values=["5"]), [{"attributes": {"http.route": 5}}], False),
    (
        string_attr(values=["^/api/", "^/pay$"], enabled_regex_matching=True),
        [{"attributes": {"http.route": "/api/items"}}],
        True,
    ),
    (
        string_attr(values=["^/api/"], enabled_regex_matching=True),
        [{"attributes": {"http.route": "/v2/api/items"}}],
        False,
    ),
    (string_attr(values=["/health"], invert_match=True), [{}], True),
    (
        string_attr(values=["/health"], invert_match=True),
        [{"attributes": {"http.route": "/x"}}],
        True,
    ),
    (
        string_attr(values=["/health"], invert_match=True),
        [{}, {"attributes": {"http.route": "/health"}}],
        False,
    ),
    (
        policy("boolean_attribute", key="cold", value=True),
        [{}, {"attributes": {"cold": True}}],
        True,
    ),
    (policy("boolean_attribute", key="cold", value=True), [{"resource": {"cold": True}}], True),
    (policy("boolean_attribute", key="cold", value=True), [{"attributes": {"cold": False}}], False),
    (
        policy("boolean_attribute", key="cold", value=True),
        [{"attributes": {"cold": "true"}}],
        False,
    ),
    (policy("boolean_attribute", key="cold", value=False), [{"attributes": {"cold": False}}], True),
    (
        policy("numeric_attribute", key="n", min_value=10, max_value=20),
        [{"attributes": {"n": 10}}],
        True,
    ),
    (
        policy("numeric_attribute", key="n", min_value=10, max_value=20),
        [{"attributes": {"n": 20.0}}],
        True,
    ),
    (
        policy("numeric_attribute", key="n", min_value=10, max_value=20),
        [{"attributes": {"n": 21}}, {"attributes": {"n": "15"}}],
        False,
    ),
    (policy("numeric_attribute", key="n", min_value=10), [{"resource": {"n": 10**9}}], True),
    (policy("numeric_attribute", key="n", max_value=0), [{"attributes": {"n": -3.5}}], True),
    (policy("numeric_attribute", key="n", max_value=0), [{}], False),
    (policy("span_count", min_spans=2), [{}, {}], True),
    (policy("span_count", min_spans=2), [{}], False),
    (policy("span_count", min_spans=1, max_spans=2), [{}, {}, {}], False),
    (
        policy("trace_state", key="vendor", values=["keep", "yes"]),
        [{}, {"trace_state": "other=1, vendor=yes"}],
        True,
    ),
    (policy("trace_state", key="vendor", values=["keep"]), [{"trace_state": "vendor=no"}], False),
    (policy("trace_state", key="vendor", values=["keep"]), [{"trace_state": "x=keep"}], False),
    (policy("rate_limiting", spans_per_second=2), [{}, {}], True),
]


@pytest.mark.parametrize(("policy_config", "trace", "kept"), POLICY_CASES)
async def test_policy(policy_config, trace, kept):
    processor, sink, _ = build({}, [{"name": "p", **policy_config}])
    for spec in trace:
        await processor.consume(spans(trace_id(1), **spec))
    await processor.shutdown()
    assert sink.item_count == (len(trace) if kept else 0)
    assert metric(processor, "count_traces_sampled_total", policy="p", sampled=str(kept).lower())


AND = {
    "name": "slow-errors",
    "type": "and",
    "and": {
        "and_sub_policy": [
            KEEP_ERRORS,
            {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
        ]
    },
}


@pytest.mark.parametrize(
    ("trace", "kept"),
    [
        ([ERROR, {"duration_ms": 1500}], True),
        ([{**ERROR, "duration_ms": 1500}], True),
        ([ERROR], False),
        ([{"duration_ms": 1500}], False),
    ],
)
async def test_and_keeps_what_every_sub_policy_keeps(trace, kept):
    processor, sink, _ = build({}, [AND])
    for spec in trace:
        await processor.consume(spans(trace_id(7), **spec))
    await processor.shutdown()
    assert sink.item_count == (len(trace) if kept else 0)


async def test_inverted_match_in_and_only_fails_the_and():
    no_health = {
        "name": "no-health",
        "type": "string_attribute",
        "string_attribute": {"key": "http.route", "values": ["/health"], "invert_match": True},
    }
    and_policy = {"name": "a", "type": "and", "and": {"and_sub_policy": [KEEP_ERRORS, no_health]}}
    processor, sink, _ = build({}, [and_policy, {"name": "all", "type": "always_sample"}])
    await processor.consume(spans(trace_id(1), attributes={"http.route": "/health"}, **ERROR))
    await processor.shutdown()
    assert sink.item_count == 1


async def test_inverted_match_vetoes_other_policies():
    no_health = string_attr(values=["/health"], invert_match=True)
    processor, sink, _ = build({}, [KEEP_ERRORS, {"name": "no-health", **no_health}])
    await processor.consume(spans(trace_id(1), attributes={"http.route": "/health"}, **ERROR))
    await processor.consume(spans(trace_id(2), attributes={"http.route": "/pay"}, **ERROR))
    await processor.consume(spans(trace_id(3), attributes={"http.route": "/pay"}))
    await processor.shutdown()
    assert set(spans_by_trace(sink)) == {trace_id(2), trace_id(3)}


def sidecar_tail_sampling() -> dict:
    return yaml.safe_load(SIDECAR.read_text())["processors"]["tail_sampling"]


async def test_sidecar_policies_keep_errors_cold_starts_and_tail_and_a_tenth_of_the_rest():
    processor, sink = make_processor(factory, sidecar_tail_sampling(), clock=(clock := Clock()))
    rng = random.Random(20240601)
    traces, chunk = 20_000, 500
    special: dict[bytes, str] = {}
    firsts, seconds = [], []
    for i in range(traces):
        tid = rng.randbytes(16)
        kind = ("error", "cold", "p99", "p95", *["plain"] * 46)[i % 50]
        resource = {"service.name": f"svc-{i % 3}"}
        root = {"attributes": {"coldtail.cold_start": True}} if kind == "cold" else {}
        if kind in ("p95", "p99"):
            root = {"attributes": {"coldtail.latency.tail": kind}}
        # The root and one child arrive first; the error, if any, comes with a later child.
        first = spans(tid, 2, resource=resource, **root)
        second = spans(tid, resource=resource, **(ERROR if kind == "error" else {}))
        if kind != "plain":
            special[tid] = kind
        firsts.append(first)
        seconds.append(second)

    def merged(batches: list) -> Traces:
        out = Traces()
        for b in batches:
            out.MergeFrom(b)
        return out

    steps = traces // chunk
    for step in range(steps + 2):
        if step < steps:
            await processor.consume(merged(firsts[step * chunk : (step + 1) * chunk]))
        if step >= 2:
            late_step = step - 2
            await processor.consume(merged(seconds[late_step * chunk : (late_step + 1) * chunk]))
        clock.advance(1)
        await processor.decide_due()
    await processor.shutdown()

    kept = spans_by_trace(sink)
    assert set(kept.values()) == {3}, "kept traces must come out whole"
    assert special.keys() <= kept.keys()
    plain = traces - len(special)
    plain_kept = len(kept) - len(special)
    sigma = math.sqrt(plain * 0.1 * 0.9)
    assert abs(plain_kept - plain * 0.1) <= 4 * sigma, plain_kept
    assert processor_metric(processor, "outgoing") == 3 * len(kept)
    for batch in sink.batches:
        services = [get_attr(rs.resource.attributes, "service.name") for rs in batch.resource_spans]
        assert len(services) == len(set(services)), "spans regroup under their resource"
    errors = sum(1 for k in special.values() if k == "error")
    assert (
        metric(processor, "count_traces_sampled_total", policy="errors", sampled="true") == errors
    )
    assert metric(processor, "global_count_traces_sampled_total", sampled="true") == len(kept)
    assert metric(processor, "global_count_traces_sampled_total", sampled="false") == (
        traces - len(kept)
    )


async def test_decision_waits_from_the_first_span():
    processor, sink, clock = build({"decision_wait": "10s"})
    await processor.consume(spans(trace_id(1), **ERROR))
    clock.advance(6)
    await processor.consume(spans(trace_id(1), 2))
    await processor.consume(spans(trace_id(2), **ERROR))
    clock.advance(3.9)
    await processor.decide_due()
    assert sink.batches == []
    clock.advance(0.1)
    await processor.decide_due()
    assert spans_by_trace(sink) == {trace_id(1): 3}
    clock.advance(6)
    await processor.decide_due()
    assert spans_by_trace(sink) == {trace_id(1): 3, trace_id(2): 1}
    assert metric(processor, "sampling_traces_on_memory") == 0


async def test_scope_and_resource_are_kept_per_span():
    processor, sink, _ = build({}, [{"name": "all", "type": "always_sample"}])
    cart = spans(trace_id(1), resource={"service.name": "cart"})
    cart.resource_spans[0].scope_spans[0].scope.name = "http"
    cart.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    await processor.consume(cart)
    await processor.consume(spans(trace_id(1), 2, resource={"service.name": "checkout"}))
    await processor.consume(spans(trace_id(2), resource={"service.name": "cart"}))
    await processor.shutdown()
    (out,) = sink.batches
    layout = [
        (
            get_attr(rs.resource.attributes, "service.name"),
            rs.schema_url,
            ss.scope.name,
            len(ss.spans),
        )
        for rs in out.resource_spans
        for ss in rs.scope_spans
    ]
    assert layout == [
        ("cart", "https://opentelemetry.io/schemas/1.26.0", "http", 1),
        ("checkout", "", "coldtail.testing", 2),
        ("cart", "", "coldtail.testing", 1),
    ]


async def test_late_spans_follow_the_remembered_decision():
    processor, sink, clock = build({})
    await processor.consume(spans(trace_id(1), **ERROR))
    await processor.consume(spans(trace_id(2)))
    clock.advance(10)
    await processor.decide_due()
    assert spans_by_trace(sink) == {trace_id(1): 1}

    await processor.consume(spans(trace_id(1), 2))
    assert spans_by_trace(sink) == {trace_id(1): 3}, "late spans of a kept trace go on at once"
    await processor.consume(spans(trace_id(2), **ERROR))
    await processor.shutdown()
    assert spans_by_trace(sink) == {trace_id(1): 3}, "late spans of a dropped trace are dropped"
    assert metric(processor, "sampling_late_spans_total", sampled="true") == 2
    assert metric(processor, "sampling_late_spans_total", sampled="false") == 1
    assert metric(processor, "decision_cache_size", sampled="true") == 1
    assert metric(processor, "decision_cache_size", sampled="false") == 1


async def test_without_decision_cache_a_late_span_is_decided_on_its_own():
    processor, sink, clock = build({"decision_cache": {"non_sampled_cache_size": 0}})
    await processor.consume(spans(trace_id(1)))
    clock.advance(10)
    await processor.decide_due()
    await processor.consume(spans(trace_id(1), **ERROR))
    clock.advance(9)
    await processor.decide_due()
    assert sink.batches == []
    clock.advance(1)
    await processor.decide_due()
    assert spans_by_trace(sink) == {trace_id(1): 1}


async def test_decision_cache_forgets_the_least_recently_used():
    processor, sink, clock = build({"decision_cache": {"sampled_cache_size": 2}})
    for n in (1, 2):
        await processor.consume(spans(trace_id(n), **ERROR))
    clock.advance(10)
    await processor.decide_due()
    await processor.consume(spans(trace_id(1)))  # a hit: 1 is now the most recently used
    await processor.consume(spans(trace_id(3), **ERROR))
    clock.advance(10)
    await processor.decide_due()
    await processor.consume(spans(trace_id(2)))  # forgotten: held as a new trace
    assert spans_by_trace(sink) == {trace_id(1): 2, trace_id(2): 1, trace_id(3): 1}
    await processor.consume(spans(trace_id(1)))
    assert spans_by_trace(sink)[trace_id(1)] == 3
    assert metric(processor, "decision_cache_size", sampled="true") == 2


async def test_num_traces_overflow_decides_the_oldest_early():
    processor, sink, clock = build({"num_traces": 3})
    for n in range(1, 4):
        await processor.consume(spans(trace_id(n), **ERROR))
        clock.advance(1)
    assert sink.batches == []
    await processor.consume(spans(trace_id(4), **ERROR))
    assert spans_by_trace(sink) == {trace_id(1): 1}
    await processor.consume(error_traces(5, 6))
    assert spans_by_trace(sink) == {trace_id(1): 1, trace_id(2): 1, trace_id(3): 1}
    assert metric(processor, "sampling_trace_dropped_too_early_total") == 3
    assert metric(processor, "sampling_traces_on_memory") == 3
    await processor.shutdown()
    assert set(spans_by_trace(sink)) == {trace_id(n) for n in range(1, 7)}


async def test_shutdown_decides_and_flushes_everything_held():
    processor, sink, _ = build({"decision_wait": "1h"})
    await processor.start(None)
    await processor.consume(spans(trace_id(1), 2, **ERROR))
    await processor.consume(spans(trace_id(2), 2))
    await processor.shutdown()
    assert spans_by_trace(sink) == {trace_id(1): 2}
    await processor.shutdown()
    assert spans_by_trace(sink) == {trace_id(1): 2}
    assert metric(processor, "sampling_traces_on_memory") == 0


async def test_shutdown_without_start_flushes_and_later_data_is_decided_at_once():
    processor, sink, _ = build({})
    await processor.consume(spans(trace_id(1), **ERROR))
    await processor.shutdown()
    assert spans_by_trace(sink) == {trace_id(1): 1}
    await processor.consume(spans(trace_id(2), **ERROR))
    assert spans_by_trace(sink) == {trace_id(1): 1, trace_id(2): 1}


async def test_background_task_decides_on_time():
    processor, sink = make_processor(factory, {"decision_wait": "30ms", "policies": [KEEP_ERRORS]})
    await processor.start(None)
    await processor.consume(spans(trace_id(1), 3, **ERROR))
    await processor.consume(spans(trace_id(2), 3))
    await sink.wait_for(3, timeout=2)
    await processor.shutdown()
    assert spans_by_trace(sink) == {trace_id(1): 3}


async def test_errors_of_the_next_consumer_are_logged(caplog):
    settings = make_settings(Kind.PROCESSOR, "tail_sampling", pipeline="traces")
    config = Config.model_validate({"policies": [KEEP_ERRORS]})
    failing = ErrorConsumer(RetryableError("backend down"))
    processor = factory.create(settings, config, Signal.TRACES, failing)
    await processor.consume(spans(trace_id(1), **ERROR))
    await processor.shutdown()
    assert len(failing.batches) == 1
    assert "the next consumer failed" in caplog.text


def test_fnv1a_64_reference_values():
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


async def test_probabilistic_decisions_depend_only_on_trace_id_and_salt():
    def half(salt: str) -> dict:
        options = {"sampling_percentage": 50, "hash_salt": salt}
        return {"policies": [{"name": "half", "type": "probabilistic", "probabilistic": options}]}

    async def kept(config: dict, ids: list[bytes]) -> set[bytes]:
        processor, sink = make_processor(factory, config)
        for tid in ids:
            await processor.consume(spans(tid))
        await processor.shutdown()
        return set(spans_by_trace(sink))

    rng = random.Random(7)
    ids = [rng.randbytes(16) for _ in range(400)]
    first = await kept(half(""), ids)
    assert first == await kept(half(""), ids[::-1])
    assert 120 < len(first) < 280
    assert first != await kept(half("other"), ids)


async def test_instances_share_a_registry():
    telemetry = Telemetry()
    config = Config.model_validate({"policies": [KEEP_ERRORS]})
    sinks = []
    for pipeline in ("traces", "traces/2"):
        settings = make_settings(
            Kind.PROCESSOR, "tail_sampling", pipeline=pipeline, telemetry=telemetry
        )
        sinks.append(SinkConsumer())
        processor = factory.create(settings, config, Signal.TRACES, sinks[-1])
        await processor.consume(spans(trace_id(1), **ERROR))
        await processor.shutdown()
    for pipeline in ("traces", "traces/2"):
        assert (
            telemetry.registry.get_sample_value(
                "otelcol_processor_tail_sampling_global_count_traces_sampled_total",
                {"processor": "tail_sampling", "pipeline": pipeline, "sampled": "true"},
            )
            == 1
        )


def test_rate_limiting_keeps_traces_until_the_seconds_span_budget_is_spent():
    limit = RateLimitingPolicy.model_validate(
        {"name": "r", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 5}}
    )
    now = [100.2]
    evaluate = limit.evaluator(clock=lambda: now[0])

    def trace(n: int) -> Trace:
        batch = spans(trace_id(n), 2)
        rs = batch.resource_spans[0]
        ss = rs.scope_spans[0]
        fragment = Fragment((b"", ""), (b"", ""), rs, ss, list(ss.spans))
        return Trace(trace_id(n), 0.0, [fragment])

    # Traces of 2 spans: two fit in 5 spans a second, the next do not, until the next second.
    decisions = [evaluate(trace(n)) for n in range(3)]
    now[0] = 100.9
    decisions.append(evaluate(trace(3)))
    now[0] = 101.0
    decisions.append(evaluate(trace(4)))
    assert decisions == [Decision.SAMPLED, Decision.SAMPLED] + [Decision.NOT_SAMPLED] * 2 + [
        Decision.SAMPLED
    ]


def test_new_policies_check_their_options():
    with pytest.raises(
        ValueError, match=re.escape("max_spans (3) must be 0 (no upper bound) or at least")
    ):
        build({}, [policy("span_count", min_spans=5, max_spans=3) | {"name": "c"}])
    with pytest.raises(ValueError, match="spans_per_second"):
        build({}, [policy("rate_limiting", spans_per_second=0) | {"name": "r"}])


def as_trace(n: int, batch: Traces) -> Trace:
    """Trace `trace_id(n)` holding the spans of `batch`, as the processor would hold them."""
    trace = Trace(trace_id(n), 0.0)
    for rs in batch.resource_spans:
        for ss in rs.scope_spans:
            trace.fragments.append(Fragment((b"", ""), (b"", ""), rs, ss, list(ss.spans)))
    return trace


def composite(total: int, subs: list[dict], order=None, allocation=None) -> CompositePolicy:
    options: dict = {"max_total_spans_per_second": total, "composite_sub_policy": subs}
    if order is not None:
        options["policy_order"] = order
    if allocation is not None:
        options["rate_allocation"] = [{"policy": p, "percent": n} for p, n in allocation.items()]
    return CompositePolicy.model_validate({"name": "c", "type": "composite", "composite": options})


ALL = {"name": "all", "type": "always_sample"}
HEALTH: dict[str, Any] = {"attributes": {"http.route": "/health"}}
ROUTE_B: dict[str, Any] = {"attributes": {"http.route": "/b"}}
NO_HEALTH = {"name": "no-health", **string_attr(values=["/health"], invert_match=True)}
ERRORS_AND_TWO_SPANS = {
    "name": "errors-of-two",
    "type": "and",
    "and": {"and_sub_policy": [KEEP_ERRORS, {"name": "two", **policy("span_count", min_spans=2)}]},
}

COMPOSITE_CASES = [
    # (composite, steps: (clock reading, spans in the trace, span options, kept))
    pytest.param(
        composite(10, [ALL]),
        [
            (100.0, 4, {}, True),
            (100.5, 4, {}, True),
            (100.9, 4, {}, False),  # 12 > 10; not counted, so a smaller trace still fits
            (100.9, 2, {}, True),
            (100.99, 1, {}, False),
            (101.0, 4, {}, True),  # a new second: the count restarts
            (101.5, 4, {}, True),
            (101.7, 4, {}, False),
        ],
        id="budget-spent-within-a-second-then-reset",
    ),
    pytest.param(
        composite(8, [ALL, KEEP_ERRORS], order=["errors", "all"], allocation={"errors": 50}),
        [
            (5.0, 4, {}, True),
            (5.1, 1, {}, False),  # `all` spent its 4
            (5.2, 4, ERROR, True),  # asked first, `errors` takes it into its own 4
            (5.3, 1, ERROR, False),
        ],
        id="policy-order-goes-before-the-listed-order",
    ),
    pytest.param(
        composite(8, [ALL, KEEP_ERRORS], allocation={"errors": 50}),
        [
            (5.0, 4, ERROR, True),  # listed first, `all` takes it
            (5.1, 1, {}, False),
            (5.2, 4, ERROR, False),  # `all` is full; `errors`, with room, is not asked
        ],
        id="without-policy-order-the-listed-order",
    ),
    pytest.param(
        composite(10, [ALL, KEEP_ERRORS], order=["errors"], allocation={"errors": 20}),
        [
            (7.0, 2, ERROR, True),
            (7.1, 1, ERROR, False),  # `errors` is full and the trace does not go on to `all`
            (7.2, 5, {}, True),  # `all`, left out of policy_order, is asked after: 10 / 2
            (7.3, 1, {}, False),
        ],
        id="a-full-share-refuses-and-sub-policies-left-out-of-order-come-after",
    ),
    pytest.param(
        composite(
            90,
            [KEEP_ERRORS, {"name": "b", **string_attr(values=["/b"])}, ALL],
            allocation={"errors": 50, "all": 0},
        ),
        [
            # `b` (no entry) and `all` (0%) each get 90 / 3 = 30, a part of the whole budget
            # rather than of the 45 `errors` leaves; together the shares exceed 90.
            (1.0, 30, ROUTE_B, True),
            (1.1, 1, ROUTE_B, False),
            (1.2, 30, {}, True),
            (1.3, 1, {}, False),
            (1.4, 45, ERROR, True),
            (1.5, 1, ERROR, False),
        ],
        id="sub-policies-without-allocation-get-an-equal-share-of-the-whole",
    ),
    pytest.param(
        composite(10, [NO_HEALTH, ALL], allocation={"no-health": 50}),
        [
            (3.0, 5, HEALTH, True),  # the inverted match only skips `no-health`: `all` takes it
            (3.1, 5, {"attributes": {"http.route": "/x"}}, True),  # no match: `no-health` keeps
            (3.2, 1, {}, False),
            (3.3, 1, HEALTH, False),
        ],
        id="inverted-match-only-skips-its-sub-policy",
    ),
    pytest.param(
        composite(4, [ERRORS_AND_TWO_SPANS, ALL]),
        [
            (9.0, 2, ERROR, True),
            (9.1, 1, ERROR, True),  # one span: the `and` fails, `all` takes it
            (9.2, 1, {}, True),
            (9.3, 1, {}, False),
            (9.4, 2, ERROR, False),
        ],
        id="and-as-a-sub-policy",
    ),
    pytest.param(
        composite(100, [KEEP_ERRORS, {"name": "b", **string_attr(values=["/b"])}]),
        [(2.0, 1, {}, False), (2.1, 1, OK, False), (2.2, 1, ROUTE_B, True)],
        id="not-kept-when-no-sub-policy-keeps-it",
    ),
]


@pytest.mark.parametrize(("policy_config", "steps"), COMPOSITE_CASES)
def test_composite(policy_config: CompositePolicy, steps):
    now = [0.0]
    evaluate = policy_config.evaluator(clock=lambda: now[0])
    decisions = []
    for n, (at, count, options, _) in enumerate(steps):
        now[0] = at
        decisions.append(evaluate(as_trace(n, spans(trace_id(n), count, **options))))
    assert decisions == [Decision.SAMPLED if kept else Decision.NOT_SAMPLED for *_, kept in steps]


@pytest.mark.parametrize(
    ("total", "subs", "allocation", "shares"),
    [
        (1000, ["a", "b"], {"a": 25, "b": 0}, {"a": 250, "b": 500}),
        (1000, ["a", "b"], {"a": 25}, {"a": 250, "b": 500}),
        (10, ["a", "b", "c"], {}, {"a": 3, "b": 3, "c": 3}),
        (10, ["a", "b"], {"a": 33, "b": 67}, {"a": 3, "b": 6}),
        (7, ["a"], {"a": 100}, {"a": 7}),
    ],
)
def test_composite_shares(total, subs, allocation, shares):
    policies = [{"name": name, "type": "always_sample"} for name in subs]
    assert composite(total, policies, allocation=allocation).shares() == shares


async def test_composite_in_the_processor_keeps_whole_traces_and_never_vetoes():
    budget = {
        "name": "budget",
        "type": "composite",
        "composite": {
            "max_total_spans_per_second": 1000,
            "policy_order": ["errors", "no-health"],
            "composite_sub_policy": [NO_HEALTH, KEEP_ERRORS],
            "rate_allocation": [{"policy": "errors", "percent": 50}],
        },
    }
    kept_slow = {"name": "slow", **policy("latency", threshold_ms=1000)}
    processor, sink, _ = build({}, [budget, kept_slow])
    await processor.consume(spans(trace_id(1), 2, **HEALTH))
    await processor.consume(spans(trace_id(1), **ERROR))
    await processor.consume(spans(trace_id(2), 3, **HEALTH))
    await processor.consume(spans(trace_id(3), 2, duration_ms=1500, **HEALTH))
    await processor.consume(spans(trace_id(4), 2))
    await processor.shutdown()
    # 1: an error, kept whole; 2: dropped by no sub-policy keeping it; 3: the inverted match
    # inside the composite does not stop `slow` keeping it; 4: kept by `no-health`.
    assert spans_by_trace(sink) == {trace_id(1): 3, trace_id(3): 2, trace_id(4): 2}
    assert metric(processor, "count_traces_sampled_total", policy="budget", sampled="true") == 2
    assert metric(processor, "count_traces_sampled_total", policy="budget", sampled="false") == 2


def test_composite_config_errors_name_the_key_path():
    bad = {
        "max_total_spans_per_second": 10,
        "policy_order": ["missing"],
        "composite_sub_policy": [ALL],
        "rate_allocation": [{"policy": "all", "percent": 101}],
    }
    raw = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {
            "tail_sampling": {"policies": [{"name": "c", "type": "composite", "composite": bad}]}
        },
        "exporters": {"debug": {}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["tail_sampling"],
                    "exporters": ["debug"],
                }
            }
        },
    }
    with pytest.raises(ConfigError) as excinfo:
        validate(raw, registry())
    path = "processors::tail_sampling::policies::0::composite::"
    assert {str(e) for e in excinfo.value.errors} == {
        path + "policy_order: 'missing' names no sub-policy; sub-policies: all",
        path + "rate_allocation::0::percent: Input should be less than or equal to 100",
    }
