"""`trace_state`: keeps traces with a span whose W3C tracestate gives a key one of some values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.base import (
    Decision,
    Evaluator,
    PolicyConfig,
    sampled_if,
)
from collector.processors.tail_sampling.trace import Trace


class TraceStateConfig(ComponentConfig):
    key: str = Field(min_length=1)
    """The tracestate list member's key, like `vendor` in `vendor=value,other=x`. Required."""
    values: list[str] = Field(min_length=1)
    """Values of that member that keep a trace. Required, not empty."""


def _members(trace_state: str) -> dict[str, str]:
    """The key=value list members of a W3C tracestate header value."""
    members: dict[str, str] = {}
    for member in trace_state.split(","):
        key, sep, value = member.strip().partition("=")
        if sep and key:
            members.setdefault(key, value)
    return members


class TraceStatePolicy(PolicyConfig):
    type: Literal["trace_state"]
    """Keeps traces in which a span's tracestate has `key` set to one of `values`."""
    trace_state: TraceStateConfig
    """Options of the trace_state policy. Required."""

    def evaluator(self) -> Evaluator:
        key, values = self.trace_state.key, frozenset(self.trace_state.values)

        def evaluate(trace: Trace) -> Decision:
            return sampled_if(
                any(
                    _members(span.trace_state).get(key) in values
                    for span in trace.spans()
                    if span.trace_state
                )
            )

        return evaluate
