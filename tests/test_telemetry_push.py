"""The own telemetry in OTLP form, and its pushes' bounds."""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.core.pdata import get_attr
from collector.core.telemetry_push import (
    LogProcessor,
    PeriodicReader,
    TelemetryPush,
    logs_request,
    metrics_request,
)


def test_the_registry_in_otlp_form():
    registry = CollectorRegistry()
    Counter("sent", "Items sent.", ["exporter"], registry=registry).labels("otlp").inc(3)
    Gauge("queue_size", "Queue size.", registry=registry).set(7)
    Histogram("send_size", "Sizes.", buckets=(10, 100), registry=registry).observe(50)
    request = metrics_request(registry, {"service.name": "c"}, start=123)
    rm = request.resource_metrics[0]
    assert get_attr(rm.resource.attributes, "service.name") == "c"
    metrics = {m.name: m for m in rm.scope_metrics[0].metrics}
    assert set(metrics) == {"sent", "queue_size", "send_size"}
    (sent,) = metrics["sent"].sum.data_points
    assert metrics["sent"].sum.is_monotonic and sent.as_double == 3
    assert sent.start_time_unix_nano == 123 and get_attr(sent.attributes, "exporter") == "otlp"
    assert metrics["queue_size"].gauge.data_points[0].as_double == 7
    (sizes,) = metrics["send_size"].histogram.data_points
    assert list(sizes.explicit_bounds) == [10, 100] and list(sizes.bucket_counts) == [0, 1, 0]
    assert (sizes.count, sizes.sum) == (1, 50)


def test_log_records_keep_level_message_and_fields():
    record = logging.LogRecord(
        "coldtail.exporter.otlp", logging.WARNING, "", 0, "slow %s", ("x",), None
    )
    record.kv = {"items": 3, "error": ValueError("boom")}
    (out,) = (
        logs_request([record], {"service.name": "c"}).resource_logs[0].scope_logs[0].log_records
    )
    assert (out.severity_text, out.body.string_value) == ("WARN", "slow x")
    assert get_attr(out.attributes, "items") == 3 and get_attr(out.attributes, "error") == "boom"
    assert get_attr(out.attributes, "code.namespace") == "coldtail.exporter.otlp"


async def test_the_last_push_is_bounded_when_the_backend_does_not_answer():
    async def silent(reader, writer):
        await asyncio.sleep(30)  # reads nothing, answers nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    exporter = {"otlp": {"endpoint": f"http://127.0.0.1:{port}", "timeout": 60000}}
    push = TelemetryPush(
        CollectorRegistry(),
        {},
        [PeriodicReader.model_validate({"interval": 3600000, "exporter": exporter})],
        [LogProcessor.model_validate({"batch": {"exporter": exporter}})],
    )
    await push.start()
    logging.getLogger("coldtail.test").warning("held for the last push")
    started = time.monotonic()
    await push.shutdown(limit=0.3)
    assert time.monotonic() - started < 2
    server.close()
