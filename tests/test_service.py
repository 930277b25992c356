import pytest
import yaml

from collector.core.component import Kind
from collector.core.config import validate
from collector.core.graph import GraphError
from collector.core.service import Service
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from tests.support import recording
from tests.support.builders import make_logs, make_traces
from tests.support.recording import EVENTS, INSTANCES, recording_registry


@pytest.fixture(autouse=True)
def _reset():
    recording.reset()


def build(text: str) -> Service:
    raw = yaml.safe_load(text)
    raw.setdefault("service", {}).setdefault("telemetry", {"metrics": {"level": "none"}})
    return Service(validate(raw, recording_registry()))


TWO_PIPELINES = """
receivers: {testrecv: }
processors: {testproc: {mutates: true, tag: seen}}
exporters: {testexp/a: , testexp/b: }
service:
  pipelines:
    traces/one: {receivers: [testrecv], processors: [testproc], exporters: [testexp/a]}
    traces/two: {receivers: [testrecv], processors: [testproc], exporters: [testexp/b]}
"""


async def test_receiver_fans_out_to_pipelines_each_with_own_processor_and_copy():
    service = build(TWO_PIPELINES)
    await service.start()
    batch = make_traces(3)
    await INSTANCES[(Kind.RECEIVER, "testrecv")].emit(Signal.TRACES, batch)
    a = INSTANCES[(Kind.EXPORTER, "testexp/a", "traces")].batches
    b = INSTANCES[(Kind.EXPORTER, "testexp/b", "traces")].batches
    assert len(a) == len(b) == 1
    # Both pipelines' processors mutate: one gets a copy, the last one the original.
    assert (a[0] is batch) != (b[0] is batch)
    assert a[0] == b[0]
    assert (
        INSTANCES[(Kind.PROCESSOR, "testproc", "traces/one")]
        is not INSTANCES[(Kind.PROCESSOR, "testproc", "traces/two")]
    )
    await service.shutdown()


async def test_read_only_consumers_share_the_batch():
    service = build(
        """
receivers: {testrecv: }
exporters: {testexp/a: , testexp/b: }
service:
  pipelines:
    logs: {receivers: [testrecv], exporters: [testexp/a, testexp/b]}
"""
    )
    await service.start()
    batch = make_logs(2)
    await INSTANCES[(Kind.RECEIVER, "testrecv")].emit(Signal.LOGS, batch)
    assert INSTANCES[(Kind.EXPORTER, "testexp/a", "logs")].batches[0] is batch
    assert INSTANCES[(Kind.EXPORTER, "testexp/b", "logs")].batches[0] is batch
    await service.shutdown()


async def test_start_downstream_first_and_stop_receivers_first():
    service = build(
        """
receivers: {testrecv: }
processors: {testproc/1: , testproc/2: }
exporters: {testexp: }
extensions: {testext: }
service:
  extensions: [testext]
  pipelines:
    traces: {receivers: [testrecv], processors: [testproc/1, testproc/2], exporters: [testexp]}
"""
    )
    assert service.status == "starting"
    await service.start()
    assert service.status == "ready"
    await service.shutdown()
    assert service.status == "stopped"
    assert EVENTS == [
        "start extension testext",
        "start exporter testexp (traces)",
        "start processor testproc/2 in traces",
        "start processor testproc/1 in traces",
        "start receiver testrecv",
        "shutdown receiver testrecv",
        "shutdown processor testproc/1 in traces",
        "shutdown processor testproc/2 in traces",
        "shutdown exporter testexp (traces)",
        "shutdown extension testext",
    ]


async def test_connector_links_pipelines_and_drains_in_order():
    service = build(
        """
receivers: {testrecv: }
processors: {testproc: }
connectors: {testconn: }
exporters: {testexp: }
service:
  pipelines:
    traces/in: {receivers: [testrecv], processors: [testproc], exporters: [testconn]}
    traces/out: {receivers: [testconn], processors: [testproc], exporters: [testexp]}
"""
    )
    await service.start()
    await INSTANCES[(Kind.RECEIVER, "testrecv")].emit(Signal.TRACES, make_traces(1))
    assert len(INSTANCES[(Kind.EXPORTER, "testexp", "traces")].batches) == 1
    await service.shutdown()
    stops = [e for e in EVENTS if e.startswith("shutdown")]
    assert stops == [
        "shutdown receiver testrecv",
        "shutdown processor testproc in traces/in",
        "shutdown connector testconn (traces)",
        "shutdown processor testproc in traces/out",
        "shutdown exporter testexp (traces)",
    ]


def test_connector_cycle_is_an_error():
    with pytest.raises(GraphError, match="cycle"):
        build(
            """
receivers: {testrecv: }
connectors: {testconn: }
exporters: {testexp: }
service:
  pipelines:
    traces/a: {receivers: [testrecv, testconn], exporters: [testconn, testexp]}
"""
        )


async def test_failed_start_stops_what_started():
    service = build(
        """
receivers: {testrecv: }
exporters: {testexp: }
service:
  pipelines:
    traces: {receivers: [testrecv], exporters: [testexp]}
"""
    )
    receiver = INSTANCES[(Kind.RECEIVER, "testrecv")]

    async def broken(host):
        raise OSError("address already in use")

    receiver.start = broken
    with pytest.raises(RuntimeError, match="cannot start receiver testrecv: address already"):
        await service.start()
    assert service.status == "stopped"
    assert "shutdown exporter testexp (traces)" in EVENTS


async def test_flush_pushes_held_data_into_the_backend_without_stopping():
    from collector.exporters.otlp import factory as otlp_exporter
    from collector.processors.batch import factory as batch
    from tests.support.backend import Backend

    registry = recording_registry()
    registry.register(batch)
    registry.register(otlp_exporter)
    async with Backend() as backend:
        raw = yaml.safe_load(
            f"""
receivers: {{testrecv: }}
processors: {{batch: {{timeout: 1h}}}}
exporters:
  otlp:
    endpoint: "{backend.grpc_endpoint}"
    tls: {{insecure: true}}
    retry_on_failure: {{initial_interval: 50ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines: {{traces: {{receivers: [testrecv], processors: [batch], exporters: [otlp]}}}}
"""
        )
        service = Service(validate(raw, registry))
        await service.start()
        await INSTANCES[(Kind.RECEIVER, "testrecv")].emit(Signal.TRACES, make_traces(5))
        assert backend.item_count(Signal.TRACES) == 0  # held by the batch processor
        assert await service.flush(timeout=5)
        assert backend.item_count(Signal.TRACES) == 5
        assert service.status == "ready"
        backend.down()
        await INSTANCES[(Kind.RECEIVER, "testrecv")].emit(Signal.TRACES, make_traces(1))
        assert not await service.flush(timeout=0.3)  # the backend refuses: bounded, not stuck
        backend.up()
        await service.shutdown()


def test_components_share_the_services_state_and_metrics_and_no_other_services():
    from collector.awslambda.init_reports import InitReports
    from collector.core.component import ComponentID
    from collector.processors.coldstart import ColdStartProcessor
    from collector.registry import registry

    text = """
receivers:
  otlp: {protocols: {http: {endpoint: "127.0.0.1:0"}}}
  lambda_telemetry: {endpoint: "127.0.0.1:0"}
processors: {coldstart: }
exporters: {debug: }
service:
  telemetry: {metrics: {level: none}}
  pipelines:
    traces/a: {receivers: [otlp, lambda_telemetry], processors: [coldstart], exporters: [debug]}
    traces/b: {receivers: [otlp], processors: [coldstart], exporters: [debug]}
"""
    one, two = (Service(validate(yaml.safe_load(text), registry())) for _ in range(2))
    receiver = one.receivers[ComponentID("lambda_telemetry")]
    processors = [c for _, c in one.graph.order if isinstance(c, ColdStartProcessor)]
    assert len(processors) == 2
    reports = receiver.settings.shared.get(InitReports)
    assert all(p.reports is reports for p in processors)
    assert two.shared.get(InitReports) is not reports

    made = []
    metrics = one.telemetry.metric_set(made.append)
    assert one.telemetry.metric_set(made.append) is metrics
    two.telemetry.metric_set(made.append)
    assert made == [one.telemetry.registry, two.telemetry.registry]


def test_process_uptime_and_cpu_time_are_counters_that_grow():
    telemetry = Telemetry()
    sample = telemetry.registry.get_sample_value
    uptime, cpu = (
        sample("otelcol_process_uptime_total"),
        sample("otelcol_process_cpu_seconds_total"),
    )
    sum(i * i for i in range(200_000))  # some CPU time
    assert sample("otelcol_process_uptime_total") > uptime
    assert sample("otelcol_process_cpu_seconds_total") >= cpu > 0
    text = telemetry.exposition().decode()
    assert "# TYPE otelcol_process_uptime_total counter" in text
    assert "# TYPE otelcol_process_cpu_seconds_total counter" in text
