"""Receiver `kafka`: OTLP messages from Kafka topics, as the OTel Collector's kafka receiver
consumes them, in a consumer group (`group_id`, default otel-collector).

Each signal the receiver's pipelines use gets a consumer of its own, subscribed to that signal's
`topics` (default `otlp_spans`, `otlp_metrics`, `otlp_logs`; a topic starting with `^` is a
regular expression), reading `otlp_proto` (default) or `otlp_json` messages. A consumer runs on a
thread of its own (librdkafka, through confluent-kafka, blocks) and hands each message's batch to
the pipeline on the event loop, waiting for its answer:

- Accepted: the message is marked, and its offset committed with the next commit
  (`autocommit::interval`, or at once when `autocommit::enable` is false). Offsets are thus
  committed only for data the pipeline took: after a crash or a restart, what it had not taken
  is read again (at least once).
- Refused (RetryableError: memory limit, full queue, a backend down behind `wait_for_result`):
  the consumer pauses its partitions and offers the same batch again with backoff
  (`error_backoff`, or 100ms doubling to 5s when that is off) until it is taken, keeping its
  group membership meanwhile. Only with `message_marking::on_error` does it give up (at once,
  or after `error_backoff::max_elapsed_time`), marking the message and dropping the data.
- Rejected as bad data (PermanentError): logged, counted as refused and marked, unless
  `message_marking::on_permanent_error` is false, which retries it as refused data and so
  blocks its partitions.
- Not decodable (not OTLP, wrong ids): skipped and marked, with a warning per reason and count
  at most every 10 s.

`message_marking::after: false` marks each message before the pipeline sees it, as the
Collector does by default: a crash then loses what was in flight. coldtail's default is `after:
true`, for at-least-once delivery.

Each batch goes down the pipeline with the client metadata `kafka.topic`, `kafka.partition`,
`kafka.offset` and the message's headers; `header_extraction` copies chosen headers into
resource attributes named `kafka.header.<name>`.

Tested against librdkafka's own mock cluster (the one `test.mock.num.brokers` starts): real
brokers speaking the Kafka protocol on loopback, with consumer groups and committed offsets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import re
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.core import client
from collector.core.client import ClientInfo
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer, PermanentError, RetryableError
from collector.core.kafka_client import (
    DEFAULT_TOPICS,
    ClientConfig,
    ClientLog,
    check_encoding,
    client_properties,
    decode,
)
from collector.core.pdata import Encoded, accepts_encoded, count_items, resources, set_attr
from collector.core.signals import ITEM_NAMES, Signal
from collector.core.telemetry import DropLog

if TYPE_CHECKING:
    from confluent_kafka import Consumer as KafkaConsumer
    from confluent_kafka import Message, TopicPartition

# Messages taken from librdkafka at a time, and the longest a poll waits for them (also how
# soon a stop is noticed).
_BATCH = 500
_POLL_S = 0.2
# The retry schedule of refused data when error_backoff is off: (initial, multiplier, max).
_DEFAULT_BACKOFF = (0.1, 2.0, 5.0)
# librdkafka has no eager sticky assignor: `sticky` gets the cooperative one.
_STRATEGIES = {
    "range": "range",
    "roundrobin": "roundrobin",
    "sticky": "cooperative-sticky",
    "cooperative-sticky": "cooperative-sticky",
}
Strategy = Literal["range", "roundrobin", "sticky", "cooperative-sticky"]


class TopicsConfig(ComponentConfig):
    topics: list[str] = Field(default_factory=list)
    """Topics to consume (default [otlp_spans], [otlp_metrics] or [otlp_logs], by signal); one
    starting with `^` is a regular expression matching topic names."""
    topic: str = ""
    """Deprecated upstream: a single topic, instead of `topics` (default empty)."""
    encoding: str = "otlp_proto"
    """How messages are written: `otlp_proto` (OTLP export requests as protobuf, default) or
    `otlp_json`."""
    exclude_topics: list[str] = Field(default_factory=list)
    """Regular expressions (unanchored) of topic names to leave out when a `topics` entry is a
    regular expression (default none)."""
    exclude_topic: str = ""
    """Deprecated upstream: a single `exclude_topics` entry (default empty)."""

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        return check_encoding(value)

    @model_validator(mode="after")
    def _aliases(self) -> TopicsConfig:
        if self.topic:
            if self.topics:
                raise ValueError("both topic and topics cannot be set")
            self.topics = [self.topic]
        if self.exclude_topic:
            if self.exclude_topics:
                raise ValueError("both exclude_topic and exclude_topics cannot be set")
            self.exclude_topics = [self.exclude_topic]
        if not self.topics or not all(self.topics):
            raise ValueError("topics must name at least one topic, none empty")
        if self.exclude_topics and not any(t.startswith("^") for t in self.topics):
            raise ValueError(
                "exclude_topics is set but no topic is a regular expression (starting with ^)"
            )
        for pattern in [*self.topics, *self.exclude_topics]:
            if pattern == "":
                raise ValueError("exclude_topics holds an empty pattern, which matches every topic")
            if pattern.startswith("^") or pattern in self.exclude_topics:
                try:
                    re.compile(pattern)
                except re.error as e:
                    raise ValueError(f"invalid regular expression {pattern!r}: {e}") from None
        return self


class AutoCommitConfig(ComponentConfig):
    enable: bool = True
    """Commit marked offsets every `interval` (default true); when false, they are committed
    after each poll's messages were handled."""
    interval: Duration = Field(1.0, gt=0)
    """How often marked offsets are committed (default 1s)."""


class MessageMarkingConfig(ComponentConfig):
    after: bool = True
    """Mark a message once the pipeline took its data (default true: at least once); false
    marks it before the pipeline sees it (the Collector's default: a crash loses data in
    flight)."""
    on_error: bool = False
    """Give up on data the pipeline keeps refusing, marking it (default false: retry until it
    is taken, consumption paused). Gives up at once, or after `error_backoff`'s
    `max_elapsed_time` when that is enabled."""
    on_permanent_error: bool = True
    """Mark data the pipeline rejects as bad and go on (default true). False retries it like
    refused data, which blocks its partitions for good (the Collector's default with `after`
    true)."""


class HeaderExtractionConfig(ComponentConfig):
    extract_headers: bool = False
    """Copy the `headers` below into resource attributes `kafka.header.<name>` (default
    false)."""
    headers: list[str] = Field(default_factory=list)
    """Header names to copy, matched exactly (default none)."""


class BackOffConfig(ComponentConfig):
    enabled: bool = False
    """Use this schedule for refused data (default false: 100ms doubling up to 5s)."""
    initial_interval: Duration = Field(5.0, gt=0)
    """First wait (default 5s)."""
    randomization_factor: float = Field(0.5, ge=0, le=1)
    """Jitter: each wait is drawn from interval * [1 - factor, 1 + factor] (default 0.5)."""
    multiplier: float = Field(1.5, ge=1)
    """Growth of the wait (default 1.5)."""
    max_interval: Duration = Field(30.0, gt=0)
    """Longest wait (default 30s)."""
    max_elapsed_time: Duration = Field(300.0, ge=0)
    """With `message_marking::on_error`, give up after this long (default 5m; 0 = never)."""


class Config(ClientConfig):
    traces: TopicsConfig = Field(default_factory=lambda: TopicsConfig(topics=["otlp_spans"]))
    """Topics and encoding of spans (default topics [otlp_spans])."""
    metrics: TopicsConfig = Field(default_factory=lambda: TopicsConfig(topics=["otlp_metrics"]))
    """Topics and encoding of metrics (default topics [otlp_metrics])."""
    logs: TopicsConfig = Field(default_factory=lambda: TopicsConfig(topics=["otlp_logs"]))
    """Topics and encoding of logs (default topics [otlp_logs])."""
    topic: str = ""
    """Deprecated upstream: the topic of every signal whose block names none (default empty)."""
    encoding: str = ""
    """Deprecated upstream: the encoding of every signal whose block names none (default
    empty)."""
    group_id: str = Field("otel-collector", min_length=1)
    """The consumer group (default otel-collector)."""
    group_instance_id: str = ""
    """Static membership id: a restarted member gets its partitions back without a rebalance
    (default empty = dynamic member)."""
    initial_offset: Literal["latest", "earliest"] = "latest"
    """Where a partition without a committed offset starts: `latest` (default) or
    `earliest`."""
    session_timeout: Duration = Field(10.0, gt=0)
    """A member silent this long leaves the group (default 10s)."""
    heartbeat_interval: Duration = Field(3.0, gt=0)
    """How often members tell the group coordinator they are alive (default 3s)."""
    group_rebalance_strategy: Strategy | None = None
    """Deprecated upstream: one partition assignment strategy (default none)."""
    group_rebalance_strategies: list[Strategy] = Field(default_factory=list)
    """Assignment strategies in order of preference: range, roundrobin, cooperative-sticky
    (default [cooperative-sticky]); `sticky` means cooperative-sticky here."""
    min_fetch_size: int = Field(1, ge=1, le=100_000_000)
    """Fewest bytes a fetch waits for, up to `max_fetch_wait` (default 1)."""
    max_fetch_size: int = Field(1_048_576, ge=0, le=2_147_483_135)
    """Most bytes of one fetch (default 1048576; 0 = librdkafka's 52428800); a larger single
    message still comes."""
    max_fetch_wait: Duration = Field(0.25, gt=0)
    """Longest a broker holds a fetch for `min_fetch_size` (default 250ms)."""
    max_partition_fetch_size: int = Field(1_048_576, ge=1, le=1_000_000_000)
    """Most bytes fetched per partition at a time (default 1048576)."""
    autocommit: AutoCommitConfig = Field(default_factory=AutoCommitConfig)
    """When marked offsets are committed."""
    message_marking: MessageMarkingConfig = Field(default_factory=MessageMarkingConfig)
    """When messages are marked (their offsets stored for the next commit)."""
    header_extraction: HeaderExtractionConfig = Field(default_factory=HeaderExtractionConfig)
    """Headers copied into resource attributes."""
    error_backoff: BackOffConfig = Field(default_factory=BackOffConfig)
    """The retry schedule of data the pipeline refuses."""

    @model_validator(mode="before")
    @classmethod
    def _signal_defaults(cls, data: Any) -> Any:
        """Each signal block's topics and encoding: its own, else the deprecated top-level
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
            if not block.get("topic") and not block.get("topics"):
                block["topics"] = [data.get("topic") or DEFAULT_TOPICS[signal]]
            if data.get("encoding"):
                block.setdefault("encoding", data["encoding"])
            data[signal.value] = block
        return data

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        return check_encoding(value) if value else value

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.group_rebalance_strategy and self.group_rebalance_strategies:
            raise ValueError(
                "group_rebalance_strategy and group_rebalance_strategies cannot both be set"
            )
        if self.heartbeat_interval >= self.session_timeout:
            raise ValueError("heartbeat_interval must be less than session_timeout")
        if len({s == "cooperative-sticky" for s in self.strategies().split(",")}) > 1:
            raise ValueError(
                "group_rebalance_strategies cannot mix cooperative-sticky (or sticky) with "
                "range or roundrobin: librdkafka cannot migrate between the two protocols"
            )
        return self

    def strategies(self) -> str:
        chosen = self.group_rebalance_strategies or [
            self.group_rebalance_strategy or "cooperative-sticky"
        ]
        return ",".join(dict.fromkeys(_STRATEGIES[s] for s in chosen))


def consumer_properties(config: Config) -> dict[str, Any]:
    """The librdkafka properties of the receiver's consumers."""
    props = client_properties(config)
    props.update(
        {
            "group.id": config.group_id,
            "auto.offset.reset": config.initial_offset,
            "session.timeout.ms": round(config.session_timeout * 1000),
            "heartbeat.interval.ms": round(config.heartbeat_interval * 1000),
            "partition.assignment.strategy": config.strategies(),
            "fetch.min.bytes": config.min_fetch_size,
            "fetch.wait.max.ms": round(config.max_fetch_wait * 1000),
            "max.partition.fetch.bytes": config.max_partition_fetch_size,
            "enable.auto.commit": config.autocommit.enable,
            "auto.commit.interval.ms": round(config.autocommit.interval * 1000),
            # Offsets are stored by hand, once a message is marked: auto commit commits those.
            "enable.auto.offset.store": False,
        }
    )
    if config.max_fetch_size:
        props["fetch.max.bytes"] = config.max_fetch_size
        # librdkafka wants room for a whole fetch response in one protocol message.
        props["receive.message.max.bytes"] = max(config.max_fetch_size + 512, 100_000_000)
    if config.group_instance_id:
        props["group.instance.id"] = config.group_instance_id
    return props


class _Backoff:
    """Exponential backoff with jitter; the pipeline's retry_after wins when longer."""

    def __init__(self, config: BackOffConfig) -> None:
        if config.enabled:
            self._interval, self._factor = config.initial_interval, config.multiplier
            self._max, self._jitter = config.max_interval, config.randomization_factor
        else:
            self._interval, self._factor, self._max = _DEFAULT_BACKOFF
            self._jitter = 0.0

    def next(self, retry_after: float | None) -> float:
        delay = self._interval * (1 + self._jitter * (2 * random.random() - 1))
        self._interval = min(self._interval * self._factor, self._max)
        return max(delay, retry_after or 0.0)


class _SignalConsumer:
    """One signal's Kafka consumer and the thread that runs it. Everything librdkafka is
    called from that thread only; the pipeline is called on the event loop."""

    def __init__(self, settings: Settings, config: Config, signal: Signal, next: Consumer) -> None:
        self.config = config
        self.signal = signal
        self.next = next
        self.log = settings.logger
        self.topics: TopicsConfig = getattr(config, signal.value)
        self._excluded = [re.compile(p) for p in self.topics.exclude_topics]
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            signal, str(settings.id), "kafka"
        )
        self._items = ITEM_NAMES[signal].replace("_", " ")
        self._skipped = DropLog(self.log, "kafka messages skipped", "messages")
        self._client_log = ClientLog(self.log)
        self._name = f"{settings.id}-{signal.value}"
        self._pass_bytes = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._consumer: KafkaConsumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._in_flight: concurrent.futures.Future | None = None
        self._paused = False
        # Every partition paused since consumption was last resumed: librdkafka keeps a
        # partition's pause across its revocation and a later assignment.
        self._paused_partitions: set[tuple[str, int]] = set()
        self._revoked: set[tuple[str, int]] = set()  # since the messages in hand were polled
        self._stored = False  # offsets stored since the last manual commit

    def start(self) -> None:
        from confluent_kafka import Consumer as KafkaConsumer
        from confluent_kafka import KafkaException

        props = consumer_properties(self.config)
        props["logger"] = self._client_log
        props["error_cb"] = self._client_log.error
        try:
            consumer = KafkaConsumer(props)
        except KafkaException as e:
            raise ValueError(
                f"kafka consumer refused its configuration: {e.args[0].str()}"
            ) from None
        try:
            consumer.subscribe(
                self.topics.topics, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
        except KafkaException as e:
            consumer.close()
            raise ValueError(f"kafka consumer cannot subscribe: {e.args[0].str()}") from None
        self._pass_bytes = (
            self.topics.encoding == "otlp_proto"
            and not self.config.header_extraction.extract_headers
            and accepts_encoded(self.next)
        )
        self._loop = asyncio.get_running_loop()
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        self.log.info(
            "kafka consumer started",
            extra={"kv": {"topics": ",".join(self.topics.topics), "group": self.config.group_id}},
        )

    async def stop(self) -> None:
        """Stop consuming: the message in the pipeline finishes, the rest is left unmarked
        (read again after a restart); marked offsets are committed."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            await asyncio.to_thread(thread.join)
        except asyncio.CancelledError:
            if self._in_flight is not None:
                self._in_flight.cancel()
            raise
        finally:
            self._skipped.flush()

    # --- the consumer thread ------------------------------------------------------------

    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while not self._stop.is_set():
                messages = consumer.consume(_BATCH, _POLL_S)
                self._revoked.clear()
                for message in messages:
                    if self._stop.is_set():
                        break  # unmarked: read again after a restart
                    self._handle(consumer, message)
                self._commit(consumer)
        except Exception:
            self.log.exception("kafka consumer stopped by an unexpected error")
        finally:
            self._close(consumer)

    def _handle(self, consumer: KafkaConsumer, message: Message) -> None:
        error = message.error()
        if error is not None:
            self._client_log.error(error)
            return
        topic, partition = message.topic() or "", message.partition() or 0
        if (topic, partition) in self._revoked:
            return  # its new owner reads it from the last commit
        if any(p.search(topic) for p in self._excluded):
            return
        try:
            batch = decode(message.value(), self.signal, self.topics.encoding)
        except ValueError as e:
            self._skipped.drop(f"cannot decode: {e}")
            self._mark(consumer, message)
            return
        items = count_items(batch)
        if not items:
            self._mark(consumer, message)
            return
        self._extract_headers(batch, message)
        data = message.value()
        if self._pass_bytes and data is not None:
            batch = Encoded(self.signal, data, items)
        if not self.config.message_marking.after:
            self._mark(consumer, message)
        self._deliver(consumer, message, batch, items)

    def _extract_headers(self, batch, message: Message) -> None:
        extraction = self.config.header_extraction
        if not extraction.extract_headers or not extraction.headers:
            return
        found: dict[str, str] = {}
        for name, value in _headers(message):
            if name in extraction.headers and name not in found:
                found[name] = value
        for res in resources(batch):
            for name, value in found.items():
                set_attr(res.resource.attributes, f"kafka.header.{name}", value)

    def _deliver(self, consumer: KafkaConsumer, message: Message, batch, items: int) -> None:
        """Offer the batch to the pipeline until it is taken or given up on (see the module
        docstring); pauses consumption while it is refused."""
        marking, error_backoff = self.config.message_marking, self.config.error_backoff
        where = (message.topic() or "", message.partition() or 0)
        sender = _sender(message)
        backoff = _Backoff(error_backoff)
        started = time.monotonic()
        try:
            while True:
                error = self._offer(batch, sender)
                if error is None:
                    self._accepted.inc(items)
                    if marking.after:
                        self._mark(consumer, message)
                    return
                rejected = items
                if isinstance(error, PermanentError) and error.rejected is not None:
                    rejected = min(error.rejected, items)  # the rest was taken
                    self._accepted.inc(items - rejected)
                self._refused.inc(rejected)
                if self._give_up(error, started):
                    verb = "rejected" if isinstance(error, PermanentError) else "refused"
                    self.log.error(
                        f"dropping {rejected} {self._items} from kafka, the pipeline {verb} "
                        f"them: {error}",
                        extra={"kv": {"topic": where[0], "partition": where[1]}},
                    )
                    self._mark(consumer, message)
                    return
                if not self._paused:
                    self._pause(consumer)
                    self.log.warning(
                        f"the pipeline refused data from kafka, consumption paused: {error}",
                        extra={"kv": {"topic": where[0], "partition": where[1]}},
                    )
                retry_after = error.retry_after if isinstance(error, RetryableError) else None
                if not self._wait(consumer, backoff.next(retry_after)) or where in self._revoked:
                    return  # stopping, or no longer ours: unmarked, read again
        finally:
            if self._paused:
                self._resume(consumer)

    def _give_up(self, error: Exception, started: float) -> bool:
        marking, error_backoff = self.config.message_marking, self.config.error_backoff
        if isinstance(error, PermanentError):
            return marking.on_permanent_error
        if not marking.on_error:
            return False
        if not error_backoff.enabled:
            return True
        limit = error_backoff.max_elapsed_time
        return bool(limit) and time.monotonic() - started >= limit

    def _offer(self, batch, sender: ClientInfo) -> Exception | None:
        """The pipeline's answer to `batch`: None when taken, else its error."""
        assert self._loop is not None
        try:
            future = asyncio.run_coroutine_threadsafe(self._consume(batch, sender), self._loop)
        except RuntimeError:  # the event loop is closed
            self._stop.set()
            return RetryableError("the collector is stopping")
        self._in_flight = future
        try:
            future.result()
        except concurrent.futures.CancelledError:
            return RetryableError("the collector is stopping")
        except (PermanentError, RetryableError) as e:
            return e
        except Exception as e:
            self.log.exception("the pipeline failed on data from kafka")
            return PermanentError(f"unexpected pipeline error: {e!r}")
        finally:
            self._in_flight = None
        return None

    async def _consume(self, batch, sender: ClientInfo) -> None:
        with client.using(sender):
            await self.next.consume(batch)

    def _wait(self, consumer: KafkaConsumer, delay: float) -> bool:
        """Wait `delay` seconds while polling, which serves rebalances and keeps the group
        membership; False when stopping. The assigned partitions are paused, except those a
        rebalance assigned meanwhile, whose first message pauses and rewinds them."""
        deadline = time.monotonic() + delay
        rewound: set[tuple[str, int]] = set()
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            for message in consumer.consume(_BATCH, min(left, _POLL_S)):
                self._rewind(consumer, message, rewound)
        return False

    def _rewind(self, consumer: KafkaConsumer, message: Message, rewound: set) -> None:
        """A message polled while paused (from a partition assigned meanwhile): pause its
        partition and go back to the message, so that it comes again once consumption resumes.
        (Pausing partitions as they are assigned would mean assigning them in the rebalance
        callback, which breaks librdkafka's cooperative rebalancing.)"""
        from confluent_kafka import KafkaException, TopicPartition

        where = (message.topic() or "", message.partition() or 0)
        if message.error() is not None or where in rewound:
            return
        rewound.add(where)
        self._paused_partitions.add(where)
        position = TopicPartition(where[0], where[1], message.offset() or 0)
        try:
            consumer.pause([position])
            consumer.seek(position)
        except KafkaException as e:
            self.log.warning(f"kafka: cannot rewind {where[0]}[{where[1]}]: {e}")

    def _pause(self, consumer: KafkaConsumer) -> None:
        from confluent_kafka import KafkaException

        self._paused = True
        try:
            assignment = consumer.assignment()
            self._paused_partitions.update((p.topic, p.partition) for p in assignment)
            consumer.pause(assignment)
        except KafkaException as e:  # then messages may come meanwhile: _wait rewinds them
            self.log.warning(f"kafka: cannot pause consumption: {e.args[0].str()}")

    def _resume(self, consumer: KafkaConsumer) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        self._paused = False
        try:
            assigned = {(p.topic, p.partition) for p in consumer.assignment()}
            paused, self._paused_partitions = self._paused_partitions | assigned, set()
            consumer.resume([TopicPartition(topic, partition) for topic, partition in paused])
        except KafkaException as e:
            self.log.warning(f"kafka: cannot resume consumption: {e.args[0].str()}")
            return
        if not self._stop.is_set():
            self.log.info("kafka consumption resumed")

    def _on_revoke(self, _consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._revoked.update((p.topic, p.partition) for p in partitions)

    def _mark(self, consumer: KafkaConsumer, message: Message) -> None:
        """Store the message's offset for the next commit."""
        from confluent_kafka import KafkaException

        try:
            consumer.store_offsets(message=message)
            self._stored = True
        except KafkaException as e:  # the partition was revoked meanwhile
            self.log.debug(f"kafka: offset not stored: {e}")

    def _commit(self, consumer: KafkaConsumer) -> None:
        """Without auto commit, commit what was stored, synchronously."""
        from confluent_kafka import KafkaException

        if self.config.autocommit.enable or not self._stored:
            return
        self._stored = False
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as e:
            self.log.warning(f"kafka: offsets not committed: {e.args[0].str()}")

    def _close(self, consumer: KafkaConsumer) -> None:
        self._commit(consumer)
        try:
            consumer.close()  # commits stored offsets with auto commit, leaves the group
        except Exception as e:
            self.log.warning(f"kafka consumer did not close cleanly: {e}")


def _headers(message: Message) -> list[tuple[str, str]]:
    """The message's headers with text values (invalid UTF-8 replaced), in order."""
    headers = message.headers() or []
    items = headers.items() if isinstance(headers, dict) else headers
    return [
        (name, value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
        for name, value in items
        if value is not None
    ]


def _sender(message: Message) -> ClientInfo:
    """The client metadata of a message: where it came from and its headers."""
    metadata = [
        ("kafka.topic", message.topic() or ""),
        ("kafka.partition", str(message.partition())),
        ("kafka.offset", str(message.offset())),
    ]
    metadata.extend(_headers(message))
    return ClientInfo.of("", metadata)


class KafkaReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.settings = settings
        self.config = config
        self._consumers = [
            _SignalConsumer(settings, config, signal, consumer) for signal, consumer in next.items()
        ]

    async def start(self, host: Host) -> None:
        try:
            for consumer in self._consumers:
                consumer.start()
        except BaseException:
            await self.shutdown()
            raise

    async def shutdown(self) -> None:
        await asyncio.gather(*(consumer.stop() for consumer in self._consumers))


factory = Factory(
    kind=Kind.RECEIVER,
    type="kafka",
    config=Config,
    create=KafkaReceiver,
    signals={
        Signal.TRACES: Stability.ALPHA,
        Signal.METRICS: Stability.ALPHA,
        Signal.LOGS: Stability.ALPHA,
    },
    description="Consumes OTLP messages from Kafka topics in a consumer group (librdkafka).",
)
