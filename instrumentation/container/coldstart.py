"""Cold starts of a service in a container, judged per worker process.

The first COLDTAIL_COLD_REQUESTS (default 1; 0: none) SERVER spans a process starts carry
`coldtail.cold_start=true`, the later ones `false`, all with
`coldtail.cold_start.source=instrumentation`. The cold ones also carry
`coldtail.time_since_start_ms`: from the service's start to the request's start. The service's
start is when coldtail-instrument started the command (the container's start when it is the
container's command); with `configure()` in code instead, the start of the first process that
called it, which the processes it starts inherit.

Per process rather than per task: each worker of a pre-fork server (gunicorn) or of a
multi-process one (uvicorn --workers) imports lazily, opens its connection pools and fills its
caches on its own first requests, so each worker's first request pays a cold start. A worker the
server replaces later (gunicorn's max_requests, a crashed worker) is cold again, for the same
reason; its time since start, much longer than a new task's, tells the two apart.
"""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import SpanKind

from instrumentation.attributes import (
    COLD_START,
    COLD_START_SOURCE,
    SOURCE_INSTRUMENTATION,
    TIME_SINCE_START_MS,
)


class ColdStartProcessor(SpanProcessor):
    """Marks SERVER spans as they start. Thread-safe: servers start spans on many threads."""

    def __init__(self, cold_requests: int, start_ns: int) -> None:
        """`start_ns`: the service's start, Unix ns."""
        self.cold_requests = cold_requests
        self.start_ns = start_ns
        self._served = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Start counting again, as in a new process (a forked child)."""
        # The parent's lock may have been held by another thread at the fork.
        self._lock = threading.Lock()
        self._served = 0

    def on_start(self, span, parent_context=None) -> None:
        if span.kind is not SpanKind.SERVER:
            return
        with self._lock:
            cold = self._served < self.cold_requests
            if cold:
                self._served += 1
        span.set_attribute(COLD_START, cold)
        span.set_attribute(COLD_START_SOURCE, SOURCE_INSTRUMENTATION)
        if cold:
            span.set_attribute(TIME_SINCE_START_MS, (span.start_time - self.start_ns) / 1e6)
