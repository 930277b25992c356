"""`probabilistic`: keeps a share of traces, chosen by a hash of the trace id.

The hash is FNV-1a (64 bits) over the salt followed by the 16 trace id bytes, as in the OTel
Collector, so every collector with the same salt and percentage keeps the same traces: a trace
whose spans pass through several collectors is kept whole or not at all.
"""

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

DEFAULT_HASH_SALT = "default-hash-seed"

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64 = (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _U64
    return h


class ProbabilisticConfig(ComponentConfig):
    sampling_percentage: float = Field(ge=0, le=100)
    """Share of traces to keep, in percent (0..100). Required. 0 keeps none, 100 keeps all."""
    hash_salt: str = ""
    """Salt mixed into the trace id hash; collectors that must agree on decisions need the same
    salt, and a different salt picks an independent sample. Default empty: a fixed built-in
    salt ("default-hash-seed", the OTel Collector's default)."""


class ProbabilisticPolicy(PolicyConfig):
    type: Literal["probabilistic"]
    """Keeps sampling_percentage percent of traces, the same ones in every collector."""
    probabilistic: ProbabilisticConfig
    """Options of the probabilistic policy. Required."""

    def evaluator(self) -> Evaluator:
        salt = (self.probabilistic.hash_salt or DEFAULT_HASH_SALT).encode()
        # Hashes are uniform over 0..2^64-1; keeping those below the threshold keeps that share.
        threshold = round(self.probabilistic.sampling_percentage / 100 * (1 << 64))

        def evaluate(trace: Trace) -> Decision:
            return sampled_if(fnv1a_64(salt + trace.trace_id) < threshold)

        return evaluate
