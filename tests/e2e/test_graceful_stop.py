"""SIGTERM during steady load, backend up: every span acknowledged to the client reaches the
backend, and the collector exits 0."""

import asyncio
import os
import signal
import threading

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from collector.core.signals import Signal
from tests.support.backend import Backend
from tests.support.builders import make_traces
from tests.support.process import CollectorProcess, free_port

CONFIG = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  batch: {{timeout: 500ms, send_batch_size: 2000}}
exporters:
  otlp:
    endpoint: "{backend}"
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 50ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"""


def send_until_refused(port: int, acked: set, started: threading.Event, max_requests: int):
    """Export 20-span requests until the collector refuses; record acknowledged span ids."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        for i in range(max_requests):
            batch = make_traces(20)
            try:
                stub.Export(batch, timeout=5)
            except grpc.RpcError:
                return
            acked.update(s.span_id for s in batch.resource_spans[0].scope_spans[0].spans)
            if i == 10:
                started.set()


async def test_sigterm_under_load_loses_no_acknowledged_span(tmp_path):
    async with Backend() as backend:
        port = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(port=port, backend=backend.grpc_endpoint))
        collector = CollectorProcess(config)
        await asyncio.to_thread(collector.start)
        acked: set[bytes] = set()
        started = threading.Event()
        load = asyncio.create_task(
            asyncio.to_thread(send_until_refused, port, acked, started, 20_000)
        )
        try:
            assert await asyncio.to_thread(started.wait, 20)
            await asyncio.sleep(0.5)
            os.kill(collector.proc.pid, signal.SIGTERM)
            code = await asyncio.to_thread(collector.proc.wait, 30)
            await load
        finally:
            collector.kill()
        assert code == 0, collector.log
        received = {
            s.span_id
            for batch in backend.accepted(Signal.TRACES)
            for rs in batch.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        }
        assert len(acked) > 200
        assert acked <= received, f"{len(acked - received)} acknowledged spans lost"
