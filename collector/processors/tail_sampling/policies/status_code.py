"""`status_code`: keeps traces with a span of one of the given status codes."""

from __future__ import annotations

from typing import Literal

from opentelemetry.proto.trace.v1.trace_pb2 import Status
from pydantic import Field

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.base import (
    Decision,
    Evaluator,
    PolicyConfig,
    sampled_if,
)
from collector.processors.tail_sampling.trace import Trace

_CODES = {
    "UNSET": Status.STATUS_CODE_UNSET,
    "OK": Status.STATUS_CODE_OK,
    "ERROR": Status.STATUS_CODE_ERROR,
}


class StatusCodeConfig(ComponentConfig):
    status_codes: list[Literal["ERROR", "OK", "UNSET"]] = Field(min_length=1)
    """Span status codes that keep a trace: any of ERROR, OK, UNSET. Required, not empty."""


class StatusCodePolicy(PolicyConfig):
    type: Literal["status_code"]
    """Keeps traces in which any span has one of status_codes."""
    status_code: StatusCodeConfig
    """Options of the status_code policy. Required."""

    def evaluator(self) -> Evaluator:
        codes = frozenset(_CODES[name] for name in self.status_code.status_codes)

        def evaluate(trace: Trace) -> Decision:
            return sampled_if(any(span.status.code in codes for span in trace.spans()))

        return evaluate
