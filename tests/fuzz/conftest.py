"""Hypothesis profiles: a short bounded run in `make test`, a long one in `make fuzz`
(HYPOTHESIS_PROFILE=fuzz, untimed)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "suite", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))
