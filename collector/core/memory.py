"""The process's memory pressure, as the `memory_limiter` processors last measured it, shared
through the service (`settings.shared.get(MemoryPressure)`) so that receivers can refuse a
request before parsing it rather than after: a parsed request takes several times its size."""

from __future__ import annotations

# Decoded protobuf takes several times its wire size in Python objects.
EXPANSION = 4


class MemoryPressure:
    def __init__(self) -> None:
        self.refusing = False
        # Bytes left below the soft limit; None while no limiter measures.
        self.headroom: int | None = None

    def admits(self, size: int) -> str | None:
        """None when a request of `size` bytes may be parsed, else why not."""
        if self.refusing:
            return "memory usage is above the soft limit"
        if self.headroom is not None and size * EXPANSION > self.headroom:
            return (
                f"a request of {size} bytes would take more memory than the "
                f"{self.headroom >> 20} MiB left below the soft limit"
            )
        return None
