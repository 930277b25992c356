"""What every protocol of the `jaeger` receiver hands its spans to: the pipeline, with the
receiver's accepted / refused counters per transport."""

from __future__ import annotations

import math

from collector.core.component import Settings
from collector.core.consumer import Consumer, RetryableError
from collector.core.memory import MemoryPressure
from collector.core.pdata import Traces, count_spans
from collector.core.signals import Signal

# Transport names as the OTel Collector's Jaeger receiver reports them.
GRPC = "grpc"
THRIFT_HTTP = "collector_http"
THRIFT_BINARY = "udp_thrift_binary"
THRIFT_COMPACT = "udp_thrift_compact"


def retry_after_s(error: RetryableError) -> int:
    """Whole seconds a refused client should wait: the pipeline's hint, else 1."""
    return 1 if error.retry_after is None else max(0, math.ceil(error.retry_after))


class Intake:
    def __init__(self, settings: Settings, next: Consumer) -> None:
        self.next = next
        self.log = settings.logger
        self.pressure = settings.shared.get(MemoryPressure)
        self._counters = {
            transport: settings.telemetry.receiver_counters(
                Signal.TRACES, str(settings.id), transport
            )
            for transport in (GRPC, THRIFT_HTTP, THRIFT_BINARY, THRIFT_COMPACT)
        }

    def refused(self, transport: str, spans: int) -> None:
        """Count spans that never reached the pipeline (undecodable, dropped)."""
        self._counters[transport][1].inc(spans)

    async def consume(self, batch: Traces, transport: str) -> None:
        """Hand `batch` to the pipeline and count it; the pipeline's errors propagate."""
        spans = count_spans(batch)
        if spans == 0:
            return
        accepted, refused = self._counters[transport]
        try:
            await self.next.consume(batch)
        except BaseException:
            refused.inc(spans)
            raise
        accepted.inc(spans)
