"""`always_sample`: keeps every trace."""

from __future__ import annotations

from typing import Literal

from collector.processors.tail_sampling.policies.base import Decision, Evaluator, PolicyConfig


class AlwaysSamplePolicy(PolicyConfig):
    type: Literal["always_sample"]
    """Keeps every trace; takes no options."""

    def evaluator(self) -> Evaluator:
        return lambda _trace: Decision.SAMPLED
