"""The tail_sampling processor: holds the spans of each trace for `decision_wait` from its first
span, then decides the whole trace with the policies and sends on the traces kept.

Spans of a trace may arrive in any number of batches, under different resources and scopes;
output batches regroup the spans of the traces decided together by resource and scope. Spans
arriving after their trace was decided follow the remembered decision. Data is acknowledged
once held: errors of the next consumer are logged, not returned to the sender, as in the
batch processor.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.consumer import Consumer
from collector.core.pdata import Traces, count_items, count_spans
from collector.core.signals import Signal
from collector.processors.internal.base import Processor
from collector.processors.tail_sampling.config import Config
from collector.processors.tail_sampling.policies.base import Decision, Evaluator
from collector.processors.tail_sampling.trace import Fragment, Trace

# Decisions come at most a tenth of decision_wait late, without waking more than 100 times a
# second or less than once a second.
_TICK_MIN_S = 0.01
_TICK_MAX_S = 1.0


class _Metrics:
    """The processor's own metrics, made once per service and labelled per instance."""

    def __init__(self, registry: CollectorRegistry) -> None:
        instance = ["processor", "pipeline"]
        prefix = "otelcol_processor_tail_sampling_"
        self.count_traces_sampled = Counter(
            prefix + "count_traces_sampled",
            "Traces decided, per policy, by whether that policy would keep them.",
            [*instance, "policy", "sampled"],
            registry=registry,
        )
        self.global_count_traces_sampled = Counter(
            prefix + "global_count_traces_sampled",
            "Traces decided, by final decision.",
            [*instance, "sampled"],
            registry=registry,
        )
        self.trace_dropped_too_early = Counter(
            prefix + "sampling_trace_dropped_too_early",
            "Traces decided before decision_wait had passed because num_traces were held.",
            instance,
            registry=registry,
        )
        self.late_spans = Counter(
            prefix + "sampling_late_spans",
            "Spans that arrived after their trace was decided, by that decision.",
            [*instance, "sampled"],
            registry=registry,
        )
        self.traces_on_memory = Gauge(
            prefix + "sampling_traces_on_memory",
            "Traces held waiting for their decision.",
            instance,
            registry=registry,
        )
        self.decision_cache_size = Gauge(
            prefix + "decision_cache_size",
            "Decided trace ids remembered for late spans, by decision.",
            [*instance, "sampled"],
            registry=registry,
        )


def _label(sampled: bool) -> str:
    return "true" if sampled else "false"


class LruSet:
    """At most `capacity` keys; adding to a full set forgets the least recently used key.
    Capacity 0 holds nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def add(self, key: bytes) -> None:
        if self.capacity == 0:
            return
        self._keys[key] = None
        self._keys.move_to_end(key)
        if len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def use(self, key: bytes) -> bool:
        """Whether `key` is held; a hit counts as a use."""
        if key not in self._keys:
            return False
        self._keys.move_to_end(key)
        return True

    def __len__(self) -> int:
        return len(self._keys)


@dataclass
class _Policy:
    evaluate: Evaluator
    counts: dict[bool, Counter]


class _BatchBuilder:
    """Builds one batch from fragments: one ResourceSpans per distinct resource, one ScopeSpans
    per distinct scope within it."""

    def __init__(self) -> None:
        self.batch = Traces()
        self._resources: dict = {}
        self._scopes: dict = {}

    def add(self, fragment: Fragment) -> None:
        key = (fragment.resource_key, fragment.scope_key)
        spans = self._scopes.get(key)
        if spans is None:
            out_rs = self._resources.get(fragment.resource_key)
            if out_rs is None:
                out_rs = self._resources[fragment.resource_key] = self.batch.resource_spans.add()
                out_rs.resource.CopyFrom(fragment.resource_spans.resource)
                out_rs.schema_url = fragment.resource_spans.schema_url
            out_ss = out_rs.scope_spans.add()
            out_ss.scope.CopyFrom(fragment.scope_spans.scope)
            out_ss.schema_url = fragment.scope_spans.schema_url
            spans = self._scopes[key] = out_ss.spans
        spans.extend(fragment.spans)


class TailSamplingProcessor(Processor):
    # Spans are held by reference and only read; output batches are built anew.
    mutates_data = False

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        next: Consumer,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`clock` reads seconds from any fixed origin; decision_wait is measured with it."""
        super().__init__(settings, config, signal, next)
        self._clock = clock
        self._tick = min(max(config.decision_wait / 10, _TICK_MIN_S), _TICK_MAX_S)
        # Insertion order is first-span order, hence also decision order.
        self._traces: collections.OrderedDict[bytes, Trace] = collections.OrderedDict()
        self._decided = {
            True: LruSet(config.decision_cache.sampled_cache_size),
            False: LruSet(config.decision_cache.non_sampled_cache_size),
        }
        self._stop = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None

        metrics = settings.telemetry.metric_set(_Metrics)
        labels = {"processor": str(settings.id), "pipeline": settings.pipeline}
        self._policies = [
            _Policy(
                policy.evaluator(),
                {
                    s: metrics.count_traces_sampled.labels(
                        **labels, policy=policy.name, sampled=_label(s)
                    )
                    for s in (True, False)
                },
            )
            for policy in config.policies
        ]
        self._decisions = {
            s: metrics.global_count_traces_sampled.labels(**labels, sampled=_label(s))
            for s in (True, False)
        }
        self._late_spans = {
            s: metrics.late_spans.labels(**labels, sampled=_label(s)) for s in (True, False)
        }
        self._cache_size = {
            s: metrics.decision_cache_size.labels(**labels, sampled=_label(s))
            for s in (True, False)
        }
        self._decided_early = metrics.trace_dropped_too_early.labels(**labels)
        self._on_memory = metrics.traces_on_memory.labels(**labels)

    async def start(self, host) -> None:
        if self._task is None and not self._stopping:
            self._task = asyncio.create_task(self._run(), name=f"{self.settings.id} decisions")

    async def shutdown(self) -> None:
        """Decides every trace still held, whatever its wait, and sends those kept."""
        self._stopping = True
        self._stop.set()
        if self._task is not None:
            # Not cancelled: a send in progress must finish rather than lose its traces.
            await self._task
            self._task = None
        await self._decide_and_send(self._take(len(self._traces)))

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self._tick)
                return
            except TimeoutError:
                await self.decide_due()

    async def decide_due(self) -> None:
        """Decide the traces whose decision_wait has passed and send those kept. The background
        task calls this every tick."""
        deadline = self._clock() - self.config.decision_wait
        due = 0
        for trace in self._traces.values():
            if trace.first_seen > deadline:
                break
            due += 1
        await self._decide_and_send(self._take(due))

    async def consume(self, batch) -> None:
        self._incoming.inc(count_spans(batch))
        now = self._clock()
        late = _BatchBuilder()
        for rs in batch.resource_spans:
            resource_key = (rs.resource.SerializeToString(deterministic=True), rs.schema_url)
            for ss in rs.scope_spans:
                scope_key = (ss.scope.SerializeToString(deterministic=True), ss.schema_url)
                by_trace: dict[bytes, list] = {}
                for span in ss.spans:
                    by_trace.setdefault(span.trace_id, []).append(span)
                for trace_id, spans in by_trace.items():
                    fragment = Fragment(resource_key, scope_key, rs, ss, spans)
                    decision = self._remembered(trace_id)
                    if decision is None:
                        self._hold(trace_id, fragment, now)
                        continue
                    self._late_spans[decision].inc(len(spans))
                    if decision:
                        late.add(fragment)
        overflow = max(0, len(self._traces) - self.config.num_traces)
        self._decided_early.inc(overflow)
        # Once stopping, nothing decides later: decide now rather than lose the data.
        early = self._take(len(self._traces) if self._stopping else overflow)
        await self._decide_and_send(early, late)

    def _remembered(self, trace_id: bytes) -> bool | None:
        for decision, ids in self._decided.items():
            if ids.use(trace_id):
                return decision
        return None

    def _hold(self, trace_id: bytes, fragment: Fragment, now: float) -> None:
        trace = self._traces.get(trace_id)
        if trace is None:
            trace = self._traces[trace_id] = Trace(trace_id, now)
        trace.fragments.append(fragment)

    def _take(self, n: int) -> list[Trace]:
        """Remove and return the `n` oldest traces held."""
        return [self._traces.popitem(last=False)[1] for _ in range(n)]

    def _keep(self, trace: Trace, counts: collections.Counter) -> bool:
        """The final decision on `trace`; each policy's own decision is tallied in `counts`."""
        decisions = [policy.evaluate(trace) for policy in self._policies]
        for policy, decision in zip(self._policies, decisions, strict=True):
            counts[policy.counts[decision is Decision.SAMPLED]] += 1
        if Decision.INVERT_NOT_SAMPLED in decisions:
            return False
        return Decision.SAMPLED in decisions

    async def _decide_and_send(self, traces: list[Trace], out: _BatchBuilder | None = None) -> None:
        """Decide `traces`, remember the decisions, and send the kept ones together with what
        `out` already holds."""
        out = out or _BatchBuilder()
        # Tallied first: one increment per metric instead of one per trace and policy.
        counts: collections.Counter = collections.Counter()
        for trace in traces:
            keep = self._keep(trace, counts)
            counts[self._decisions[keep]] += 1
            self._decided[keep].add(trace.trace_id)
            if keep:
                for fragment in trace.fragments:
                    out.add(fragment)
        for counter, n in counts.items():
            counter.inc(n)
        self._on_memory.set(len(self._traces))
        for decision, ids in self._decided.items():
            self._cache_size[decision].set(len(ids))
        try:
            await self.forward(out.batch)
        except Exception as exc:
            self.log.error(
                "sampled spans dropped: the next consumer failed",
                extra={"kv": {"spans": count_items(out.batch), "error": repr(exc)}},
            )


factory = Factory(
    kind=Kind.PROCESSOR,
    type="tail_sampling",
    config=Config,
    create=TailSamplingProcessor,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Holds the spans of each trace for decision_wait, then keeps or drops the whole "
    "trace by policies (status code, latency, attributes, probability, and, composite).",
)
