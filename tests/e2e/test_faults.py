"""Faults between real processes: a client numbering every span, a `coldtail run` process and an
OTLP backend process (tests/support/backend.py) that writes what it accepts. Each case counts
spans sent, acknowledged to the client, delivered to the backend, duplicated and lost (acked
but never delivered), prints its row of the table, and asserts that nothing acknowledged is
lost. Bounded: a few thousand spans and outages of seconds, on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from collector.core import otlpjson
from collector.core.pdata import Traces, set_attr
from tests.support.builders import make_traces
from tests.support.process import CollectorProcess, free_port

pytestmark = pytest.mark.slow

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}"}}
processors:
  batch: {{send_batch_size: 200, timeout: 50ms}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
    timeout: 1s
    sending_queue: {{queue_size: {queue}, num_consumers: 2{queue_storage}}}
    retry_on_failure: {{initial_interval: {retry}, max_interval: {retry}, max_elapsed_time: 0}}
{storage}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [{processors}], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
  shutdown_timeout: 20s
  extensions: [{extensions}]
"""
STORAGE = """extensions:
  file_storage: {{directory: "{directory}", create_directory: true}}"""


@dataclass
class Row:
    case: str
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    duplicated: int = 0
    lost: int = 0

    def __str__(self) -> str:
        return (
            f"| {self.case} | {self.sent} | {self.acked} | {self.delivered} | "
            f"{self.duplicated} | {self.lost} |"
        )


class BackendProcess:
    """The OTLP backend as a process on a fixed port, so that it can die and come back."""

    def __init__(self, out: Path, port: int) -> None:
        self.out, self.port = out, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        args = [sys.executable, "-m", "tests.support.backend", "--out", str(self.out)]
        self.proc = subprocess.Popen(
            [*args, "--grpc-port", str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        json.loads(self.proc.stdout.readline())  # it listens

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def sequence_numbers(self) -> Counter:
        seen: Counter = Counter()
        if not self.out.exists():
            return seen
        for line in self.out.read_text().splitlines():
            batch = otlpjson.parse(line, Traces)
            for rs in batch.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        for kv in span.attributes:
                            if kv.key == "seq":
                                seen[kv.value.int_value] += 1
        return seen


def numbered(first: int, spans: int, payload: int = 0) -> Traces:
    """`spans` spans numbered from `first` by their `seq` attribute, each with `payload` bytes
    of attribute besides."""
    batch = make_traces(spans)
    for i, span in enumerate(batch.resource_spans[0].scope_spans[0].spans):
        set_attr(span.attributes, "seq", first + i)
        if payload:
            set_attr(span.attributes, "payload", "x" * payload)
    return batch


def send_all(port: int, requests: int, spans: int, deadline_s: float) -> set[int]:
    """Send `requests` numbered requests, each retried on UNAVAILABLE (as an OTLP client must)
    until acknowledged or the deadline; the sequence numbers acknowledged."""
    acked: set[int] = set()
    stop = time.monotonic() + deadline_s
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = TraceServiceStub(channel)
        for r in range(requests):
            batch = numbered(r * spans, spans)
            while time.monotonic() < stop:
                try:
                    stub.Export(batch, timeout=5)
                except grpc.RpcError as e:
                    if e.code() not in (
                        grpc.StatusCode.UNAVAILABLE,
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                    ):
                        raise
                    time.sleep(0.05)
                    continue
                acked.update(range(r * spans, (r + 1) * spans))
                break
    return acked


def tally(case: str, sent: int, acked: set[int], backend: BackendProcess) -> Row:
    seen = backend.sequence_numbers()
    row = Row(
        case,
        sent=sent,
        acked=len(acked),
        delivered=sum(1 for n in seen if n in acked or n < sent),
        duplicated=sum(count - 1 for count in seen.values()),
        lost=len(acked - set(seen)),
    )
    print(f"\n{row}")
    return row


async def delivered(
    backend: BackendProcess, acked: set[int], process: CollectorProcess, timeout: float = 30
) -> None:
    """Wait until the backend holds every acknowledged span; fails with the collector's log."""
    deadline = time.monotonic() + timeout
    while len(set(backend.sequence_numbers()) & acked) < len(acked):
        assert time.monotonic() < deadline, process.log
        await asyncio.sleep(0.2)


def collector(
    tmp_path: Path,
    backend_port: int,
    queue: int,
    retry: str,
    persistent: bool = False,
    directory: Path | None = None,
    queue_batch: bool = False,
) -> tuple[CollectorProcess, int]:
    port = free_port()
    config = tmp_path / "collector.yaml"
    storage = STORAGE.format(directory=directory or tmp_path / "queue") if persistent else ""
    config.write_text(
        CONFIG.format(
            port=port,
            backend=backend_port,
            queue=queue,
            retry=retry,
            metrics=free_port(),
            storage=storage,
            queue_storage=(", storage: file_storage" if persistent else "")
            + (", batch: {min_size: 1000, flush_timeout: 100ms}" if queue_batch else ""),
            extensions="file_storage" if persistent else "",
            # The batch processor holds data in memory: with a persistent queue, a client is
            # acknowledged only once its data is on disk when nothing stands in between.
            processors="" if persistent else "batch",
        )
    )
    return CollectorProcess(config), port


async def test_a_backend_outage_behind_the_batch_processor_loses_nothing_acknowledged(tmp_path):
    backend_port = free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    process, port = collector(tmp_path, backend_port, queue=5, retry="200ms")
    await asyncio.to_thread(process.start)
    try:
        # The backend is down while the client sends: the queue fills, then the batch
        # processor holds one batch and refuses, and the client retries.
        sending = asyncio.create_task(asyncio.to_thread(send_all, port, 100, 100, 60))
        await asyncio.sleep(3)
        await asyncio.to_thread(backend.start)
        acked = await sending
        assert await asyncio.to_thread(process.stop) == 0, process.log
    finally:
        process.kill()
        backend.kill()
    row = tally("backend down 3 s, queue 5, batch in front", 10_000, acked, backend)
    assert row.acked == 10_000 and row.lost == 0


async def test_sigterm_just_after_an_outage_sends_what_waited_in_a_long_backoff(tmp_path):
    backend_port = free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    process, port = collector(tmp_path, backend_port, queue=100, retry="30s")
    await asyncio.to_thread(process.start)
    try:
        acked = await asyncio.to_thread(send_all, port, 20, 100, 30)
        await asyncio.sleep(1.5)  # every batch failed once and sleeps in a 30 s backoff
        await asyncio.to_thread(backend.start)
        await asyncio.sleep(0.5)
        started = time.monotonic()
        assert await asyncio.to_thread(process.stop, signal.SIGTERM) == 0, process.log
        stop_s = time.monotonic() - started
    finally:
        process.kill()
        backend.kill()
    row = tally("SIGTERM 0.5 s after the backend returned (30 s backoff)", 2_000, acked, backend)
    assert row.acked == 2_000 and row.lost == 0
    assert stop_s < 15, "the stop waited out the backoff instead of retrying at once"


class CountingExporter(SpanExporter):
    """The SDK's OTLP/gRPC exporter, remembering the sequence numbers it reported SUCCESS for."""

    def __init__(self, endpoint: str) -> None:
        self.inner = OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=30)
        self.acked: set[int] = set()

    def export(self, spans) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.acked.update(int(span.attributes["seq"]) for span in spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def sdk_spans(port: int, count: int) -> set[int]:
    exporter = CountingExporter(f"127.0.0.1:{port}")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=count))
    tracer = provider.get_tracer("faults")
    for seq in range(count):
        with tracer.start_as_current_span("GET /orders/{id}") as span:
            span.set_attribute("seq", seq)
    provider.shutdown()  # flushes, retrying UNAVAILABLE until the exporter's timeout
    return exporter.acked


async def test_the_otel_sdk_through_an_outage_behind_the_batch_processor(tmp_path):
    backend_port = free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    process, port = collector(tmp_path, backend_port, queue=5, retry="200ms")
    await asyncio.to_thread(process.start)
    try:
        sending = asyncio.create_task(asyncio.to_thread(sdk_spans, port, 5_000))
        await asyncio.sleep(3)
        await asyncio.to_thread(backend.start)
        acked = await sending
        assert await asyncio.to_thread(process.stop) == 0, process.log
    finally:
        process.kill()
        backend.kill()
    row = tally("the OTel Python SDK, backend down 3 s, batch in front", 5_000, acked, backend)
    assert row.acked == 5_000 and row.lost == 0


@pytest.mark.parametrize("queue_batch", [False, True], ids=["", "batching in the queue"])
async def test_sigkill_with_the_persistent_queue_then_a_restart_sends_everything(
    tmp_path, queue_batch
):
    backend_port = free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    options = dict(queue=200, retry="200ms", persistent=True, queue_batch=queue_batch)
    process, port = collector(tmp_path, backend_port, **options)
    await asyncio.to_thread(process.start)
    try:
        acked = await asyncio.to_thread(send_all, port, 50, 100, 30)
        process.kill()  # SIGKILL at once: nothing gets to run
        await asyncio.to_thread(backend.start)
        process, port = collector(tmp_path, backend_port, **options)
        await asyncio.to_thread(process.start)
        await delivered(backend, acked, process)
        assert await asyncio.to_thread(process.stop) == 0, process.log
    finally:
        process.kill()
        backend.kill()
    case = "SIGKILL with the persistent queue" + (", batching in it" if queue_batch else "")
    row = tally(f"{case}, then a restart", 5_000, acked, backend)
    assert row.acked == 5_000 and row.lost == 0


@contextlib.contextmanager
def small_disk(path: Path, size: str, *options: str):
    """A tmpfs of `size` mounted at `path` for the test (it needs root, as the suite runs)."""
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs"]
    done = subprocess.run([*mount, str(path)], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_disk_refuses_with_retry_and_loses_nothing_acknowledged(tmp_path):
    backend_port = free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    with small_disk(tmp_path / "disk", "256k") as disk:
        process, port = collector(
            tmp_path, backend_port, queue=200, retry="200ms", persistent=True, directory=disk
        )
        await asyncio.to_thread(process.start)
        try:
            # Backend down: every acknowledged request is a file on the 256 KiB disk.
            acked, refused = await asyncio.to_thread(flood, port, 0, 40, 100, 100)
            assert refused > 0 and acked, (len(acked), refused)
            assert process.proc is not None and process.proc.poll() is None
            await asyncio.to_thread(backend.start)
            await delivered(backend, acked, process)
            assert "persistent queue cannot store" in process.log
            assert "No space left on device" in process.log
            # Sent, the records are gone from the disk, which takes new data again.
            more, refused_after = await asyncio.to_thread(flood, port, 100_000, 5, 100, 100)
            assert refused_after == 0 and len(more) == 500
            assert await asyncio.to_thread(process.stop) == 0, process.log
        finally:
            process.kill()
            backend.kill()
    row = tally("disk full under the persistent queue", 4_000, acked, backend)
    assert row.lost == 0


async def test_a_read_only_queue_directory_is_a_clear_startup_error(tmp_path):
    with small_disk(tmp_path / "disk", "64k", "ro") as disk:
        process, _ = collector(
            tmp_path, free_port(), queue=10, retry="200ms", persistent=True, directory=disk
        )
        with pytest.raises(RuntimeError) as failed:
            await asyncio.to_thread(process.start)
    assert f"{disk} is not writable" in str(failed.value)
    assert "Traceback" not in str(failed.value)


LIMITED = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", max_recv_msg_size_mib: 64}}
processors:
  memory_limiter: {{check_interval: 200ms, limit_mib: {limit}, spike_limit_mib: 80}}
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
    sending_queue: {{queue_size: 1000, num_consumers: 2}}
    retry_on_failure: {{initial_interval: 200ms, max_interval: 200ms, max_elapsed_time: 0}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [memory_limiter], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
"""


def queued(metrics_port: int) -> float:
    """The collector's own otelcol_exporter_queue_size."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("otelcol_exporter_queue_size{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no otelcol_exporter_queue_size")


def flood(
    port: int, first: int, requests: int, spans: int, payload: int = 0
) -> tuple[set[int], int]:
    """Send numbered requests once each, without retrying; (acked, refused requests)."""
    acked: set[int] = set()
    refused = 0
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stub = TraceServiceStub(channel)
        for r in range(requests):
            start = first + r * spans
            try:
                stub.Export(numbered(start, spans, payload), timeout=10)
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.UNAVAILABLE, e
                refused += 1
                continue
            acked.update(range(start, start + spans))
    return acked, refused


async def test_the_memory_limiter_refuses_a_flood_and_accepts_again_once_drained(tmp_path):
    backend_port, port = free_port(), free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    config = tmp_path / "collector.yaml"
    # What the collector takes at rest, with a limit out of reach; then the limit 120 MiB above.
    config.write_text(LIMITED.format(port=port, backend=backend_port, limit=100_000, metrics=0))
    process = await asyncio.to_thread(CollectorProcess(config).start)
    assert process.proc is not None
    rest_mib = psutil.Process(process.proc.pid).memory_info().rss >> 20
    assert await asyncio.to_thread(process.stop) == 0, process.log
    limit, metrics = rest_mib + 120, free_port()
    config.write_text(LIMITED.format(port=port, backend=backend_port, limit=limit, metrics=metrics))
    process = CollectorProcess(config)
    await asyncio.to_thread(process.start)
    try:
        # Backend down: parsed requests pile up in the queue until the limiter refuses.
        # 250 requests of 1 MiB: 200 spans with 5 KiB of attributes each.
        acked, refused = await asyncio.to_thread(flood, port, 0, 250, 200, 5_000)
        assert refused > 0, "the flood never reached the limit"
        await asyncio.to_thread(backend.start)
        deadline = time.monotonic() + 30
        canary = 10_000_000
        while True:  # the queue drains, memory is handed back, the limiter resumes
            more, _ = await asyncio.to_thread(flood, port, canary, 1, 10)
            if more:
                acked |= more
                break
            assert time.monotonic() < deadline, "still refusing 30 s after the backend returned"
            canary += 10
            await asyncio.sleep(0.5)
        recovered_s = 30 - (deadline - time.monotonic())
        while await asyncio.to_thread(queued, metrics) > 0:  # delivered before the stop
            assert time.monotonic() < deadline + 60, "the queue did not drain"
            await asyncio.sleep(0.5)
        assert await asyncio.to_thread(process.stop) == 0, process.log
    finally:
        process.kill()
        backend.kill()
    row = tally("flood of 250 x 1 MiB, backend down, memory_limiter", 50_010, acked, backend)
    print(
        f"at rest {rest_mib} MiB, limit {limit} MiB; refused requests: {refused}; "
        f"accepting again {recovered_s:.1f} s after the backend returned"
    )
    assert row.lost == 0


HEAVY = """
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{port}", max_recv_msg_size_mib: 64}}
processors:
  coldstart:
  tail_latency:
exporters:
  otlp:
    endpoint: "127.0.0.1:{backend}"
    tls: {{insecure: true}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [coldstart, tail_latency], exporters: [otlp]}}
  telemetry: {{metrics: {{address: "127.0.0.1:{metrics}"}}}}
"""


def many_resources(resources: int) -> Traces:
    """One request of `resources` resources of one SERVER span each, as many small services
    would send through a gateway."""
    one = make_traces(1)
    batch = Traces()
    for i in range(resources):
        rs = batch.resource_spans.add()
        rs.CopyFrom(one.resource_spans[0])
        set_attr(rs.resource.attributes, "service.instance.id", str(i))
    return batch


def canary(port: int, stop: threading.Event, latencies: list[float]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = TraceServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            stub.Export(make_traces(1), timeout=60)
            latencies.append(time.monotonic() - started)
            time.sleep(0.02)


def costly(port: int, batch: Traces) -> float:
    started = time.monotonic()
    with grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        TraceServiceStub(channel).Export(batch, timeout=120)
    return time.monotonic() - started


async def test_one_costly_request_does_not_stall_a_canary_beside_it(tmp_path):
    backend_port, port = free_port(), free_port()
    backend = BackendProcess(tmp_path / "received.jsonl", backend_port)
    config = tmp_path / "collector.yaml"
    config.write_text(HEAVY.format(port=port, backend=backend_port, metrics=free_port()))
    heavy = await asyncio.to_thread(many_resources, 50_000)
    await asyncio.to_thread(backend.start)
    process = CollectorProcess(config)
    await asyncio.to_thread(process.start)
    stop, latencies = threading.Event(), []
    try:
        beside = asyncio.create_task(asyncio.to_thread(canary, port, stop, latencies))
        await asyncio.sleep(0.5)
        took = await asyncio.to_thread(costly, port, heavy)
        await asyncio.sleep(0.2)
        stop.set()
        await beside
        assert await asyncio.to_thread(process.stop) == 0, process.log
    finally:
        stop.set()
        process.kill()
        backend.kill()
    worst = max(latencies)
    print(
        f"\n| one request of 50,000 resources ({heavy.ByteSize() >> 20} MiB, {took:.1f} s) "
        f"beside a canary | worst canary latency {worst * 1000:.0f} ms |"
    )
    assert worst < 1.0
