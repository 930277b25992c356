"""librdkafka's mock Kafka cluster, for the kafka components' tests: no broker runs here.

The cluster is what the `test.mock.num.brokers` client property starts, made through
librdkafka's C API (`rd_kafka_mock_cluster_new`, with ctypes on the library confluent-kafka
ships) so that tests can create topics with a partition count and set the consumer groups'
initial rebalance delay to zero (3 s otherwise, per group join). Its brokers speak the Kafka
protocol on 127.0.0.1 ports: any client in any process reaches them through `bootstrap`, for as
long as this object lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ssl
import threading
import time
from pathlib import Path
from types import TracebackType

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

_RD_KAFKA_PRODUCER = 0


def _library() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    lib = ctypes.CDLL(str(next(libs.glob("librdkafka*"))))
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    lib.rd_kafka_conf_new.restype = p
    lib.rd_kafka_conf_set.argtypes = [p, s, s, s, ctypes.c_size_t]
    lib.rd_kafka_new.restype = p
    lib.rd_kafka_new.argtypes = [i, p, s, ctypes.c_size_t]
    lib.rd_kafka_destroy.argtypes = [p]
    lib.rd_kafka_mock_cluster_new.restype = p
    lib.rd_kafka_mock_cluster_new.argtypes = [p, i]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [p]
    lib.rd_kafka_mock_cluster_bootstraps.restype = s
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [p]
    lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [p, ctypes.c_int32]
    lib.rd_kafka_mock_topic_create.restype = i
    lib.rd_kafka_mock_topic_create.argtypes = [p, s, i, i]
    lib.rd_kafka_mock_broker_set_host_port.argtypes = [p, ctypes.c_int32, s, i]
    return lib


class MockCluster:
    """A mock cluster of `brokers` brokers; topics that are not created first are created on
    first use with 4 partitions."""

    def __init__(self, brokers: int = 1) -> None:
        self._lib = _library()
        conf = self._lib.rd_kafka_conf_new()
        error = ctypes.create_string_buffer(512)
        self._lib.rd_kafka_conf_set(conf, b"log_level", b"0", error, len(error))
        self._handle = self._lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, error, len(error))
        if not self._handle:
            raise RuntimeError(f"rd_kafka_new: {error.value.decode()}")
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._handle, brokers)
        if not self._cluster:
            self._lib.rd_kafka_destroy(self._handle)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap: str = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()
        self._lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self._cluster, 0)

    def create_topic(self, name: str, partitions: int) -> None:
        code = self._lib.rd_kafka_mock_topic_create(self._cluster, name.encode(), partitions, 1)
        if code:
            raise RuntimeError(f"cannot create topic {name}: {KafkaError(code).str()}")

    def advertise(self, broker_id: int, host: str, port: int) -> None:
        """Name `host:port` as broker `broker_id`'s address in metadata (it still listens where
        it did): clients then connect through whatever listens there."""
        self._lib.rd_kafka_mock_broker_set_host_port(self._cluster, broker_id, host.encode(), port)

    def close(self) -> None:
        if self._cluster:
            self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
            self._lib.rd_kafka_destroy(self._handle)
            self._cluster = self._handle = None

    def __enter__(self) -> MockCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plain clients, to look at and feed topics directly --------------------------------

    def produce(
        self,
        topic: str,
        values: list[bytes],
        key: bytes | None = None,
        headers: list[tuple[str, str | bytes | None]] | None = None,
        partition: int = -1,
    ) -> None:
        """Write `values` (to `partition`, or where the key says) and wait until the cluster
        acknowledged them all."""
        producer = Producer({"bootstrap.servers": self.bootstrap, "log_level": 0})
        failures: list[KafkaError] = []
        for value in values:
            producer.produce(
                topic,
                value,
                key,
                headers=headers,
                partition=partition,
                on_delivery=lambda e, _m: failures.append(e) if e else None,
            )
        if producer.flush(10) or failures:
            raise RuntimeError(f"not produced: {failures}")

    def read(self, topic: str, count: int, timeout: float = 10.0) -> list[Message]:
        """The first `count` messages of every partition of `topic`, read without a group."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "coldtail-tests-reader",
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        try:
            while len(messages) < count and time.monotonic() < deadline:
                messages.extend(m for m in consumer.consume(count, 0.2) if m.error() is None)
        finally:
            consumer.close()
        return messages

    def committed(self, group: str, topic: str, partitions: int) -> dict[int, int]:
        """The offsets `group` committed for `topic`, by partition (absent: none)."""
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0}
        )
        try:
            found = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=10
            )
        finally:
            consumer.close()
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


class TLSFront:
    """A TLS endpoint on 127.0.0.1 in front of one plain-text address, on a thread of its own:
    the mock brokers speak no TLS, so a single-broker cluster advertised here
    (`MockCluster.advertise`) is reached over TLS, with the client certificate required when
    `context` asks for one."""

    def __init__(self, context: ssl.SSLContext, target: str) -> None:
        self._context = context
        self._host, port = target.rsplit(":", 1)
        self._port = int(port)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> TLSFront:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(5)
        return self

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._pipe, "127.0.0.1", 0, ssl=self._context)
        return self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._copy(reader, upstream_writer), self._copy(upstream_reader, writer)
        )

    @staticmethod
    async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> TLSFront:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
