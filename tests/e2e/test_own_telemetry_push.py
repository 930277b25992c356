"""The collector's own metrics and logs pushed over OTLP/HTTP to a backend, as the OTel
Collector's periodic metric readers and batch log processors configure it (the OpenTelemetry
demo's config does), from a real collector process."""

from __future__ import annotations

import asyncio

import pytest

from collector.core.pdata import get_attr
from collector.core.signals import Signal
from tests.support.backend import Backend
from tests.support.process import CollectorProcess, free_port

CONFIG = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
exporters:
  debug: {{verbosity: basic}}
service:
  telemetry:
    resource: {{service.name: edge-collector}}
    metrics:
      readers:
        - periodic:
            interval: 200
            exporter: {{otlp: {{protocol: http/protobuf, endpoint: "{backend}"}}}}
    logs:
      processors:
        - batch:
            schedule_delay: 200
            exporter: {{otlp: {{protocol: http/protobuf, endpoint: "{backend}/v1/logs"}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"""


@pytest.mark.slow
async def test_own_metrics_and_logs_reach_an_otlp_backend(tmp_path):
    async with Backend() as backend:
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(http=free_port(), backend=backend.http_endpoint))
        with CollectorProcess(config) as collector:
            try:
                await backend.wait_for(Signal.METRICS, 1, timeout=10)
            except TimeoutError:
                raise AssertionError(collector.log) from None
            await backend.wait_for(Signal.LOGS, 1, timeout=10)
            # Stopped off the event loop, so that the backend takes the last push.
            assert await asyncio.to_thread(collector.stop) == 0
    metrics = backend.accepted(Signal.METRICS)
    names = {
        m.name for b in metrics for rm in b.resource_metrics for sm in rm.scope_metrics
        for m in sm.metrics
    }  # fmt: skip
    assert {"otelcol_process_uptime", "otelcol_receiver_accepted_spans"} <= names
    resource = metrics[0].resource_metrics[0].resource.attributes
    assert get_attr(resource, "service.name") == "edge-collector"
    uptime = next(
        m for rm in metrics[-1].resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        if m.name == "otelcol_process_uptime"
    )  # fmt: skip
    assert uptime.sum.is_monotonic and uptime.sum.data_points[0].as_double > 0
    bodies = [
        r.body.string_value
        for b in backend.accepted(Signal.LOGS)
        for rl in b.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]
    assert any("everything is ready" in body for body in bodies)
    # Pushed only: with readers and no pull reader, /metrics is not served.
    assert not any("own metrics served" in line for line in collector.lines)
