import asyncio
import email.utils
import logging
import shutil
import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from collector.core.consumer import RetryableError
from collector.core.signals import Signal
from collector.exporters import otlphttp
from collector.exporters.http_client import parse_retry_after
from tests.exporters import BATCHES, FAST_RETRY, NO_QUEUE, Harness
from tests.exporters import started as start_harness
from tests.support.backend import Backend, self_signed_cert
from tests.support.builders import make_traces


def harness(config: dict, signal: Signal = Signal.TRACES) -> Harness:
    return Harness(otlphttp.factory, config, signal)


async def started(config: dict, signal: Signal = Signal.TRACES) -> Harness:
    return await start_harness(otlphttp.factory, config, signal)


def test_config_and_urls():
    cfg = otlphttp.Config.model_validate({"endpoint": "https://gateway:4318/"})
    assert (cfg.compression, cfg.encoding) == ("gzip", "proto")
    assert cfg.url(Signal.TRACES) == "https://gateway:4318/v1/traces"
    cfg = otlphttp.Config.model_validate(
        {"endpoint": "http://gateway:4318/otlp", "logs_endpoint": "http://logs:9000/ingest"}
    )
    assert cfg.url(Signal.METRICS) == "http://gateway:4318/otlp/v1/metrics"
    assert cfg.url(Signal.LOGS) == "http://logs:9000/ingest"
    only_traces = otlphttp.Config.model_validate({"traces_endpoint": "http://t:1/x"})
    assert only_traces.url(Signal.LOGS) == ""
    with pytest.raises(ValueError, match="set endpoint or logs_endpoint"):
        harness({"traces_endpoint": "http://t:1/x"}, Signal.LOGS)
    assert otlphttp.factory.aliases == ("otlp_http",)


def test_retry_after_accepts_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    in_a_minute = email.utils.formatdate(time.time() + 60, usegmt=True)
    assert 55 < parse_retry_after(in_a_minute) <= 60
    assert parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0


@pytest.mark.parametrize("signal", list(Signal))
@pytest.mark.parametrize(
    ("encoding", "compression"), [("proto", "gzip"), ("json", "none"), ("json", "gzip")]
)
async def test_every_signal_arrives_in_the_chosen_encoding(backend, signal, encoding, compression):
    h = await started(
        {
            "endpoint": backend.http_endpoint,
            "encoding": encoding,
            "compression": compression,
            "headers": {"X-Tenant": "acme"},
        },
        signal,
    )
    batch = BATCHES[signal](3)
    await h.exporter.consume(batch)
    await h.exporter.shutdown()
    assert backend.accepted(signal) == [batch]
    headers = backend.requests[0].headers
    assert headers["content-type"] == otlphttp._CONTENT_TYPES[encoding]
    assert headers.get("content-encoding") == ("gzip" if compression == "gzip" else None)
    assert headers["x-tenant"] == "acme"
    assert h.count("sent") == 3


async def test_503_is_retried_and_every_span_arrives_once(backend):
    backend.fail_next(3, http_status=503)
    h = await started({"endpoint": backend.http_endpoint})
    for _ in range(5):
        await h.exporter.consume(make_traces(2))
    await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 8
    assert backend.item_count(Signal.TRACES) == 10
    assert h.count("sent") == 10


async def test_429_waits_for_retry_after(backend):
    backend.fail_next(1, http_status=429, retry_after=1)
    h = await started({"endpoint": backend.http_endpoint, "sending_queue": NO_QUEUE})
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    await h.exporter.consume(make_traces(1))
    assert loop.time() - started_at >= 1
    assert backend.attempts(Signal.TRACES) == 2
    assert backend.item_count(Signal.TRACES) == 1
    await h.exporter.shutdown()


@pytest.mark.parametrize("encoding", ["proto", "json"])
async def test_400_is_dropped_not_retried(backend, caplog, encoding):
    backend.fail_next(1, http_status=400, message="span id is empty")
    h = await started({"endpoint": backend.http_endpoint, "encoding": encoding})
    with caplog.at_level(logging.ERROR, logger="coldtail"):
        await h.exporter.consume(make_traces(3))
        await h.exporter.shutdown()
    assert backend.attempts(Signal.TRACES) == 1
    assert h.count("send_failed") == 3
    [record] = caplog.records
    assert "dropping 3 spans" in record.getMessage()
    assert "HTTP 400: span id is empty" in record.getMessage()


@pytest.mark.parametrize("encoding", ["proto", "json"])
async def test_partial_success_is_logged_and_counted(backend, caplog, encoding):
    backend.partial_next(rejected=2, message="2 spans too old")
    h = await started({"endpoint": backend.http_endpoint, "encoding": encoding})
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        await h.exporter.consume(make_traces(5))
        await h.exporter.shutdown()
    assert h.count("sent") == 3
    assert h.count("send_failed") == 2
    assert "rejected 2 of 5 spans: 2 spans too old" in caplog.records[0].getMessage()


async def test_a_slow_backend_times_out_and_the_retry_succeeds(backend):
    backend.fail_next(1, delay=1.0)
    h = await started(
        {"endpoint": backend.http_endpoint, "timeout": "100ms", "sending_queue": NO_QUEUE}
    )
    await h.exporter.consume(make_traces(1))
    assert backend.attempts(Signal.TRACES) == 2
    assert backend.item_count(Signal.TRACES) == 1
    await h.exporter.shutdown()


async def test_connection_refused_is_retried_until_max_elapsed_time():
    h = await started(
        {
            "endpoint": "http://127.0.0.1:1",
            "sending_queue": NO_QUEUE,
            "retry_on_failure": {**FAST_RETRY, "max_elapsed_time": "100ms"},
        }
    )
    with pytest.raises(RetryableError, match="/v1/traces failed"):
        await h.exporter.consume(make_traces(2))
    assert h.count("send_failed") == 2
    await h.exporter.shutdown()


async def test_shutdown_drains_the_queue_into_the_backend(backend):
    backend.down(http_status=502)
    h = await started({"endpoint": backend.http_endpoint})
    for _ in range(30):
        await h.exporter.consume(make_traces(1))
    shutdown = asyncio.create_task(h.exporter.shutdown())
    await asyncio.sleep(0.05)
    backend.up()
    await shutdown
    assert backend.item_count(Signal.TRACES) == 30
    assert h.count("sent") == 30


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make a certificate")
async def test_tls_with_a_self_signed_certificate(tmp_path):
    cert, key = self_signed_cert(str(tmp_path))
    async with Backend(tls_cert=cert, tls_key=key) as backend:
        for tls in (
            {"ca_file": cert},
            {"insecure_skip_verify": True},
            {"ca_file": cert, "server_name_override": "localhost"},
        ):
            h = await started(
                {"endpoint": backend.http_endpoint, "tls": tls, "sending_queue": NO_QUEUE}
            )
            await h.exporter.consume(make_traces(1))
            await h.exporter.shutdown()
        assert backend.item_count(Signal.TRACES) == 3

        untrusting = await started(
            {
                "endpoint": backend.http_endpoint,
                "sending_queue": NO_QUEUE,
                "retry_on_failure": {"enabled": False},
            }
        )
        with pytest.raises(RetryableError, match="certificate verify failed"):
            await untrusting.exporter.consume(make_traces(1))
        await untrusting.exporter.shutdown()


async def test_the_sdk_otlp_http_exporter_talks_to_the_backend(backend):
    exporter = OTLPSpanExporter(endpoint=f"{backend.http_endpoint}/v1/traces")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def emit() -> None:
        with provider.get_tracer("test").start_as_current_span("op"):
            pass
        provider.shutdown()

    await asyncio.to_thread(emit)
    assert backend.item_count(Signal.TRACES) == 1
