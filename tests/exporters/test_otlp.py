import asyncio
import json
import logging
import shutil
import subprocess
import sys

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.core import otlpjson
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import Traces, get_attr
from collector.core.signals import ITEM_NAMES, Signal
from collector.exporters import otlp
from tests.exporters import BATCHES, FAST_RETRY, NO_QUEUE, Harness
from tests.exporters import started as start_harness
from tests.support.backend import Backend, self_signed_cert
from tests.support.builders import make_traces


def harness(config: dict, signal: Signal = Signal.TRACES) -> Harness:
    return Harness(otlp.factory, config, signal)


def serialized(batches: list) -> list[bytes]:
    return sorted(b.SerializeToString() for b in batches)


async def started(config: dict, signal: Signal = Signal.TRACES) -> Harness:
    return await start_harness(otlp.factory, config, signal)


def insecure(backend: Backend, **config) -> dict:
    return {"endpoint": backend.grpc_endpoint, "tls": {"insecure": True}, **config}


def test_config():
    cfg = otlp.Config.model_validate({"endpoint": "gateway:4317"})
    assert cfg.compression == "gzip"
    assert cfg.secure
    assert not otlp.Config.model_validate({"endpoint": "http://gateway:4317"}).secure
    assert otlp.Config.model_validate(
        {"endpoint": "https://gateway:4317", "tls": {"insecure": True}}
    ).secure
    assert not otlp.Config.model_validate(
        {"endpoint": "gateway:4317", "tls": {"insecure": True}}
    ).secure
    assert otlp.factory.aliases == ("otlp_grpc",)


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize("compression", ["gzip", "none"])
async def test_every_signal_arrives_with_headers(backend, signal, compression):
    h = await started(
        insecure(backend, compression=compression, headers={"X-Tenant": "acme"}), signal
    )
    await h.exporter.consume(BATCHES[signal](3))
    await h.exporter.shutdown()
    assert backend.item_count(signal) == 3
    request = backend.requests[0]
    assert request.transport == "grpc"
    assert request.headers["x-tenant"] == "acme"
    assert request.headers["user-agent"].startswith("coldtail")
    assert h.count("sent", ITEM_NAMES[signal]) == 3


async def test_compression_is_what_the_config_says():
    async with Backend(grpc_gzip=False) as backend:
        plain = await started(insecure(backend, compression="none", sending_queue=NO_QUEUE))
        await plain.exporter.consume(make_traces(1))
        await plain.exporter.shutdown()
        gzipped = await started(insecure(backend, sending_queue=NO_QUEUE))
        with pytest.raises(PermanentError, match="'gzip' is disabled"):
            await gzipped.exporter.consume(make_traces(1))
        await gzipped.exporter.shutdown()
    assert backend.item_count(Signal.TRACES) == 1


async def test_unavailable_is_retried_and_every_span_arrives_once(backend):
    backend.fail_next(3, grpc_code=grpc.StatusCode.UNAVAILABLE)
    h = await started(insecure(backend))
    batches = [make_traces(2) for _ in range(5)]
    for batch in batches:
        await h.exporter.consume(batch)
    await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 8
    assert serialized(backend.accepted(Signal.TRACES)) == serialized(batches)
    assert h.count("sent") == 10
    assert h.count("send_failed") == 0


async def test_resource_exhausted_with_retry_info_is_retried_after_the_delay(backend):
    backend.fail_next(1, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=0.3)
    h = await started(insecure(backend, sending_queue=NO_QUEUE))
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    await h.exporter.consume(make_traces(4))
    assert loop.time() - started_at >= 0.3
    assert backend.attempts(Signal.TRACES) == 2
    assert backend.item_count(Signal.TRACES) == 4
    await h.exporter.shutdown()


async def test_resource_exhausted_without_retry_info_is_permanent(backend):
    backend.fail_next(1, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    h = await started(insecure(backend, sending_queue=NO_QUEUE))
    with pytest.raises(PermanentError, match="RESOURCE_EXHAUSTED"):
        await h.exporter.consume(make_traces(1))
    assert backend.attempts(Signal.TRACES) == 1
    await h.exporter.shutdown()


async def test_invalid_argument_is_dropped_not_retried(backend, caplog):
    backend.fail_next(1, grpc_code=grpc.StatusCode.INVALID_ARGUMENT, message="bad span id")
    h = await started(insecure(backend))
    with caplog.at_level(logging.ERROR, logger="coldtail"):
        await h.exporter.consume(make_traces(3))
        await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 1
    assert backend.item_count(Signal.TRACES) == 0
    assert h.count("send_failed") == 3
    [record] = caplog.records
    assert "dropping 3 spans" in record.getMessage()
    assert "INVALID_ARGUMENT: bad span id" in record.getMessage()


async def test_partial_success_is_logged_and_counted(backend, caplog):
    backend.partial_next(rejected=2, message="2 spans too old")
    h = await started(insecure(backend))
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        await h.exporter.consume(make_traces(5))
        await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 1
    assert h.count("sent") == 3
    assert h.count("send_failed") == 2
    assert "rejected 2 of 5 spans: 2 spans too old" in caplog.records[0].getMessage()


async def test_a_slow_backend_times_out_and_the_retry_succeeds(backend):
    backend.fail_next(1, delay=1.0)
    h = await started(insecure(backend, timeout="100ms", sending_queue=NO_QUEUE))
    await h.exporter.consume(make_traces(1))
    assert backend.attempts(Signal.TRACES) == 2
    assert backend.item_count(Signal.TRACES) == 1
    await h.exporter.shutdown()


async def test_gives_up_after_max_elapsed_time(backend):
    backend.down()
    h = await started(
        insecure(
            backend,
            sending_queue=NO_QUEUE,
            retry_on_failure={**FAST_RETRY, "max_elapsed_time": "100ms"},
        )
    )
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await h.exporter.consume(make_traces(2))
    assert backend.attempts(Signal.TRACES) > 1
    assert h.count("send_failed") == 2
    await h.exporter.shutdown()


async def test_unreachable_endpoint_is_retryable():
    h = await started(
        {
            "endpoint": "127.0.0.1:1",
            "tls": {"insecure": True},
            "sending_queue": NO_QUEUE,
            "retry_on_failure": {"enabled": False},
        }
    )
    with pytest.raises(RetryableError, match="UNAVAILABLE"):
        await h.exporter.consume(make_traces(1))
    await h.exporter.shutdown()


async def test_full_queue_refuses_and_counts(backend):
    backend.down()
    h = await started(insecure(backend, sending_queue={"num_consumers": 1, "queue_size": 1}))
    await h.exporter.consume(make_traces(1))
    while h.queue_size():  # until the consumer holds the first batch
        await asyncio.sleep(0.001)
    await h.exporter.consume(make_traces(1))
    with pytest.raises(RetryableError, match="queue is full"):
        await h.exporter.consume(make_traces(7))
    assert h.count("enqueue_failed") == 7
    backend.up()
    await h.exporter.shutdown()
    assert backend.item_count(Signal.TRACES) == 2


async def test_shutdown_drains_the_queue_into_the_backend(backend):
    backend.down()
    h = await started(insecure(backend))
    for _ in range(50):
        await h.exporter.consume(make_traces(2))
    shutdown = asyncio.create_task(h.exporter.shutdown())
    await asyncio.sleep(0.05)
    assert not shutdown.done()
    backend.up()
    await shutdown
    assert backend.item_count(Signal.TRACES) == 100
    assert h.count("sent") == 100


async def test_http_scheme_means_plain_text(backend):
    h = await started({"endpoint": f"http://{backend.grpc_endpoint}"})
    await h.exporter.consume(make_traces(1))
    await h.exporter.shutdown()
    assert backend.item_count(Signal.TRACES) == 1


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make a certificate")
async def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = self_signed_cert(str(tmp_path))
    async with Backend(tls_cert=cert, tls_key=key) as backend:
        for tls in ({"ca_file": cert}, {"insecure_skip_verify": True}):
            h = await started(
                {"endpoint": backend.grpc_endpoint, "tls": tls, "sending_queue": NO_QUEUE}
            )
            await h.exporter.consume(make_traces(1))
            await h.exporter.shutdown()
        assert backend.item_count(Signal.TRACES) == 2

        untrusting = await started(
            {
                "endpoint": backend.grpc_endpoint,
                "sending_queue": NO_QUEUE,
                "retry_on_failure": {"enabled": False},
            }
        )
        with pytest.raises(RetryableError, match="UNAVAILABLE"):
            await untrusting.exporter.consume(make_traces(1))
        await untrusting.exporter.shutdown()
        assert backend.item_count(Signal.TRACES) == 2


async def test_the_sdk_otlp_grpc_exporter_talks_to_the_backend(backend):
    exporter = OTLPSpanExporter(
        endpoint=backend.grpc_endpoint, insecure=True, headers={"x-tenant": "acme"}
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def emit() -> None:
        with tracer.start_as_current_span("parent"), tracer.start_as_current_span("child"):
            pass
        provider.shutdown()

    await asyncio.to_thread(emit)
    assert backend.item_count(Signal.TRACES) == 2
    batch = backend.accepted(Signal.TRACES)[0]
    assert get_attr(batch.resource_spans[0].resource.attributes, "service.name") == "checkout"
    assert backend.requests[0].headers["x-tenant"] == "acme"


async def test_backend_process_writes_what_it_accepts(tmp_path):
    out = tmp_path / "received.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.backend", "--out", str(out), "--fail-next", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        endpoints = json.loads(await asyncio.to_thread(proc.stdout.readline))
        h = await started({"endpoint": endpoints["grpc"], "tls": {"insecure": True}})
        await h.exporter.consume(make_traces(3))
        await h.exporter.consume(make_traces(4))
        await h.exporter.shutdown()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    received = [otlpjson.parse(line, Traces) for line in out.read_text().splitlines()]
    assert sorted(len(b.resource_spans[0].scope_spans[0].spans) for b in received) == [3, 4]
