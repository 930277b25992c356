"""`span_count`: keeps traces with a number of spans within bounds."""

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


class SpanCountConfig(ComponentConfig):
    min_spans: int = Field(ge=0)
    """Fewest spans a kept trace has, inclusive. Required."""
    max_spans: int = Field(0, ge=0)
    """Most spans a kept trace has, inclusive. Default 0: no upper bound."""

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_spans and self.max_spans < self.min_spans:
            raise ValueError(
                f"max_spans ({self.max_spans}) must be 0 (no upper bound) or at least min_spans "
                f"({self.min_spans})"
            )
        return self


class SpanCountPolicy(PolicyConfig):
    type: Literal["span_count"]
    """Keeps traces of min_spans spans or more (and at most max_spans when set)."""
    span_count: SpanCountConfig
    """Options of the span_count policy. Required."""

    def evaluator(self) -> Evaluator:
        lower, upper = self.span_count.min_spans, self.span_count.max_spans

        def evaluate(trace: Trace) -> Decision:
            count = sum(len(fragment.spans) for fragment in trace.fragments)
            return sampled_if(count >= lower and (not upper or count <= upper))

        return evaluate
