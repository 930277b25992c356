"""`composite`: sub-policies asked in a set order, each with its share of a span budget per second.

How a trace is decided, as in the OTel Collector's composite policy:

- Sub-policies are asked in turn; the first that would keep the trace decides it. If the spans
  that sub-policy took in the current second plus the trace's spans stay within its share (and
  within max_total_spans_per_second), the trace is kept and its spans are counted against that
  share. Otherwise the trace is not kept and no later sub-policy is asked: a trace is never
  passed on to another sub-policy's share. A trace no sub-policy keeps is not kept.
- Counts restart at each whole second of the clock (monotonic here, wall-clock seconds in the
  Collector). A trace refused for want of room is not counted, so a smaller trace may still
  fit later in the same second.
- An inverted attribute match inside the composite only means that sub-policy does not keep the
  trace; it never drops the trace for the other top-level policies. An inverted policy that
  does not match keeps the trace, like any other sub-policy that keeps it.
- Shares: a rate_allocation entry with percent p > 0 gives int(p / 100 * max_total). A
  sub-policy without an entry, or with percent 0, gets int(max_total / number of sub-policies):
  an equal part of the whole budget, not of what the allocated sub-policies leave. (The
  Collector gives sub-policies left out of rate_allocation this share since its fix for
  open-telemetry/opentelemetry-collector-contrib#49828; older releases gave them 0.) The shares
  can therefore add up to more than max_total_spans_per_second (e.g. 80% and one sub-policy
  without an entry out of two: 80% + 50%). Each share is checked on its own and counts are not
  summed across sub-policies, so the composite then keeps up to the sum of its shares per
  second, as the Collector does.
- Sub-policy types are those the Collector allows inside composite: every type but `composite`
  itself, `and` included.

Where coldtail differs: the Collector asks sub-policies in the order of composite_sub_policy and
does not read policy_order; coldtail asks them in policy_order, as the Collector documents,
then those policy_order leaves out, in their listed order. The Collector accepts names in
policy_order and rate_allocation that match no sub-policy, and percentages adding up to more
than 100; coldtail rejects them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from collector.core.config_types import ComponentConfig
from collector.processors.tail_sampling.policies.and_ import AndPolicy, BasicPolicy
from collector.processors.tail_sampling.policies.base import Decision, Evaluator, PolicyConfig
from collector.processors.tail_sampling.trace import Trace

CompositeSubPolicy = Annotated[BasicPolicy | AndPolicy, Field(discriminator="type")]


class RateAllocation(ComponentConfig):
    policy: str = Field(min_length=1)
    """Name of the sub-policy this share is for. Required."""
    percent: int = Field(0, ge=0, le=100)
    """Share of max_total_spans_per_second for that sub-policy, in percent (0..100). Default 0:
    the equal share, max_total_spans_per_second divided by the number of sub-policies."""


class CompositeConfig(ComponentConfig):
    max_total_spans_per_second: int = Field(ge=1)
    """Span budget per second that the sub-policies' shares are taken from. Required, at
    least 1."""
    # Declared before the fields naming sub-policies, so their validators can see the names.
    composite_sub_policy: list[CompositeSubPolicy] = Field(min_length=1)
    """Sub-policies, each {name, type, <type>: {...}}; any type but `composite`, `and`
    included. Names are unique. Required, not empty."""
    policy_order: list[str] = Field(default_factory=list)
    """Names of sub-policies in the order they are asked; the first that would keep a trace
    decides it. Sub-policies left out are asked after, in their listed order. Default empty:
    the listed order."""
    rate_allocation: list[RateAllocation] = Field(default_factory=list)
    """Shares of the budget, each {policy, percent}; the percentages add up to 100 at most. A
    sub-policy without an entry gets max_total_spans_per_second divided by the number of
    sub-policies (a part of the whole budget, not of what the entries leave). Default empty."""

    @field_validator("composite_sub_policy")
    @classmethod
    def _unique_names(cls, policies: list) -> list:
        seen: set[str] = set()
        for policy in policies:
            if policy.name in seen:
                raise ValueError(f"duplicate sub-policy name {policy.name!r}")
            seen.add(policy.name)
        return policies

    @field_validator("policy_order")
    @classmethod
    def _known_order(cls, order: list[str], info: ValidationInfo) -> list[str]:
        names = _sub_policy_names(info)
        if names is not None:
            _check_names(order, names)
        return order

    @field_validator("rate_allocation")
    @classmethod
    def _known_allocations(
        cls, allocations: list[RateAllocation], info: ValidationInfo
    ) -> list[RateAllocation]:
        names = _sub_policy_names(info)
        if names is not None:
            _check_names([a.policy for a in allocations], names)
        total = sum(a.percent for a in allocations)
        if total > 100:
            raise ValueError(f"percentages add up to {total}, more than 100")
        return allocations


def _sub_policy_names(info: ValidationInfo) -> list[str] | None:
    """The sub-policies' names, or None when composite_sub_policy itself is invalid."""
    policies = info.data.get("composite_sub_policy")
    return None if policies is None else [p.name for p in policies]


def _check_names(named: list[str], names: list[str]) -> None:
    seen: set[str] = set()
    for name in named:
        if name not in names:
            raise ValueError(f"{name!r} names no sub-policy; sub-policies: {', '.join(names)}")
        if name in seen:
            raise ValueError(f"{name!r} is named twice")
        seen.add(name)


class CompositePolicy(PolicyConfig):
    type: Literal["composite"]
    """Asks sub-policies in policy_order, each keeping traces within its share of a budget of
    spans per second."""
    composite: CompositeConfig
    """Options of the composite policy. Required."""

    def shares(self) -> dict[str, int]:
        """Spans per second each sub-policy may keep, by name."""
        cfg = self.composite
        total = cfg.max_total_spans_per_second
        percents = {a.policy: a.percent for a in cfg.rate_allocation}
        equal = int(total / len(cfg.composite_sub_policy))
        return {
            p.name: int(percents[p.name] / 100 * total) if percents.get(p.name) else equal
            for p in cfg.composite_sub_policy
        }

    def evaluator(self, clock: Callable[[], float] = time.monotonic) -> Evaluator:
        cfg = self.composite
        by_name = {p.name: p for p in cfg.composite_sub_policy}
        order = cfg.policy_order + [n for n in by_name if n not in cfg.policy_order]
        # No share exceeds the total (percentages are at most 100), so checking the share is
        # enough where the Collector checks both.
        shares = self.shares()
        subs = [(name, by_name[name].evaluator(), shares[name]) for name in order]
        second = -1
        kept = dict.fromkeys(order, 0)

        def evaluate(trace: Trace) -> Decision:
            nonlocal second
            now = int(clock())
            if now != second:
                second = now
                kept.update(dict.fromkeys(kept, 0))
            for name, sub_evaluate, share in subs:
                if sub_evaluate(trace) is not Decision.SAMPLED:
                    continue
                count = kept[name] + sum(len(f.spans) for f in trace.fragments)
                if count > share:
                    return Decision.NOT_SAMPLED
                kept[name] = count
                return Decision.SAMPLED
            return Decision.NOT_SAMPLED

        return evaluate
