"""`latency`: keeps traces whose duration, from the earliest span start to the latest span end,
lies between two bounds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.base import (
    Decision,
    Evaluator,
    PolicyConfig,
    sampled_if,
)
from collector.processors.tail_sampling.trace import Trace

_NS_PER_MS = 1_000_000


class LatencyConfig(ComponentConfig):
    threshold_ms: int = Field(ge=0)
    """Shortest trace duration kept, in milliseconds, inclusive. Required; 0 keeps every trace
    up to upper_threshold_ms."""
    upper_threshold_ms: int = Field(0, ge=0)
    """Longest trace duration kept, in milliseconds, inclusive. Default 0: no upper bound;
    otherwise at least threshold_ms."""

    @model_validator(mode="after")
    def _bounds(self):
        if self.upper_threshold_ms and self.upper_threshold_ms < self.threshold_ms:
            raise ValueError(
                f"upper_threshold_ms ({self.upper_threshold_ms}) must be 0 (no upper bound) or "
                f"at least threshold_ms ({self.threshold_ms})"
            )
        return self


class LatencyPolicy(PolicyConfig):
    type: Literal["latency"]
    """Keeps traces lasting threshold_ms or longer (and at most upper_threshold_ms when set)."""
    latency: LatencyConfig
    """Options of the latency policy. Required."""

    def evaluator(self) -> Evaluator:
        lower = self.latency.threshold_ms * _NS_PER_MS
        upper = self.latency.upper_threshold_ms * _NS_PER_MS

        def evaluate(trace: Trace) -> Decision:
            duration = trace.duration_ns()
            return sampled_if(duration >= lower and (not upper or duration <= upper))

        return evaluate
