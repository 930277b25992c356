"""kafka exporter: OpenTelemetry SDK spans through the exporter into librdkafka's mock Kafka
cluster (tests/support/kafka_cluster.py: real brokers on loopback, no broker runs here), read
back with a plain consumer."""

import ssl
import time
from pathlib import Path

import pytest
import trustme
import yaml
from confluent_kafka import Producer
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from collector.core import client, otlpjson
from collector.core.client import ClientInfo
from collector.core.consumer import PermanentError, RetryableError
from collector.core.kafka_client import client_properties
from collector.core.pdata import Logs, Metrics, Traces, count_items, get_attr, iter_spans
from collector.core.signals import Signal
from collector.exporters.kafka import (
    Config,
    KafkaExporter,
    attributes_key,
    factory,
    producer_properties,
    split_by_trace,
)
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.kafka_cluster import MockCluster, TLSFront
from tests.support.process import free_port

TESTDATA = yaml.safe_load((Path(__file__).parent / "testdata" / "kafka_config.yaml").read_text())


@pytest.fixture
def cluster():
    with MockCluster(brokers=3) as c:
        yield c


async def started(config: dict, signal: Signal = Signal.TRACES) -> KafkaExporter:
    exporter = factory.create(
        make_settings("exporter", "kafka"), Config.model_validate(config), signal
    )
    await exporter.start(StaticHost())
    return exporter


async def export(config: dict, *batches, signal: Signal = Signal.TRACES) -> KafkaExporter:
    """Start an exporter, hand it `batches`, wait until Kafka took them all, stop it."""
    exporter = await started(config, signal)
    try:
        for batch in batches:
            await exporter.consume(batch)
        await exporter.flush()
    finally:
        await exporter.shutdown()
    return exporter


def sdk_traces(traces: int, spans_per_trace: int) -> Traces:
    """`traces` traces of `spans_per_trace` spans each, made by the OpenTelemetry SDK, in one
    export request."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("checkout.handler", "1.0")
    for i in range(traces):
        with tracer.start_as_current_span(f"GET /carts/{i}", kind=SpanKind.SERVER) as root:
            root.set_attribute("cart.index", i)
            for j in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"db.query {j}", kind=SpanKind.CLIENT):
                    pass
    provider.shutdown()
    return encode_spans(memory.get_finished_spans())


def span_ids(batch) -> set[tuple[bytes, bytes, str]]:
    return {(s.trace_id, s.span_id, s.name) for _, _, s in iter_spans(batch)}


@pytest.mark.parametrize("name", sorted(TESTDATA["valid"]))
def test_valid_configs(name):
    Config.model_validate(TESTDATA["valid"][name] or {})


@pytest.mark.parametrize("name", sorted(TESTDATA["invalid"]))
def test_invalid_configs_say_what_is_wrong(name):
    case = TESTDATA["invalid"][name]
    with pytest.raises(ValidationError) as excinfo:
        Config.model_validate(case["config"])
    assert case["error"] in str(excinfo.value)


def test_topics_default_per_signal_and_the_deprecated_top_level_fills_the_rest():
    defaults = Config.model_validate({})
    assert (defaults.traces.topic, defaults.metrics.topic, defaults.logs.topic) == (
        "otlp_spans",
        "otlp_metrics",
        "otlp_logs",
    )
    assert defaults.traces.encoding == "otlp_proto"
    mixed = Config.model_validate(
        {
            "topic": "all",
            "encoding": "otlp_json",
            "logs": {"topic": "logs", "encoding": "otlp_proto"},
        }
    )
    assert (mixed.traces.topic, mixed.traces.encoding) == ("all", "otlp_json")
    assert (mixed.logs.topic, mixed.logs.encoding) == ("logs", "otlp_proto")


def test_auth_tls_and_producer_options_become_librdkafka_properties():
    config = Config.model_validate(
        {
            "brokers": "b-1:9096,b-2:9096",
            "client_id": "coldtail",
            "tls": {"ca_pem": "-----BEGIN CERTIFICATE-----", "insecure_skip_verify": True},
            "auth": {"sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "p"}},
            "timeout": "2s",
            "producer": {
                "required_acks": "all",
                "compression": "lz4",
                "compression_params": {"level": 4},
                "flush_max_messages": 100,
                "linger": "5ms",
                "allow_auto_topic_creation": False,
            },
        }
    )
    props = producer_properties(config)
    assert props["bootstrap.servers"] == "b-1:9096,b-2:9096"
    assert props["client.id"] == "coldtail"
    assert props["security.protocol"] == "SASL_SSL"
    assert (props["sasl.mechanism"], props["sasl.username"], props["sasl.password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert props["ssl.ca.pem"] == "-----BEGIN CERTIFICATE-----"
    assert props["enable.ssl.certificate.verification"] is False
    assert props["acks"] == -1
    assert (props["compression.codec"], props["compression.level"]) == ("lz4", 4)
    assert props["batch.num.messages"] == 100
    assert props["linger.ms"] == 5
    assert props["allow.auto.create.topics"] is False
    assert props["message.timeout.ms"] == 1800  # librdkafka gives up before the attempt
    # librdkafka takes every property (it checks names and values when the client is made).
    Producer({**props, "ssl.ca.pem": "", "log_level": 0})


def test_sasl_alone_is_plain_text_and_tls_insecure_turns_tls_off():
    sasl = {"sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"}}
    assert client_properties(Config.model_validate({"auth": sasl}))["security.protocol"] == (
        "SASL_PLAINTEXT"
    )
    assert client_properties(Config.model_validate({"tls": None}))["security.protocol"] == "SSL"
    insecure = Config.model_validate({"tls": {"insecure": True}})
    assert client_properties(insecure)["security.protocol"] == "PLAINTEXT"
    legacy = Config.model_validate({"auth": {"plain_text": {"username": "u", "password": "p"}}})
    props = client_properties(legacy)
    assert (props["security.protocol"], props["sasl.mechanism"]) == ("SASL_PLAINTEXT", "PLAIN")


async def test_sdk_spans_arrive_as_one_otlp_protobuf_message(cluster):
    batch = sdk_traces(traces=3, spans_per_trace=2)
    exporter = await export({"brokers": [cluster.bootstrap]}, batch)
    [message] = cluster.read("otlp_spans", 1)
    assert message.key() is None
    assert Traces.FromString(message.value()) == batch
    assert exporter.accepts_encoded  # nothing to split: the pipeline's bytes go out as they are


async def test_partition_traces_by_id_keeps_each_trace_in_one_partition(cluster):
    cluster.create_topic("spans", 8)
    batch = sdk_traces(traces=12, spans_per_trace=4)
    # Interleave the traces' spans, as a batch processor merging several requests would.
    spans = sorted(batch.resource_spans[0].scope_spans[0].spans, key=lambda s: s.span_id)
    del batch.resource_spans[0].scope_spans[0].spans[:]
    batch.resource_spans[0].scope_spans[0].spans.extend(spans)
    config = {"brokers": [cluster.bootstrap], "traces": {"topic": "spans"}}
    exporter = await export({**config, "partition_traces_by_id": True}, batch)
    assert not exporter.accepts_encoded
    messages = cluster.read("spans", 12)
    assert len(messages) == 12  # one message per trace
    partitions: dict[bytes, set[int]] = {}
    received = Traces()
    for message in messages:
        part = Traces.FromString(message.value())
        [trace_id] = {s.trace_id for _, _, s in iter_spans(part)}
        assert message.key() == trace_id.hex().encode()
        assert get_attr(part.resource_spans[0].resource.attributes, "service.name") == "checkout"
        assert part.resource_spans[0].scope_spans[0].scope.name == "checkout.handler"
        partitions.setdefault(trace_id, set()).add(message.partition())
        received.MergeFrom(part)
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # traces spread over them
    assert span_ids(received) == span_ids(batch)
    # The same trace id goes to the same partition in another batch too.
    trace_id, [partition] = next(iter(partitions.items()))
    again = make_traces(2, trace_id=trace_id)
    await export({**config, "partition_traces_by_id": True}, again)
    late = [m for m in cluster.read("spans", 13) if m.key() == trace_id.hex().encode()]
    assert len(late) == 2
    assert {m.partition() for m in late} == {partition}


def test_split_by_trace_keeps_resources_and_scopes_apart():
    first = make_traces(2, resource={"service.name": "a"}, trace_id=b"\x01" * 16)
    second = make_traces(1, resource={"service.name": "b"}, trace_id=b"\x01" * 16)
    other = make_traces(1, resource={"service.name": "b"}, trace_id=b"\x02" * 16)
    batch = Traces()
    for part in (first, second, other):
        batch.MergeFrom(part)
    parts = dict(split_by_trace(batch, Signal.TRACES))
    assert list(parts) == [b"\x01" * 16, b"\x02" * 16]
    services = [
        get_attr(rs.resource.attributes, "service.name")
        for rs in parts[b"\x01" * 16].resource_spans
    ]
    assert services == ["a", "b"]
    assert count_items(parts[b"\x01" * 16]) == 3 and count_items(parts[b"\x02" * 16]) == 1


async def test_otlp_json_messages_carry_hex_ids(cluster):
    batch = make_traces(3)
    await export({"brokers": [cluster.bootstrap], "traces": {"encoding": "otlp_json"}}, batch)
    [message] = cluster.read("otlp_spans", 1)
    text = message.value().decode()
    span = batch.resource_spans[0].scope_spans[0].spans[0]
    assert f'"traceId":"{span.trace_id.hex()}"' in text
    assert otlpjson.parse(text, Traces) == batch


async def test_metrics_and_logs_partitioned_by_resource_attributes(cluster):
    metrics = make_metrics(2, resource={"service.name": "a", "host.name": "h1"})
    metrics.MergeFrom(make_metrics(3, resource={"service.name": "b"}))
    await export(
        {"brokers": [cluster.bootstrap], "partition_metrics_by_resource_attributes": True},
        metrics,
        signal=Signal.METRICS,
    )
    messages = cluster.read("otlp_metrics", 2)
    by_key = {m.key(): Metrics.FromString(m.value()) for m in messages}
    assert len(by_key) == 2 and all(len(k) == 16 for k in by_key)
    for key, part in by_key.items():
        [rm] = part.resource_metrics
        assert key == attributes_key(rm.resource.attributes)
    assert sorted(count_items(p) for p in by_key.values()) == [2, 3]

    logs = make_logs(2, resource={"service.name": "a", "host.name": "h1"})
    # The same attributes in another order are the same resource, so the same key.
    logs.MergeFrom(make_logs(1, resource={"host.name": "h1", "service.name": "a"}))
    await export(
        {"brokers": [cluster.bootstrap], "partition_logs_by_resource_attributes": True},
        logs,
        signal=Signal.LOGS,
    )
    keys = {m.key() for m in cluster.read("otlp_logs", 2)}
    assert keys == {attributes_key(metrics.resource_metrics[0].resource.attributes)}


async def test_logs_partitioned_by_trace_id(cluster):
    logs = make_logs(3)
    records = logs.resource_logs[0].scope_logs[0].log_records
    records[0].trace_id = records[2].trace_id = b"\x07" * 16
    await export(
        {"brokers": [cluster.bootstrap], "partition_logs_by_trace_id": True},
        logs,
        signal=Signal.LOGS,
    )
    by_key = {m.key(): Logs.FromString(m.value()) for m in cluster.read("otlp_logs", 2)}
    assert {k: count_items(v) for k, v in by_key.items()} == {(b"07" * 16): 2, None: 1}


async def test_topics_and_headers_from_client_metadata_and_attributes(cluster):
    config = {
        "brokers": [cluster.bootstrap],
        "traces": {"topic_from_metadata_key": "x-topic"},
        "include_metadata_keys": ["tenant"],
        "record_headers": {"origin": "coldtail"},
    }
    sender = ClientInfo.of("127.0.0.1", [("X-Topic", "tenant-a-spans"), ("Tenant", "a")])
    exporter = await started(config)
    try:
        with client.using(sender):
            await exporter.consume(make_traces(1))
        await exporter.flush()
    finally:
        await exporter.shutdown()
    [message] = cluster.read("tenant-a-spans", 1)
    assert message.headers() == [("origin", b"coldtail"), ("tenant", b"a")]

    batch = make_traces(1, resource={"service.name": "a", "kafka.topic": "spans-of-a"})
    batch.MergeFrom(make_traces(2, resource={"service.name": "b"}))
    await export({"brokers": [cluster.bootstrap], "topic_from_attribute": "kafka.topic"}, batch)
    assert count_items(Traces.FromString(cluster.read("spans-of-a", 1)[0].value())) == 1
    assert count_items(Traces.FromString(cluster.read("otlp_spans", 1)[0].value())) == 2


async def test_message_over_max_message_bytes_is_dropped_as_permanent(cluster):
    small, large = make_traces(1), make_traces(1, attributes={"blob": "x" * 5000})
    config = {
        "brokers": [cluster.bootstrap],
        "partition_traces_by_id": True,
        "producer": {"max_message_bytes": 2000},
        "sending_queue": {"enabled": False},
    }
    batch = Traces()
    batch.MergeFrom(small)
    batch.MergeFrom(large)
    exporter = await started(config)
    try:
        with pytest.raises(PermanentError, match="over max_message_bytes") as excinfo:
            await exporter.consume(batch)
    finally:
        await exporter.shutdown()
    assert excinfo.value.rejected == 1
    [message] = cluster.read("otlp_spans", 1, timeout=2)  # the one that fits went
    assert Traces.FromString(message.value()) == small


async def test_unreachable_brokers_fail_the_attempt_retryably_after_timeout(caplog):
    config = {
        "brokers": [f"127.0.0.1:{free_port()}"],
        "timeout": "500ms",
        "sending_queue": {"enabled": False},
        "retry_on_failure": {"enabled": False},
    }
    exporter = await started(config)
    started_at = time.monotonic()
    try:
        # librdkafka's message timeout or the attempt's, whichever comes first.
        with pytest.raises(RetryableError, match=r"not delivered|timed out"):
            await exporter.consume(make_traces(1))
    finally:
        await exporter.shutdown()
    assert time.monotonic() - started_at < 3
    assert any("kafka client error" in r.getMessage() for r in caplog.records)


def test_client_log_reports_each_kind_once_per_interval(caplog):
    from collector.core.kafka_client import ClientLog

    log = ClientLog(make_settings("exporter", "kafka").logger, interval=60)
    with caplog.at_level("INFO", logger="coldtail"):
        for _ in range(5):
            log.log(40, "%s [%s] %s", "FAIL", "rdkafka#producer-1", "connect failed")
        log.log(30, "%s [%s] %s", "REQTMOUT", "rdkafka#producer-1", "timed out")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "librdkafka: FAIL [rdkafka#producer-1] connect failed",
        "librdkafka: REQTMOUT [rdkafka#producer-1] timed out",
    ]


def tls_cluster(ca: trustme.CA, tmp_path: Path):
    """A one-broker mock cluster reached only over mutual TLS (a TLS front advertised as the
    broker); yields the bootstrap address and the client's certificate files."""
    server = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    client_cert = ca.issue_cert("coldtail-exporter")
    files = {"ca_file": tmp_path / "ca.pem", "cert_file": tmp_path / "client.pem"}
    ca.cert_pem.write_to_path(str(files["ca_file"]))
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(files["cert_file"]))
    return context, {k: str(v) for k, v in files.items()}


async def test_mutual_tls_reaches_the_broker_with_the_configured_files(tmp_path):
    ca = trustme.CA()
    context, files = tls_cluster(ca, tmp_path)
    with MockCluster(brokers=1) as cluster, TLSFront(context, cluster.bootstrap) as front:
        plain = cluster.bootstrap
        cluster.advertise(1, "127.0.0.1", front.port)
        tls = {
            "ca_file": files["ca_file"],
            "cert_file": files["cert_file"],
            "key_file": files["cert_file"],
        }
        batch = make_traces(2)
        await export({"brokers": [f"127.0.0.1:{front.port}"], "tls": tls}, batch)
        cluster.advertise(1, "127.0.0.1", int(plain.rsplit(":", 1)[1]))
        [message] = cluster.read("otlp_spans", 1)
        assert Traces.FromString(message.value()) == batch


async def test_tls_without_the_client_certificate_is_refused(tmp_path):
    ca = trustme.CA()
    context, files = tls_cluster(ca, tmp_path)
    with MockCluster(brokers=1) as cluster, TLSFront(context, cluster.bootstrap) as front:
        plain = cluster.bootstrap
        cluster.advertise(1, "127.0.0.1", front.port)
        config = {
            "brokers": [f"127.0.0.1:{front.port}"],
            "tls": {"ca_file": files["ca_file"]},
            "timeout": "1s",
            "sending_queue": {"enabled": False},
            "retry_on_failure": {"enabled": False},
        }
        exporter = await started(config)
        try:
            with pytest.raises(RetryableError):
                await exporter.consume(make_traces(1))
        finally:
            await exporter.shutdown()
        cluster.advertise(1, "127.0.0.1", int(plain.rsplit(":", 1)[1]))
        cluster.create_topic("otlp_spans", 1)
        assert cluster.read("otlp_spans", 1, timeout=0.5) == []


async def test_a_configuration_librdkafka_refuses_fails_start_clearly(tmp_path):
    config = Config.model_validate({"tls": {"ca_file": str(tmp_path / "missing.pem")}})
    exporter = factory.create(make_settings("exporter", "kafka"), config, Signal.TRACES)
    with pytest.raises(ValueError, match=r"kafka producer refused its configuration: .*ssl\.ca"):
        await exporter.start(StaticHost())
    await exporter.shutdown()
