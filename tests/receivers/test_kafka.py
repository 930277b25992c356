"""kafka receiver: batches from librdkafka's mock Kafka cluster (tests/support/kafka_cluster.py:
real brokers on loopback, consumer groups and committed offsets; no broker runs here), written
by the coldtail kafka exporter or a plain producer, into pipelines that take, refuse or reject
them. The mock cluster's brokers are TCP listeners, so the end-to-end test chains two real
`coldtail run` processes through the one this test process holds."""

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from collector.core import client, otlpjson
from collector.core.client import ClientInfo
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import (
    Encoded,
    Logs,
    Metrics,
    Traces,
    count_items,
    get_attr,
    iter_spans,
)
from collector.core.signals import Signal
from collector.exporters import kafka as kafka_exporter
from collector.receivers.kafka import Config, KafkaReceiver, consumer_properties, factory
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.kafka_cluster import MockCluster
from tests.support.process import CollectorProcess, free_port

TESTDATA = yaml.safe_load((Path(__file__).parent / "testdata" / "kafka_config.yaml").read_text())
GROUP = "otel-collector"
# The mock cluster forms a group within about a session timeout of a member joining or leaving.
FAST_GROUP = {"session_timeout": "500ms", "heartbeat_interval": "100ms"}


class Pipeline:
    """Takes batches, or refuses the first `refuse` offers (-1: every one) with `error`;
    records what it took and the client metadata each came with."""

    mutates_data = False

    def __init__(self, refuse: int = 0, error: Exception | None = None) -> None:
        self.refuse = refuse
        self.error = error or RetryableError("sending queue is full")
        self.batches: list = []
        self.metadata: list[ClientInfo] = []
        self.offers = 0
        self._changed = asyncio.Event()

    async def consume(self, batch) -> None:
        self.offers += 1
        self._changed.set()
        if self.refuse:
            self.refuse -= 1
            raise self.error
        self.batches.append(batch)
        self.metadata.append(client.current())

    @property
    def items(self) -> int:
        return sum(count_items(b) for b in self.batches)

    async def wait(self, items: int = 0, offers: int = 0, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.items < items or self.offers < offers:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def cluster():
    with MockCluster(brokers=3) as c:
        yield c


@contextlib.asynccontextmanager
async def receiving(cluster: MockCluster, config: dict, pipelines: dict):
    """A started receiver on `cluster` (reading from the earliest offset unless `config` says
    otherwise), stopped on the way out."""
    settings = make_settings("receiver", "kafka")
    full = {"brokers": cluster.bootstrap, "initial_offset": "earliest", **FAST_GROUP, **config}
    receiver = factory.create(settings, Config.model_validate(full), pipelines)
    await receiver.start(StaticHost())
    try:
        yield receiver
    finally:
        await receiver.shutdown()


async def export(cluster: MockCluster, config: dict, signal: Signal, *batches) -> None:
    exporter = kafka_exporter.factory.create(
        make_settings("exporter", "kafka"),
        kafka_exporter.Config.model_validate({"brokers": [cluster.bootstrap], **config}),
        signal,
    )
    await exporter.start(StaticHost())
    try:
        for batch in batches:
            await exporter.consume(batch)
        await exporter.flush()
    finally:
        await exporter.shutdown()


def sdk_spans(traces: int, spans_per_trace: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("checkout.handler", "1.0")
    for i in range(traces):
        with tracer.start_as_current_span(f"GET /carts/{i}", kind=SpanKind.SERVER):
            for j in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"db.query {j}", kind=SpanKind.CLIENT):
                    pass
    provider.shutdown()
    return memory.get_finished_spans()


def span_ids(batches) -> set[tuple[bytes, bytes, str]]:
    return {(s.trace_id, s.span_id, s.name) for b in batches for _, _, s in iter_spans(_msg(b))}


def _msg(batch):
    return batch.decode() if isinstance(batch, Encoded) else batch


def counter(receiver: KafkaReceiver, name: str, signal: str = "spans") -> float:
    value = receiver.settings.telemetry.registry.get_sample_value(
        f"otelcol_receiver_{name}_{signal}_total", {"receiver": "kafka", "transport": "kafka"}
    )
    return value or 0.0


def committed_total(cluster: MockCluster, topic: str, partitions: int = 4) -> int:
    return sum(cluster.committed(GROUP, topic, partitions).values())


@pytest.mark.parametrize("name", sorted(TESTDATA["valid"]))
def test_valid_configs(name):
    Config.model_validate(TESTDATA["valid"][name] or {})


@pytest.mark.parametrize("name", sorted(TESTDATA["invalid"]))
def test_invalid_configs_say_what_is_wrong(name):
    case = TESTDATA["invalid"][name]
    with pytest.raises(ValidationError) as excinfo:
        Config.model_validate(case["config"])
    assert case["error"] in str(excinfo.value)


def test_consumer_options_become_librdkafka_properties():
    config = Config.model_validate(
        {
            "group_id": "coldtail",
            "group_instance_id": "coldtail-1",
            "initial_offset": "earliest",
            "session_timeout": "30s",
            "heartbeat_interval": "5s",
            "group_rebalance_strategy": "sticky",
            "max_fetch_wait": "500ms",
            "autocommit": {"enable": False, "interval": "2s"},
        }
    )
    props = consumer_properties(config)
    assert props["group.id"] == "coldtail"
    assert props["group.instance.id"] == "coldtail-1"
    assert props["auto.offset.reset"] == "earliest"
    assert (props["session.timeout.ms"], props["heartbeat.interval.ms"]) == (30000, 5000)
    assert props["partition.assignment.strategy"] == "cooperative-sticky"
    assert props["fetch.wait.max.ms"] == 500
    assert (props["enable.auto.commit"], props["auto.commit.interval.ms"]) == (False, 2000)
    assert props["enable.auto.offset.store"] is False  # stored once marked, not when polled
    assert props["client.id"] == "otel-collector"
    defaults = Config.model_validate({})
    assert [defaults.traces.topics, defaults.metrics.topics, defaults.logs.topics] == [
        ["otlp_spans"],
        ["otlp_metrics"],
        ["otlp_logs"],
    ]


async def test_sdk_spans_through_the_exporter_and_back(cluster):
    cluster.create_topic("otlp_spans", 6)
    spans = sdk_spans(traces=10, spans_per_trace=3)
    batch = encode_spans(spans)
    await export(cluster, {"partition_traces_by_id": True}, Signal.TRACES, batch)
    pipeline = Pipeline()
    async with receiving(cluster, {}, {Signal.TRACES: pipeline}) as receiver:
        await pipeline.wait(items=30)
    assert span_ids(pipeline.batches) == span_ids([batch])
    assert len(pipeline.batches) == 10  # one message, and so one batch, per trace
    for taken in pipeline.batches:
        assert len({s.trace_id for _, _, s in iter_spans(taken)}) == 1
        rs = taken.resource_spans[0]
        assert get_attr(rs.resource.attributes, "service.name") == "checkout"
    topics = {m.get("kafka.topic") for m in pipeline.metadata}
    assert topics == {("otlp_spans",)}
    assert all(m.get("kafka.partition") and m.get("kafka.offset") for m in pipeline.metadata)
    assert counter(receiver, "accepted") == 30
    assert committed_total(cluster, "otlp_spans", 6) == 10  # every message, once taken


async def test_otlp_json_for_every_signal(cluster):
    batches = {
        Signal.TRACES: make_traces(3),
        Signal.METRICS: make_metrics(2),
        Signal.LOGS: make_logs(4),
    }
    json = {"encoding": "otlp_json"}
    blocks = {"traces": json, "metrics": json, "logs": json}
    for signal, batch in batches.items():
        await export(cluster, blocks, signal, batch)
    assert otlpjson.parse(cluster.read("otlp_logs", 1)[0].value(), Logs) == batches[Signal.LOGS]
    pipelines = {signal: Pipeline() for signal in Signal}
    async with receiving(cluster, blocks, pipelines):
        for signal, batch in batches.items():
            await pipelines[signal].wait(items=count_items(batch))
    for signal, batch in batches.items():
        assert pipelines[signal].batches == [batch]


async def test_offsets_are_committed_only_after_the_pipeline_accepted(cluster):
    cluster.create_topic("otlp_spans", 1)
    sent = [make_traces(2) for _ in range(3)]
    cluster.produce("otlp_spans", [b.SerializeToString() for b in sent])
    fast_commits = {"autocommit": {"interval": "100ms"}}
    refusing = Pipeline(refuse=-1)
    async with receiving(cluster, fast_commits, {Signal.TRACES: refusing}) as receiver:
        await refusing.wait(offers=4)  # the first message, offered again and again
        await asyncio.sleep(0.3)  # auto commit had its chances
        assert cluster.committed(GROUP, "otlp_spans", 1) == {}
    assert refusing.batches == []
    assert counter(receiver, "refused") >= 8 and counter(receiver, "accepted") == 0
    assert cluster.committed(GROUP, "otlp_spans", 1) == {}  # not even at shutdown

    # A restarted consumer reads it all again.
    taking = Pipeline()
    async with receiving(cluster, fast_commits, {Signal.TRACES: taking}):
        await taking.wait(items=6)
    assert taking.batches == sent
    assert cluster.committed(GROUP, "otlp_spans", 1) == {0: 3}


async def test_refused_data_pauses_consumption_and_comes_again_in_order(cluster, caplog):
    caplog.set_level("INFO", logger="coldtail")
    cluster.create_topic("otlp_spans", 1)
    sent = [make_traces(1) for _ in range(5)]
    cluster.produce("otlp_spans", [b.SerializeToString() for b in sent])
    pipeline = Pipeline(refuse=3)
    async with receiving(cluster, {}, {Signal.TRACES: pipeline}) as receiver:
        await pipeline.wait(items=5)
    assert pipeline.batches == sent  # each once, in order
    assert pipeline.offers == 8
    assert (counter(receiver, "refused"), counter(receiver, "accepted")) == (3, 5)
    messages = [r.getMessage() for r in caplog.records]
    assert any("consumption paused: sending queue is full" in m for m in messages)
    assert "kafka consumption resumed" in messages


async def test_undecodable_messages_are_skipped_counted_and_committed(cluster, caplog):
    cluster.create_topic("otlp_spans", 1)
    good = make_traces(2)
    bad_ids = make_traces(1)
    bad_ids.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x01" * 5
    values = [b"\xff\xfenot protobuf", good.SerializeToString(), bad_ids.SerializeToString(), b""]
    cluster.produce("otlp_spans", values)
    pipeline = Pipeline()
    async with receiving(cluster, {"autocommit": {"enable": False}}, {Signal.TRACES: pipeline}):
        await pipeline.wait(items=2)
        deadline = time.monotonic() + 5
        while cluster.committed(GROUP, "otlp_spans", 1) != {0: 4} and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert cluster.committed(GROUP, "otlp_spans", 1) == {0: 4}  # the bad ones too
    assert pipeline.batches == [good]
    skipped = [r for r in caplog.records if r.getMessage() == "kafka messages skipped"]
    reasons = {r.kv["reason"]: r.kv["messages"] for r in skipped}
    assert sum(reasons.values()) == 3
    assert any("invalid span trace_id: 5 bytes" in reason for reason in reasons)
    assert any("empty message" in reason for reason in reasons)


async def test_permanently_rejected_data_is_marked_and_skipped(cluster):
    cluster.create_topic("otlp_spans", 1)
    sent = [make_traces(1), make_traces(1)]
    cluster.produce("otlp_spans", [b.SerializeToString() for b in sent])
    pipeline = Pipeline(refuse=1, error=PermanentError("bad data"))
    async with receiving(cluster, {}, {Signal.TRACES: pipeline}) as receiver:
        await pipeline.wait(items=1)
    assert pipeline.batches == [sent[1]] and pipeline.offers == 2
    assert (counter(receiver, "refused"), counter(receiver, "accepted")) == (1, 1)
    assert cluster.committed(GROUP, "otlp_spans", 1) == {0: 2}


async def test_on_permanent_error_false_blocks_the_partition(cluster):
    cluster.create_topic("otlp_spans", 1)
    cluster.produce("otlp_spans", [make_traces(1).SerializeToString() for _ in range(2)])
    pipeline = Pipeline(refuse=-1, error=PermanentError("bad data"))
    config = {"message_marking": {"on_permanent_error": False}, "autocommit": {"interval": "100ms"}}
    async with receiving(cluster, config, {Signal.TRACES: pipeline}):
        await pipeline.wait(offers=3)
    assert pipeline.batches == []
    assert cluster.committed(GROUP, "otlp_spans", 1) == {}


async def test_on_error_gives_up_on_refused_data_and_marks_it(cluster, caplog):
    cluster.create_topic("otlp_spans", 1)
    cluster.produce("otlp_spans", [make_traces(1).SerializeToString() for _ in range(2)])
    pipeline = Pipeline(refuse=-1)
    config = {"message_marking": {"on_error": True}, "autocommit": {"enable": False}}
    async with receiving(cluster, config, {Signal.TRACES: pipeline}):
        await pipeline.wait(offers=2)
        await asyncio.sleep(0.3)
        assert pipeline.offers == 2  # each offered once, then given up on
        assert cluster.committed(GROUP, "otlp_spans", 1) == {0: 2}
    assert any(
        "dropping 1 spans from kafka, the pipeline refused them" in r.getMessage()
        for r in caplog.records
    )


async def test_marking_before_the_pipeline_commits_what_it_refused(cluster):
    cluster.create_topic("otlp_spans", 1)
    cluster.produce("otlp_spans", [make_traces(1).SerializeToString()])
    pipeline = Pipeline(refuse=-1)
    config = {"message_marking": {"after": False}, "autocommit": {"interval": "100ms"}}
    async with receiving(cluster, config, {Signal.TRACES: pipeline}):
        await pipeline.wait(offers=2)
    assert cluster.committed(GROUP, "otlp_spans", 1) == {0: 1}  # lost to a crash, as upstream


async def test_headers_become_metadata_and_chosen_ones_resource_attributes(cluster):
    batch = make_logs(2)
    headers = [("tenant", b"acme"), ("trace-source", b"edge")]
    cluster.produce("otlp_logs", [batch.SerializeToString()], headers=headers)
    pipeline = Pipeline()
    config = {"header_extraction": {"extract_headers": True, "headers": ["tenant", "missing"]}}
    async with receiving(cluster, config, {Signal.LOGS: pipeline}):
        await pipeline.wait(items=2)
    [taken] = pipeline.batches
    attributes = taken.resource_logs[0].resource.attributes
    assert get_attr(attributes, "kafka.header.tenant") == "acme"
    assert get_attr(attributes, "kafka.header.missing") is None
    assert get_attr(attributes, "kafka.header.trace-source") is None
    assert pipeline.metadata[0].get("trace-source") == ("edge",)


async def test_pipelines_that_take_bytes_get_the_message_as_it_is(cluster):
    batch = make_metrics(3)
    cluster.produce("otlp_metrics", [batch.SerializeToString()])
    pipeline = Pipeline()
    pipeline.accepts_encoded = True  # type: ignore[attr-defined]
    async with receiving(cluster, {}, {Signal.METRICS: pipeline}):
        await pipeline.wait(items=3)
    [taken] = pipeline.batches
    assert isinstance(taken, Encoded) and taken.decode() == batch
    assert Metrics.FromString(taken.data) == batch


async def test_latest_offset_reads_only_what_comes_after_joining(cluster):
    old = make_traces(1, name="old")
    cluster.produce("otlp_spans", [old.SerializeToString()])
    pipeline = Pipeline()
    async with receiving(cluster, {"initial_offset": "latest"}, {Signal.TRACES: pipeline}):
        deadline = time.monotonic() + 10
        while not pipeline.batches and time.monotonic() < deadline:  # until assigned
            await asyncio.to_thread(
                cluster.produce, "otlp_spans", [make_traces(1, name="new").SerializeToString()]
            )
            await asyncio.sleep(0.1)
    names = {s.name for b in pipeline.batches for _, _, s in iter_spans(b)}
    assert names == {"new"}


async def test_regex_topics_leave_out_excluded_ones(cluster):
    for topic in ("logs-a", "logs-test", "other"):
        cluster.create_topic(topic, 1)
    kept, left_out = make_logs(1, body="kept"), make_logs(1, body="left out")
    pipeline = Pipeline()
    config = {"logs": {"topics": ["^logs-.*"], "exclude_topics": ["^logs-test$"]}}
    async with receiving(cluster, config, {Signal.LOGS: pipeline}):
        cluster.produce("logs-test", [left_out.SerializeToString()])
        cluster.produce("other", [left_out.SerializeToString()])
        cluster.produce("logs-a", [kept.SerializeToString()])
        await pipeline.wait(items=1)
        await asyncio.sleep(0.3)
    assert pipeline.batches == [kept]


async def test_a_refused_partition_rejoins_after_a_restart_with_nothing_lost(cluster):
    """Two signals' consumers in one group: refusing metrics never holds up traces."""
    cluster.create_topic("otlp_spans", 2)
    cluster.create_topic("otlp_metrics", 2)
    spans, metrics = make_traces(3), make_metrics(2)
    cluster.produce("otlp_spans", [spans.SerializeToString()])
    cluster.produce("otlp_metrics", [metrics.SerializeToString()])
    traces, refusing = Pipeline(), Pipeline(refuse=-1)
    async with receiving(cluster, {}, {Signal.TRACES: traces, Signal.METRICS: refusing}):
        await traces.wait(items=3)
        await refusing.wait(offers=2)
    assert traces.batches == [spans] and refusing.batches == []
    taking = Pipeline()
    async with receiving(cluster, {}, {Signal.METRICS: taking}):
        await taking.wait(items=2)
    assert taking.batches == [metrics]


@pytest.mark.slow
async def test_rebalances_while_paused_lose_and_repeat_nothing(cluster):
    """A refusing member holds its partitions paused; one that joins takes some over, and
    when it leaves they come back paused, until the pipeline takes data again."""
    cluster.create_topic("otlp_spans", 4)
    first = {p: make_traces(1, name=f"first-{p}") for p in range(4)}
    for p, batch in first.items():
        cluster.produce("otlp_spans", [batch.SerializeToString()], partition=p)
    held = Pipeline(refuse=-1)
    # A longer session: the mock coordinator misses short ones while its group rebalances.
    steady = {"session_timeout": "1s", "heartbeat_interval": "200ms"}
    backoff = {"enabled": True, "initial_interval": "50ms", "max_interval": "200ms"}
    async with receiving(cluster, {**steady, "error_backoff": backoff}, {Signal.TRACES: held}):
        await held.wait(offers=2)
        joining = Pipeline()
        async with receiving(cluster, steady, {Signal.TRACES: joining}):
            await joining.wait(items=2)  # cooperative-sticky moves two partitions over
        second = {p: make_traces(1, name=f"second-{p}") for p in range(4)}
        for p, batch in second.items():
            cluster.produce("otlp_spans", [batch.SerializeToString()], partition=p)
        await asyncio.sleep(0.5)  # the leaver's partitions came back, paused
        assert held.batches == []
        held.refuse = 0
        await held.wait(items=8 - joining.items)
    taken = [s.name for b in held.batches + joining.batches for _, _, s in iter_spans(b)]
    assert sorted(taken) == sorted(
        [f"first-{p}" for p in range(4)] + [f"second-{p}" for p in range(4)]
    )
    assert committed_total(cluster, "otlp_spans") == 8


async def test_unreachable_brokers_do_not_fail_start_or_stop(caplog):
    pipeline = Pipeline()
    config = Config.model_validate({"brokers": [f"127.0.0.1:{free_port()}"]})
    receiver = factory.create(make_settings("receiver", "kafka"), config, {Signal.LOGS: pipeline})
    await receiver.start(StaticHost())
    await asyncio.sleep(0.5)
    async with asyncio.timeout(5):
        await receiver.shutdown()
    assert any("kafka client error" in r.getMessage() for r in caplog.records)


async def test_a_configuration_librdkafka_refuses_fails_start_clearly(tmp_path):
    config = Config.model_validate({"tls": {"ca_file": str(tmp_path / "missing.pem")}})
    receiver = factory.create(make_settings("receiver", "kafka"), config, {Signal.LOGS: Pipeline()})
    with pytest.raises(
        ValueError, match=r"kafka consumer refused its configuration: .*ssl\.ca\.location"
    ):
        await receiver.start(StaticHost())
    await receiver.shutdown()


# --- two real collectors chained through the mock cluster ----------------------------------

# Runs `coldtail run` with the kafka components registered, whether or not the registry
# lists them yet.
FRONT = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}"}}}}}}
exporters:
  kafka:
    brokers: [{brokers}]
    partition_traces_by_id: true
    traces: {{topic: coldtail-e2e}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [kafka]}}
"""

BACK = """
receivers:
  kafka:
    brokers: [{brokers}]
    group_id: coldtail-e2e
    initial_offset: earliest
    session_timeout: 500ms
    heartbeat_interval: 100ms
    traces: {{topics: [coldtail-e2e]}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [kafka], exporters: [file]}}
"""


def collector(tmp_path: Path, name: str, config: str) -> CollectorProcess:
    path = tmp_path / f"{name}.yaml"
    path.write_text(config)
    return CollectorProcess(path)


def test_collectors_chained_through_kafka(tmp_path):
    spans = sdk_spans(traces=6, spans_per_trace=3)
    with MockCluster(brokers=3) as cluster:
        cluster.create_topic("coldtail-e2e", 4)
        http, out = free_port(), tmp_path / "out.jsonl"
        front = collector(tmp_path, "front", FRONT.format(http=http, brokers=cluster.bootstrap))
        back = collector(tmp_path, "back", BACK.format(brokers=cluster.bootstrap, out=out))
        with front, back:
            sdk = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http}/v1/traces")
            assert sdk.export(spans) == SpanExportResult.SUCCESS
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                received = read_requests(out)[Signal.TRACES] if out.exists() else []
                if sum(count_items(r) for r in received) >= 18:
                    break
                time.sleep(0.1)
            assert front.stop() == 0 and back.stop() == 0
        messages = cluster.read("coldtail-e2e", 6)
    assert span_ids(received) == span_ids([encode_spans(spans)])
    assert len(messages) == 6  # one per trace, keyed by its id
    for message in messages:
        part = Traces.FromString(message.value() or b"")
        [trace_id] = {s.trace_id for _, _, s in iter_spans(part)}
        assert message.key() == trace_id.hex().encode()
