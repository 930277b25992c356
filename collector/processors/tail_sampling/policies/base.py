"""What every policy shares: its name, the decisions it can give, and how it is evaluated."""

from __future__ import annotations

import enum
from collections.abc import Callable

from pydantic import Field

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.trace import Trace


class Decision(enum.Enum):
    SAMPLED = "sampled"
    NOT_SAMPLED = "not_sampled"
    # An inverted match that found the value: the trace is dropped whatever other policies say.
    INVERT_NOT_SAMPLED = "invert_not_sampled"


Evaluator = Callable[[Trace], Decision]


def sampled_if(keep: bool) -> Decision:
    return Decision.SAMPLED if keep else Decision.NOT_SAMPLED


class PolicyConfig(ComponentConfig):
    name: str = Field(min_length=1)
    """Name of the policy, unique among the policies; it labels the policy's metrics. Required."""

    def evaluator(self) -> Evaluator:
        """A function deciding one complete (or timed-out) trace."""
        raise NotImplementedError
