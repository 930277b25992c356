"""`rate_limiting`: keeps traces while the spans kept in the current second stay within a
budget; a trace that would pass it is not kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from pydantic import Field

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.base import Decision, Evaluator, PolicyConfig
from collector.processors.tail_sampling.trace import Trace


class RateLimitingConfig(ComponentConfig):
    spans_per_second: int = Field(ge=1)
    """Spans this policy keeps in one second at most. Required, at least 1."""


class RateLimitingPolicy(PolicyConfig):
    type: Literal["rate_limiting"]
    """Keeps traces until spans_per_second spans were kept in the current second."""
    rate_limiting: RateLimitingConfig
    """Options of the rate_limiting policy. Required."""

    def evaluator(self, clock: Callable[[], float] = time.monotonic) -> Evaluator:
        budget = self.rate_limiting.spans_per_second
        second, kept = -1, 0

        def evaluate(trace: Trace) -> Decision:
            nonlocal second, kept
            now = int(clock())
            if now != second:
                second, kept = now, 0
            count = sum(len(fragment.spans) for fragment in trace.fragments)
            if kept + count > budget:
                return Decision.NOT_SAMPLED
            kept += count
            return Decision.SAMPLED

        return evaluate
