"""Exporter `kafka`: each batch as Kafka messages, as the OTel Collector's kafka exporter writes
them, through the shared sender chain (queue -> retry -> timeout -> push).

A batch is one message on its signal's topic (`otlp_spans`, `otlp_metrics`, `otlp_logs` by
default), encoded as `otlp_proto` (the export request's protobuf, default) or `otlp_json`. With
`partition_traces_by_id` the batch is split per trace, each part keyed by its trace id in hex, so
that every span of a trace lands on one partition; `partition_metrics_by_resource_attributes`
and `partition_logs_by_resource_attributes` send one message per resource keyed by a hash of its
attributes; `partition_logs_by_trace_id` splits logs per trace. Keys pick the partition with
FNV-1a, the hash of the Collector's default (Sarama-compatible) partitioner.

The client is librdkafka (confluent-kafka). Its produce is asynchronous and reports each
message's delivery from `poll`, which a thread of the exporter's own calls: each push hands its
messages to librdkafka and awaits one asyncio future that the delivery reports resolve, so a
batch counts as sent only when Kafka acknowledged every one of its messages (as `required_acks`
says). A failed delivery is retried by the sender chain (the whole batch, so a retry may repeat
messages Kafka already took: at least once); a message larger than
`producer::max_message_bytes`, or one the broker refuses as too large or unauthorized, is a
permanent error. librdkafka gives up on a message just before `timeout` ends the attempt it
belongs to, so that no retry races a late first delivery.

Tested against librdkafka's own mock cluster (the one `test.mock.num.brokers` starts): real
brokers speaking the Kafka protocol on loopback, with consumer groups and committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.core import client
from collector.core.client import ClientInfo
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import PermanentError, RetryableError
from collector.core.kafka_client import (
    DEFAULT_TOPICS,
    ClientConfig,
    ClientLog,
    check_encoding,
    client_properties,
    describe,
    encode,
)
from collector.core.pdata import LEVELS, Encoded, count_items, new_batch, resources
from collector.core.signals import Signal
from collector.exporters.sender import Exporter, SenderConfig

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Producer

# librdkafka's compression.level range for each codec (-1: the codec's default).
_LEVELS = {"none": (-1, -1), "gzip": (-1, 9), "snappy": (-1, -1), "lz4": (-1, 12), "zstd": (-1, 22)}
# At shutdown, what librdkafka still holds gets this long to be delivered.
_FLUSH_S = 5.0


class SignalConfig(ComponentConfig):
    topic: str = Field("", min_length=1)
    """The topic to produce to (default otlp_spans, otlp_metrics or otlp_logs, by signal)."""
    encoding: str = "otlp_proto"
    """How a batch is written: `otlp_proto` (the OTLP export request's protobuf, default) or
    `otlp_json`."""
    topic_from_metadata_key: str = ""
    """Client metadata key whose value is the topic, ahead of `topic_from_attribute` and
    `topic` (default empty = none); needs `include_metadata` on the receiver."""
    message_key_from_metadata_key: str = ""
    """Client metadata key whose value keys every message (default empty = none); excludes
    this signal's `partition_*` options."""

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        return check_encoding(value)


class CompressionParams(ComponentConfig):
    level: int = -1
    """Compression level (default -1 = the codec's default): gzip 1 to 9, lz4 up to 12, zstd up
    to 22; snappy has none."""


class ProducerConfig(ComponentConfig):
    max_message_bytes: int = Field(1_000_000, ge=1)
    """Largest message value in bytes, before compression (default 1000000). A larger message
    is dropped as a permanent error."""
    max_broker_write_bytes: int = Field(104_857_600, ge=1000, le=1_000_000_000)
    """Largest request written to a broker in bytes (default 104857600); at least
    `max_message_bytes`."""
    required_acks: int = 1
    """Acknowledgements a message needs to count as written: 0 (none), 1 (the partition
    leader's, default) or -1 / `all` (every in-sync replica's)."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    """Compression of message batches: none (default), gzip, snappy, lz4 or zstd."""
    compression_params: CompressionParams = Field(default_factory=CompressionParams)
    """The compression level."""
    flush_max_messages: int = Field(10_000, ge=0, le=1_000_000)
    """Most messages in one produce request (default 10000; 0 = librdkafka's default)."""
    allow_auto_topic_creation: bool = True
    """Let the brokers create a missing topic on first use (default true), where they allow
    it."""
    linger: Duration = Field(0.01, ge=0, le=900)
    """How long messages wait for others to share a request (default 10ms)."""

    @field_validator("required_acks", mode="before")
    @classmethod
    def _acks(cls, value: object) -> object:
        if value == "all":
            return -1
        if value not in (-1, 0, 1) or isinstance(value, bool):
            raise ValueError(f"expected 'all' (-1), 0 or 1; got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> ProducerConfig:
        low, high = _LEVELS[self.compression]
        level = self.compression_params.level
        if not low <= level <= high:
            raise ValueError(
                f"compression_params.level {level} is not valid for {self.compression}"
                + (f" (expected {low} to {high})" if high > low else " (it takes none)")
            )
        if self.max_broker_write_bytes < self.max_message_bytes:
            raise ValueError("max_broker_write_bytes must be at least max_message_bytes")
        return self


class Options(ClientConfig):
    """The exporter's options besides the sender blocks."""

    traces: SignalConfig = Field(default_factory=lambda: SignalConfig(topic="otlp_spans"))
    """Topic and encoding of spans (default topic otlp_spans)."""
    metrics: SignalConfig = Field(default_factory=lambda: SignalConfig(topic="otlp_metrics"))
    """Topic and encoding of metrics (default topic otlp_metrics)."""
    logs: SignalConfig = Field(default_factory=lambda: SignalConfig(topic="otlp_logs"))
    """Topic and encoding of logs (default topic otlp_logs)."""
    topic: str = ""
    """Deprecated upstream: the topic of every signal whose block names none (default empty)."""
    encoding: str = ""
    """Deprecated upstream: the encoding of every signal whose block names none (default
    empty)."""
    topic_from_attribute: str = ""
    """Resource attribute whose value is the topic, when present (default empty = none); each
    resource then goes in a message of its own."""
    include_metadata_keys: list[str] = Field(default_factory=list)
    """Client metadata keys sent as message headers, where present (default none)."""
    record_headers: dict[str, str] = Field(default_factory=dict)
    """Headers set on every message (default none)."""
    partition_traces_by_id: bool = False
    """Split span batches per trace and key each message by its trace id in hex (default
    false), so that every span of a trace goes to one partition."""
    partition_metrics_by_resource_attributes: bool = False
    """One message per resource, keyed by a hash of its attributes (default false)."""
    partition_logs_by_resource_attributes: bool = False
    """One message per resource, keyed by a hash of its attributes (default false)."""
    partition_logs_by_trace_id: bool = False
    """Split log batches per trace and key each message by its trace id in hex (default false;
    records without a trace id go unkeyed)."""
    producer: ProducerConfig = Field(default_factory=ProducerConfig)
    """How messages are produced."""

    @model_validator(mode="before")
    @classmethod
    def _signal_defaults(cls, data: Any) -> Any:
        """Each signal block's topic and encoding: its own, else the deprecated top-level
        ones, else the signal's default topic."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for signal in Signal:
            block = data.get(signal.value)
            if block is None:
                block = {}
            if not isinstance(block, dict):
                continue  # the type error names the key
            block = dict(block)
            block.setdefault("topic", data.get("topic") or DEFAULT_TOPICS[signal])
            if data.get("encoding"):
                block.setdefault("encoding", data["encoding"])
            data[signal.value] = block
        return data

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        return check_encoding(value) if value else value

    @model_validator(mode="after")
    def _check_partitioning(self) -> Options:
        if self.partition_logs_by_resource_attributes and self.partition_logs_by_trace_id:
            raise ValueError(
                "partition_logs_by_resource_attributes and partition_logs_by_trace_id cannot "
                "both be enabled"
            )
        keyed = {
            "traces": self.partition_traces_by_id,
            "metrics": self.partition_metrics_by_resource_attributes,
            "logs": self.partition_logs_by_resource_attributes or self.partition_logs_by_trace_id,
        }
        for name, partitioned in keyed.items():
            if partitioned and getattr(self, name).message_key_from_metadata_key:
                raise ValueError(
                    f"{name}.message_key_from_metadata_key cannot be combined with the "
                    f"partition_* option of {name}"
                )
        return self


# With the bases in this order, pydantic lists the sender blocks after the exporter's own options.
class Config(SenderConfig, Options):
    pass


def producer_properties(config: Config) -> dict[str, Any]:
    """The librdkafka properties of the exporter's producer."""
    producer = config.producer
    linger_ms = producer.linger * 1000
    props = client_properties(config)
    props.update(
        {
            "acks": producer.required_acks,
            "compression.codec": producer.compression,
            "message.max.bytes": producer.max_broker_write_bytes,
            "allow.auto.create.topics": producer.allow_auto_topic_creation,
            "linger.ms": linger_ms,
            "partitioner": "fnv1a_random",
            # librdkafka gives up on a message a little before the attempt it belongs to
            # times out: the attempt then fails with librdkafka's reason, and its retry never
            # races a late delivery of the first try (0 = never).
            "message.timeout.ms": max(round(config.timeout * 900), int(linger_ms) + 1)
            if config.timeout
            else 0,
        }
    )
    if producer.compression_params.level != -1:
        props["compression.level"] = producer.compression_params.level
    if producer.flush_max_messages:
        props["batch.num.messages"] = producer.flush_max_messages
    return props


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str | bytes | None]]
    items: int


def split_by_trace(batch, signal: Signal) -> list[tuple[bytes, Any]]:
    """(trace id, batch) per trace id of the spans or log records, in order of first
    appearance; each part keeps its items' resources and scopes."""
    scopes_field, items_field = LEVELS[signal]
    parts: dict[bytes, tuple[Any, dict, dict]] = {}
    for ri, res in enumerate(resources(batch)):
        for si, scope in enumerate(getattr(res, scopes_field)):
            for item in getattr(scope, items_field):
                entry = parts.get(item.trace_id)
                if entry is None:
                    entry = parts[item.trace_id] = (new_batch(signal), {}, {})
                part, res_out, scope_out = entry
                target = scope_out.get((ri, si))
                if target is None:
                    out = res_out.get(ri)
                    if out is None:
                        out = res_out[ri] = resources(part).add()
                        out.resource.CopyFrom(res.resource)
                        out.schema_url = res.schema_url
                    target = scope_out[ri, si] = getattr(out, scopes_field).add()
                    target.scope.CopyFrom(scope.scope)
                    target.schema_url = scope.schema_url
                getattr(target, items_field).add().CopyFrom(item)
    return [(trace_id, part) for trace_id, (part, _, _) in parts.items()]


def split_by_resource(batch, signal: Signal) -> list[Any]:
    """One batch per resource of `batch`."""
    parts = []
    for res in resources(batch):
        part = new_batch(signal)
        resources(part).add().CopyFrom(res)
        parts.append(part)
    return parts


def attributes_key(attributes: Iterable) -> bytes:
    """A 16-byte hash of an attribute list that does not depend on the attributes' order."""
    digest = hashlib.blake2b(digest_size=16)
    for kv in sorted(attributes, key=lambda kv: kv.key):
        for part in (kv.key.encode(), kv.value.SerializeToString(deterministic=True)):
            digest.update(len(part).to_bytes(4, "big"))
            digest.update(part)
    return digest.digest()


class _Deliveries:
    """The delivery reports of one push's messages: `future` gets the failures (KafkaError)
    once every message was acknowledged or failed. `report` is librdkafka's delivery callback,
    called from the poll thread; it resolves the future on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.future: asyncio.Future[list[KafkaError]] = loop.create_future()
        self._loop = loop
        self._pending = count
        self._failures: list[KafkaError] = []
        self._lock = threading.Lock()

    def report(self, error: KafkaError | None, _message: object = None) -> None:
        with self._lock:
            if error is not None:
                self._failures.append(error)
            self._pending -= 1
            done = self._pending == 0
        if done:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if not self.future.done():  # a timed-out attempt cancelled it
            self.future.set_result(self._failures)


def _permanent_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError as E

    return frozenset(
        {
            E.MSG_SIZE_TOO_LARGE,
            E.INVALID_MSG_SIZE,
            E.RECORD_LIST_TOO_LARGE,
            E.INVALID_RECORD,
            E.TOPIC_AUTHORIZATION_FAILED,
            E.CLUSTER_AUTHORIZATION_FAILED,
            E.TOPIC_EXCEPTION,
            E._INVALID_ARG,
            E.UNSUPPORTED_FOR_MESSAGE_FORMAT,
            E.UNSUPPORTED_COMPRESSION_TYPE,
            E.INVALID_REQUIRED_ACKS,
        }
    )


class KafkaExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._signal_cfg: SignalConfig = getattr(config, signal.value)
        self._by_trace = (signal is Signal.TRACES and config.partition_traces_by_id) or (
            signal is Signal.LOGS and config.partition_logs_by_trace_id
        )
        self._by_resource = (
            signal is Signal.METRICS and config.partition_metrics_by_resource_attributes
        ) or (signal is Signal.LOGS and config.partition_logs_by_resource_attributes)
        # The pipeline's bytes go out as they are when nothing splits or re-encodes them.
        self.accepts_encoded = self._signal_cfg.encoding == "otlp_proto" and not (
            self._by_trace or self._by_resource or config.topic_from_attribute
        )
        self._client_log = ClientLog(self.log)
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stop = threading.Event()
        self._permanent: frozenset[int] = frozenset()

    async def connect(self) -> None:
        from confluent_kafka import KafkaException, Producer

        props = producer_properties(self.config)
        props["logger"] = self._client_log
        props["error_cb"] = self._client_log.error
        try:
            producer = Producer(props)
        except KafkaException as e:
            raise ValueError(
                f"kafka producer refused its configuration: {e.args[0].str()}"
            ) from None
        self._permanent = _permanent_codes()
        self._producer = producer
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(producer,), name=f"{self.settings.id}-poll", daemon=True
        )
        self._poller.start()

    def _poll(self, producer: Producer) -> None:
        """Serve librdkafka's delivery reports and logs until the exporter stops."""
        while not self._stop.is_set():
            producer.poll(0.1)

    async def disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            left = await asyncio.to_thread(producer.flush, _FLUSH_S)
        finally:
            self._stop.set()
            if self._poller is not None:
                await asyncio.to_thread(self._poller.join)
                self._poller = None
        if left:
            self.log.warning(f"{left} kafka messages were not delivered before shutdown")

    async def push(self, batch) -> None:
        if self._producer is None:
            raise RetryableError("kafka producer is not running")
        if not count_items(batch):
            return
        sender = client.current()  # read here: the context does not follow into the thread
        messages = await self.run_blocking(self._messages, batch, sender)
        limit = self.config.producer.max_message_bytes
        fitting: list[Message] = []
        too_large: list[Message] = []
        for message in messages:
            (fitting if len(message.value) <= limit else too_large).append(message)
        if fitting:
            await self._produce(fitting)
        if too_large:
            largest = max(len(m.value) for m in too_large)
            raise PermanentError(
                f"{len(too_large)} kafka message(s) over max_message_bytes ({limit}), the "
                f"largest {largest} bytes",
                rejected=sum(m.items for m in too_large),
            )

    def _messages(self, batch, sender: ClientInfo) -> list[Message]:
        """The batch as messages: split, keyed, encoded (on an exporter thread)."""
        cfg, signal_cfg = self.config, self._signal_cfg
        headers: list[tuple[str, str | bytes | None]] = [
            (k, v.encode()) for k, v in cfg.record_headers.items()
        ]
        for name in cfg.include_metadata_keys:
            headers.extend((name, value.encode()) for value in sender.get(name))
        fixed_key = _first(sender, signal_cfg.message_key_from_metadata_key).encode()
        messages = []
        for key, part in self._parts(batch):
            messages.append(
                Message(
                    topic=self._topic(part, sender),
                    key=fixed_key or key,
                    value=encode(part, signal_cfg.encoding),
                    headers=headers,
                    items=count_items(part),
                )
            )
        return messages

    def _parts(self, batch) -> list[tuple[bytes | None, Any]]:
        """(message key, batch) for each message the batch becomes."""
        if not (self._by_trace or self._by_resource or self.config.topic_from_attribute):
            return [(None, batch)]
        if isinstance(batch, Encoded):
            batch = batch.decode()
        if self._by_trace:
            return [
                (trace_id.hex().encode() if trace_id.strip(b"\0") else None, part)
                for trace_id, part in split_by_trace(batch, self.signal)
            ]
        return [
            (
                attributes_key(resources(part)[0].resource.attributes)
                if self._by_resource
                else None,
                part,
            )
            for part in split_by_resource(batch, self.signal)
        ]

    def _topic(self, part, sender: ClientInfo) -> str:
        topic = _first(sender, self._signal_cfg.topic_from_metadata_key)
        if topic:
            return topic
        name = self.config.topic_from_attribute
        if name and not isinstance(part, Encoded):
            for res in resources(part):
                for kv in res.resource.attributes:
                    if kv.key == name and kv.value.string_value:
                        return kv.value.string_value
        return self._signal_cfg.topic

    async def _produce(self, messages: list[Message]) -> None:
        deliveries = _Deliveries(asyncio.get_running_loop(), len(messages))
        await self.run_blocking(self._enqueue, messages, deliveries)
        failures = await deliveries.future
        if not failures:
            return
        text = f"{len(failures)} of {len(messages)} kafka messages not delivered: " + describe(
            failures[0]
        )
        if all(f.code() in self._permanent for f in failures):
            raise PermanentError(text)
        raise RetryableError(text)

    def _enqueue(self, messages: list[Message], deliveries: _Deliveries) -> None:
        """Hand the messages to librdkafka (on an exporter thread: while its local queue is
        full, this waits for deliveries to make room, up to `timeout`)."""
        from confluent_kafka import KafkaError, KafkaException

        producer = self._producer
        deadline = time.monotonic() + (self.config.timeout or _FLUSH_S)
        for message in messages:
            while True:
                try:
                    if producer is None:
                        raise KafkaException(KafkaError(KafkaError._DESTROY))
                    producer.produce(
                        message.topic,
                        message.value,
                        message.key,
                        headers=message.headers or None,
                        on_delivery=deliveries.report,
                    )
                except BufferError:
                    if time.monotonic() < deadline and not self._stop.is_set():
                        time.sleep(0.005)  # the poll thread frees room as deliveries complete
                        continue
                    deliveries.report(KafkaError(KafkaError._QUEUE_FULL))
                except KafkaException as e:
                    deliveries.report(e.args[0])
                break


def _first(sender: ClientInfo, key: str) -> str:
    """The first non-empty value of metadata `key`, or ""."""
    if not key:
        return ""
    return next((value for value in sender.get(key) if value), "")


factory = Factory(
    kind=Kind.EXPORTER,
    type="kafka",
    config=Config,
    create=KafkaExporter,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Writes batches as OTLP messages to Kafka topics (librdkafka).",
)
