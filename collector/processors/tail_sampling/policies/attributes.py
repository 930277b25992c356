"""Attribute policies: `string_attribute`, `boolean_attribute` and `numeric_attribute`.

Each looks at the attribute `key` on the resource and on every span of the trace and keeps the
trace when any of them matches. Only values of the policy's type match: the string "true" is
not a boolean, an integer 5 and a double 5.0 are both numbers.
"""

from __future__ import annotations

import re
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


class StringAttributeConfig(ComponentConfig):
    key: str = Field(min_length=1)
    """Attribute key to look up on resources and spans. Required."""
    values: list[str] = Field(min_length=1)
    """Values that match: exact strings, or regular expressions (Python syntax, matching
    anywhere in the value unless anchored) when enabled_regex_matching is set. Required, not
    empty."""
    enabled_regex_matching: bool = False
    """Treat values as regular expressions. Default false: exact matches."""
    invert_match: bool = False
    """Invert the policy, as in the OTel Collector: a trace where no resource or span matches is
    kept, and a trace where one matches is dropped even when other policies would keep it (use
    it to exclude, e.g. health checks). Inside an `and` policy a match only fails that `and`.
    Default false."""

    @model_validator(mode="after")
    def _regexps(self):
        if self.enabled_regex_matching:
            _compile_all(self.values)
        return self


def _compile_all(patterns: list[str]) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"values: invalid regular expression {pattern!r}: {e}") from None
    return compiled


class StringAttributePolicy(PolicyConfig):
    type: Literal["string_attribute"]
    """Keeps traces where a resource or span has a string attribute `key` matching `values`."""
    string_attribute: StringAttributeConfig
    """Options of the string_attribute policy. Required."""

    def evaluator(self) -> Evaluator:
        cfg = self.string_attribute
        if cfg.enabled_regex_matching:
            patterns = _compile_all(cfg.values)

            def matches(value: str) -> bool:
                return any(p.search(value) for p in patterns)
        else:
            exact = frozenset(cfg.values)

            def matches(value: str) -> bool:
                return value in exact

        def evaluate(trace: Trace) -> Decision:
            found = any(
                matches(v.string_value)
                for v in trace.attribute_values(cfg.key)
                if v.WhichOneof("value") == "string_value"
            )
            if cfg.invert_match:
                return Decision.INVERT_NOT_SAMPLED if found else Decision.SAMPLED
            return sampled_if(found)

        return evaluate


class BooleanAttributeConfig(ComponentConfig):
    key: str = Field(min_length=1)
    """Attribute key to look up on resources and spans. Required."""
    value: bool
    """The boolean value that keeps a trace. Required."""


class BooleanAttributePolicy(PolicyConfig):
    type: Literal["boolean_attribute"]
    """Keeps traces where a resource or span has the boolean attribute `key` equal to `value`."""
    boolean_attribute: BooleanAttributeConfig
    """Options of the boolean_attribute policy. Required."""

    def evaluator(self) -> Evaluator:
        key, wanted = self.boolean_attribute.key, self.boolean_attribute.value

        def evaluate(trace: Trace) -> Decision:
            return sampled_if(
                any(
                    v.WhichOneof("value") == "bool_value" and v.bool_value == wanted
                    for v in trace.attribute_values(key)
                )
            )

        return evaluate


class NumericAttributeConfig(ComponentConfig):
    key: str = Field(min_length=1)
    """Attribute key to look up on resources and spans. Required."""
    min_value: float | None = None
    """Smallest value that keeps a trace, inclusive. Default unset: no lower bound. At least
    one of min_value and max_value is required."""
    max_value: float | None = None
    """Largest value that keeps a trace, inclusive. Default unset: no upper bound."""

    @model_validator(mode="after")
    def _bounds(self):
        if self.min_value is None and self.max_value is None:
            raise ValueError("set min_value, max_value or both")
        low, high = self.min_value, self.max_value
        if low is not None and high is not None and high < low:
            raise ValueError(f"max_value ({high}) must be at least min_value ({low})")
        return self


class NumericAttributePolicy(PolicyConfig):
    type: Literal["numeric_attribute"]
    """Keeps traces where a resource or span has a number attribute `key` within
    [min_value, max_value]."""
    numeric_attribute: NumericAttributeConfig
    """Options of the numeric_attribute policy. Required."""

    def evaluator(self) -> Evaluator:
        cfg = self.numeric_attribute
        low = -float("inf") if cfg.min_value is None else cfg.min_value
        high = float("inf") if cfg.max_value is None else cfg.max_value

        def evaluate(trace: Trace) -> Decision:
            for v in trace.attribute_values(cfg.key):
                kind = v.WhichOneof("value")
                if kind in ("int_value", "double_value") and low <= getattr(v, kind) <= high:
                    return Decision.SAMPLED
            return Decision.NOT_SAMPLED

        return evaluate
