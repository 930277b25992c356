"""Config of the tail_sampling processor, in the OTel Collector's shape:

tail_sampling:
  decision_wait: 10s
  num_traces: 50000
  decision_cache: {sampled_cache_size: 100000, non_sampled_cache_size: 100000}
  policies:
    - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
    - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from collector.core.config_types import ComponentConfig, Duration
from collector.processors.tail_sampling.policies.and_ import AndPolicy, BasicPolicy
from collector.processors.tail_sampling.policies.composite import CompositePolicy

Policy = Annotated[BasicPolicy | AndPolicy | CompositePolicy, Field(discriminator="type")]


class DecisionCacheConfig(ComponentConfig):
    sampled_cache_size: int = Field(100_000, ge=0)
    """Trace ids remembered as kept after their decision (least recently used forgotten first),
    so spans arriving late are kept too. Default 100000. 0: not remembered; a late span then
    starts a new trace that is decided on its own."""
    non_sampled_cache_size: int = Field(100_000, ge=0)
    """Trace ids remembered as dropped after their decision, so spans arriving late are dropped
    too. Default 100000. 0: not remembered; a late span then starts a new trace that is decided
    on its own."""


class Config(ComponentConfig):
    decision_wait: Duration = Field(30.0, ge=0)
    """Time from the first span of a trace to its sampling decision; spans arriving later are
    late. Default 30s. 0: decided at the next check (checks run every decision_wait / 10,
    between 10ms and 1s)."""
    num_traces: int = Field(50_000, ge=1)
    """Most traces held waiting for a decision; when one more arrives, the oldest is decided
    at once (counted in otelcol_processor_tail_sampling_sampling_trace_dropped_too_early).
    Default 50000, at least 1."""
    expected_new_traces_per_sec: int = Field(0, ge=0)
    """Accepted for compatibility with Collector configs; it has no effect. Default 0."""
    decision_cache: DecisionCacheConfig = Field(default_factory=DecisionCacheConfig)
    """Decisions remembered for spans that arrive after their trace was decided."""
    policies: list[Policy] = Field(min_length=1)
    """Policies deciding each trace, each {name, type, <type>: {...}}. A trace is kept when any
    policy keeps it, unless an inverted string_attribute policy matches it. Types:
    always_sample; probabilistic {sampling_percentage, hash_salt}; status_code {status_codes:
    [ERROR, OK, UNSET]}; latency {threshold_ms, upper_threshold_ms}; string_attribute {key,
    values, enabled_regex_matching, invert_match}; boolean_attribute {key, value};
    numeric_attribute {key, min_value, max_value}; span_count {min_spans, max_spans};
    trace_state {key, values}; rate_limiting {spans_per_second}; and {and_sub_policy: [...]};
    composite {max_total_spans_per_second, policy_order: [names], composite_sub_policy: [...],
    rate_allocation: [{policy, percent}]}: the first sub-policy in policy_order that would keep
    a trace keeps it if its share of the spans per second has room (a sub-policy without a
    rate_allocation entry gets max_total_spans_per_second divided by the number of
    sub-policies). Attribute policies look at the resource and the spans of the trace.
    Required, not empty."""

    @model_validator(mode="after")
    def _unique_names(self):
        seen: set[str] = set()
        for policy in self.policies:
            if policy.name in seen:
                raise ValueError(f"policies: duplicate policy name {policy.name!r}")
            seen.add(policy.name)
        return self
