"""Receiver `awsxray`: takes the place of the X-Ray daemon, so that applications instrumented
with the X-Ray SDKs keep working unchanged: segment documents arrive over UDP (each datagram a
header line `{"format": "json", "version": 1}` and one document) and become spans
(segments.py); the `proxy_server` forwards the SDKs' sampling requests to X-Ray, signed
(collector/aws/signing_proxy.py), on the same port number over TCP.

UDP has no back-pressure and no answer: datagrams wait in a bounded queue that one task drains
into the pipeline, everything waiting at once as one batch. A full queue, a pipeline refusal and
a malformed datagram drop data; each is counted as refused spans and logged, at most one line
per interval so that a misbehaving sender cannot flood the log.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from collector.aws.signing_proxy import SigningProxy, SigningProxyConfig
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.consumer import Consumer
from collector.core.endpoints import listen_udp
from collector.core.pdata import Traces
from collector.core.signals import Signal
from collector.core.telemetry import DropLog
from collector.receivers.awsxray.segments import InvalidSegment, document_spans

SCOPE_NAME = "coldtail/awsxray"
_MAX_QUEUED = 10_000  # datagrams; at most 64 KiB each
_MAX_BATCH = 1_000  # datagrams pushed as one batch


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:2000"
    """UDP address the segments arrive on, where the X-Ray SDKs look for the X-Ray daemon
    (default 127.0.0.1:2000)."""
    transport: Literal["udp"] = "udp"
    """The X-Ray SDKs send segments over UDP only (default udp)."""
    proxy_server: SigningProxyConfig | None = Field(default_factory=SigningProxyConfig)
    """The TCP proxy for the SDKs' sampling requests, which it signs and forwards to X-Ray
    (default on, at 127.0.0.1:2000); null turns it off."""


def parse_datagram(datagram: bytes) -> dict:
    """The segment document of one datagram; InvalidSegment when the header or the JSON is
    not the X-Ray daemon protocol's."""
    header, newline, body = datagram.partition(b"\n")
    try:
        fields = json.loads(header)
    except ValueError:
        fields = None
    if not newline or not isinstance(fields, dict):
        raise InvalidSegment(
            'a datagram must start with the header {"format": "json", "version": 1}'
        )
    if fields.get("format") != "json" or fields.get("version") != 1:
        raise InvalidSegment(
            f"unsupported header {header[:100]!r}: expected format json, version 1"
        )
    try:
        return json.loads(body)
    except ValueError as e:
        raise InvalidSegment(f"the segment is not JSON: {e}") from None


class XRayReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self.next = next[Signal.TRACES]
        self.log = settings.logger
        self.endpoint = ""
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.TRACES, str(settings.id), "udp"
        )
        self.proxy = SigningProxy(config.proxy_server, self.log) if config.proxy_server else None
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._drain: asyncio.Task | None = None
        self._drops = DropLog(self.log, "X-Ray segments dropped", "spans")

    async def start(self, host: Host) -> None:
        self._transport, self.endpoint = await listen_udp(self.config.endpoint, self.enqueue)
        self._drain = asyncio.create_task(self._drain_forever())
        if self.proxy is not None:
            try:
                await self.proxy.start()
            except BaseException:
                await self.shutdown()
                raise
        self.log.info(
            "X-Ray segments listening", extra={"kv": {"endpoint": f"udp {self.endpoint}"}}
        )

    async def shutdown(self) -> None:
        if self.proxy is not None:
            await self.proxy.shutdown()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._drain is not None:
            drain, self._drain = self._drain, None
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
            # What arrived before the socket closed still goes down the pipeline.
            while self._queue:
                await self._push_waiting()
        self._drops.flush()

    def enqueue(self, datagram: bytes) -> None:
        if len(self._queue) >= _MAX_QUEUED:
            self._refused.inc()
            self._drops.drop("the queue is full")
            return
        self._queue.append(datagram)
        self._ready.set()

    async def _drain_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                await self._push_waiting()

    async def _push_waiting(self) -> None:
        batch = Traces()
        count = 0
        for _ in range(min(len(self._queue), _MAX_BATCH)):
            datagram = self._queue.popleft()
            try:
                rs = document_spans(parse_datagram(datagram))
            except InvalidSegment as e:
                self._refused.inc()
                self._drops.drop(f"invalid segment: {e}")
                continue
            rs.scope_spans[0].scope.name = SCOPE_NAME
            count += len(rs.scope_spans[0].spans)
            batch.resource_spans.append(rs)
        if count == 0:
            return
        try:
            await self.next.consume(batch)
        except Exception as e:  # UDP cannot ask the sender to retry: the spans are lost
            self._refused.inc(count)
            self._drops.drop(f"the pipeline refused the spans: {e}", count)
            return
        self._accepted.inc(count)
        # Let datagrams that arrived meanwhile join the next batch.
        await asyncio.sleep(0)


factory = Factory(
    kind=Kind.RECEIVER,
    type="awsxray",
    config=Config,
    create=XRayReceiver,
    signals={Signal.TRACES: Stability.ALPHA},
    description=(
        "Segments from the X-Ray SDKs over UDP as spans, as the X-Ray daemon takes them, and "
        "a signing proxy for their sampling requests."
    ),
)
