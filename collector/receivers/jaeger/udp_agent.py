"""The Jaeger agent's UDP protocol: each datagram one Thrift `Agent.emitBatch` call, in the
compact encoding (port 6831, what Jaeger clients and OpenTelemetry's Jaeger exporters send by
default) or the binary one (port 6832).

UDP has no answer and no back-pressure: datagrams wait in a bounded queue (`queue_size`) that
`workers` tasks drain, each taking everything waiting (up to a bound) down the pipeline as one
batch. A full queue, an oversized or malformed datagram (Zipkin's `emitZipkinBatch` included)
and a pipeline refusal drop data; each is counted as refused and logged, at most one line per
interval and reason, so that a misbehaving sender cannot flood the log.
"""

from __future__ import annotations

import asyncio
import socket

from collector.core.endpoints import listen_udp
from collector.core.telemetry import DropLog
from collector.receivers.jaeger.config import UdpConfig
from collector.receivers.jaeger.intake import Intake
from collector.receivers.jaeger.model import Batch
from collector.receivers.jaeger.thrift_codec import UnsupportedMessage, decode_agent_message
from collector.receivers.jaeger.translate import traces

_MAX_BATCH = 1_000  # datagrams pushed as one batch
_DATAGRAMS_PER_YIELD = 50  # decoded before other tasks get the event loop


class AgentServer:
    def __init__(self, config: UdpConfig, compact: bool, transport: str, intake: Intake) -> None:
        """`transport` names it in the receiver's counters (`udp_thrift_compact`, ...)."""
        self.config = config
        self.compact = compact
        self.transport = transport
        self.intake = intake
        encoding = "compact" if compact else "binary"
        self._drops = DropLog(intake.log, f"Jaeger agent ({encoding}) data dropped", "datagrams")
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(config.queue_size)
        self._socket: asyncio.DatagramTransport | None = None
        self._workers: list[asyncio.Task] = []

    async def start(self) -> str:
        """The bound host:port; OSError when the endpoint cannot be listened on."""
        self._socket, endpoint = await listen_udp(self.config.endpoint, self.enqueue)
        if self.config.socket_buffer_size:
            sock = self._socket.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.socket_buffer_size)
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.config.workers)]
        return endpoint

    async def stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._workers:
            # What arrived before the socket closed still goes down the pipeline.
            await self._queue.join()
            for worker in self._workers:
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            self._workers = []
        self._drops.flush()

    def enqueue(self, datagram: bytes) -> None:
        if len(datagram) > self.config.max_packet_size:
            self._drop(f"datagram larger than max_packet_size ({self.config.max_packet_size})")
            return
        try:
            self._queue.put_nowait(datagram)
        except asyncio.QueueFull:
            self._drop("the queue is full")

    def _drop(self, reason: str) -> None:
        # A datagram that was not decoded has an unknown number of spans: counted as one.
        self.intake.refused(self.transport, 1)
        self._drops.drop(reason)

    async def _work(self) -> None:
        while True:
            datagrams = [await self._queue.get()]
            while len(datagrams) < _MAX_BATCH and not self._queue.empty():
                datagrams.append(self._queue.get_nowait())
            try:
                await self._push(datagrams)
            except Exception:
                self.intake.log.exception("Jaeger agent datagrams lost")
                self._drops.drop("internal error", len(datagrams))
            finally:
                for _ in datagrams:
                    self._queue.task_done()

    async def _push(self, datagrams: list[bytes]) -> None:
        batches: list[Batch] = []
        for i, datagram in enumerate(datagrams):
            if i and not i % _DATAGRAMS_PER_YIELD:
                await asyncio.sleep(0)  # other work on the event loop in between
            try:
                batches.append(decode_agent_message(datagram, self.compact))
            except UnsupportedMessage as e:
                self._drop(str(e))
            except ValueError as e:
                self._drop(f"malformed datagram: {e}")
        if not batches:
            return
        batch = traces(batches)
        try:
            await self.intake.consume(batch, self.transport)
        except Exception as e:  # UDP cannot ask the sender to retry: the spans are lost
            self._drops.drop(f"the pipeline refused the spans: {e}", len(batches))
