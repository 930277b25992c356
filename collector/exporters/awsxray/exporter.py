"""Exporter `awsxray`: spans to AWS X-Ray as segment documents (segments.py) through
PutTraceSegments, at most 50 documents a call, signed and sent by botocore's X-Ray client from
a thread of the exporter's own, inside the shared sender chain (queue -> retry -> timeout).

Throttling and server errors are retried; documents X-Ray lists as unprocessed are reported as
rejected (partial success); other client errors are permanent.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from pydantic import Field

from collector.aws.session import call, service_client
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.consumer import PermanentError
from collector.core.pdata import count_spans
from collector.core.signals import Signal
from collector.exporters.awsxray.segments import SegmentWriter
from collector.exporters.sender import Exporter, SenderConfig

MAX_DOCUMENTS = 50  # PutTraceSegments' limit per call


class Config(SenderConfig):
    region: str = ""
    """Region of the X-Ray endpoint (default empty = AWS_REGION or the shared config's)."""
    endpoint: str = ""
    """X-Ray endpoint URL (default empty = the region's)."""
    role_arn: str = ""
    """Role to assume with STS for the calls (default empty = the credential chain's own)."""
    indexed_attributes: list[str] = Field(default_factory=list)
    """Span attributes sent as annotations, which X-Ray indexes for search (default empty);
    the rest go to metadata. coldtail's cold-start and latency-tail tags always are."""
    index_all_attributes: bool = False
    """Send every string, number and boolean attribute as an annotation (default false)."""
    aws_log_groups: list[str] = Field(default_factory=list)
    """CloudWatch log groups linked from each segment (default empty = the resource's
    aws.log.group.names)."""
    local_mode: bool = False
    """Accepted for compatibility with ADOT configs: this exporter never reads instance
    metadata, so it has no effect. Default false."""


class XRayExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._writer = SegmentWriter(
            config.indexed_attributes, config.index_all_attributes, config.aws_log_groups
        )
        self._client: Any = None

    async def connect(self) -> None:
        cfg = self.config
        self._client = await asyncio.to_thread(
            service_client, "xray", cfg.region, cfg.role_arn, cfg.endpoint
        )

    async def disconnect(self) -> None:
        self._client = None

    async def push(self, batch) -> None:
        client = self._client
        assert client is not None, "push before connect"
        documents = list(self._writer.documents(batch))
        rejected, messages = 0, []
        for start in range(0, len(documents), MAX_DOCUMENTS):
            chunk = documents[start : start + MAX_DOCUMENTS]
            put = functools.partial(client.put_trace_segments, TraceSegmentDocuments=chunk)
            response = await self.run_blocking(call, put, "PutTraceSegments")
            for failed in response.get("UnprocessedTraceSegments", []):
                rejected += 1
                messages.append(f"{failed.get('Id')}: {failed.get('Message')}")
        if rejected:
            raise PermanentError(
                f"X-Ray did not process {rejected} segments: {'; '.join(messages[:3])}",
                rejected=min(rejected, count_spans(batch)),
            )


factory = Factory(
    kind=Kind.EXPORTER,
    type="awsxray",
    config=Config,
    create=XRayExporter,
    signals={Signal.TRACES: Stability.ALPHA},
    description="Sends spans to AWS X-Ray as segment documents (PutTraceSegments).",
)
