"""What the service's components report about its health, for the health_check extension."""

from __future__ import annotations

import time
from collections import deque


class ExportFailures:
    """When exporters' send attempts failed (monotonic seconds), the latest `keep` of them."""

    def __init__(self, keep: int = 10_000) -> None:
        self._times: deque[float] = deque(maxlen=keep)

    def record(self) -> None:
        self._times.append(time.monotonic())

    def since(self, seconds: float) -> int:
        """Failures within the last `seconds`."""
        cutoff = time.monotonic() - seconds
        count = 0
        for at in reversed(self._times):
            if at < cutoff:
                break
            count += 1
        return count
