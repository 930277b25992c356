"""`and`: keeps a trace only when every one of its sub-policies would keep it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.always_sample import AlwaysSamplePolicy
from collector.processors.tail_sampling.policies.attributes import (
    BooleanAttributePolicy,
    NumericAttributePolicy,
    StringAttributePolicy,
)
from collector.processors.tail_sampling.policies.base import (
    Decision,
    Evaluator,
    PolicyConfig,
    sampled_if,
)
from collector.processors.tail_sampling.policies.latency import LatencyPolicy
from collector.processors.tail_sampling.policies.probabilistic import ProbabilisticPolicy
from collector.processors.tail_sampling.policies.rate_limiting import RateLimitingPolicy
from collector.processors.tail_sampling.policies.span_count import SpanCountPolicy
from collector.processors.tail_sampling.policies.status_code import StatusCodePolicy
from collector.processors.tail_sampling.policies.trace_state import TraceStatePolicy
from collector.processors.tail_sampling.trace import Trace

# Every policy but `and` itself, which the Collector does not allow to nest either.
BasicPolicy = Annotated[
    AlwaysSamplePolicy
    | ProbabilisticPolicy
    | StatusCodePolicy
    | LatencyPolicy
    | StringAttributePolicy
    | BooleanAttributePolicy
    | NumericAttributePolicy
    | SpanCountPolicy
    | TraceStatePolicy
    | RateLimitingPolicy,
    Field(discriminator="type"),
]


class AndConfig(ComponentConfig):
    and_sub_policy: list[BasicPolicy] = Field(min_length=1)
    """Policies that must all keep a trace, each {name, type, <type>: {...}}; any type but
    `and`. Required, not empty."""


class AndPolicy(PolicyConfig):
    type: Literal["and"]
    """Keeps traces that every sub-policy keeps."""
    and_: AndConfig = Field(alias="and")
    """Options of the and policy. Required."""

    def evaluator(self) -> Evaluator:
        evaluators = [policy.evaluator() for policy in self.and_.and_sub_policy]

        def evaluate(trace: Trace) -> Decision:
            return sampled_if(all(e(trace) is Decision.SAMPLED for e in evaluators))

        return evaluate
