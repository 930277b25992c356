import asyncio
import logging
import time

import pytest

from collector.core.component import Kind
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.exporters.sender import QueueConfig, RetryConfig, Sender, SenderConfig
from tests.support.builders import make_traces
from tests.support.components import make_settings

FAST_RETRY = {"initial_interval": "10ms", "max_interval": "20ms", "randomization_factor": 0}


class Backend:
    """A push function that fails with the scripted errors first, then records batches. Each
    attempt takes `delay` seconds, or the next of `delays` while there are some."""

    def __init__(self, *errors: Exception, delay: float = 0.0, delays: tuple = ()) -> None:
        self.errors = list(errors)
        self.delay = delay
        self.delays = list(delays)
        self.attempts = 0
        self.batches: list = []

    async def push(self, batch) -> None:
        self.attempts += 1
        await asyncio.sleep(self.delays.pop(0) if self.delays else self.delay)
        if self.errors:
            raise self.errors.pop(0)
        self.batches.append(batch)


class Harness:
    def __init__(self, backend: Backend, **config) -> None:
        config["retry_on_failure"] = {**FAST_RETRY, **config.get("retry_on_failure", {})}
        self.telemetry = Telemetry()
        settings = make_settings(Kind.EXPORTER, "otlp/test", telemetry=self.telemetry)
        self.sender = Sender(
            settings, Signal.TRACES, backend.push, SenderConfig.model_validate(config)
        )

    def count(self, name: str) -> float:
        value = self.telemetry.registry.get_sample_value(
            f"otelcol_exporter_{name}_spans_total", {"exporter": "otlp/test"}
        )
        return value or 0.0

    def gauge(self, name: str) -> float:
        return self.telemetry.registry.get_sample_value(
            f"otelcol_exporter_{name}", {"exporter": "otlp/test", "data_type": "traces"}
        )


def inline(backend: Backend, **config) -> Harness:
    return Harness(backend, sending_queue={"enabled": False}, **config)


def test_defaults_match_the_collector():
    cfg = SenderConfig()
    assert cfg.timeout == 5.0
    assert cfg.sending_queue == QueueConfig(enabled=True, num_consumers=10, queue_size=1000)
    assert cfg.retry_on_failure == RetryConfig(
        enabled=True,
        initial_interval=5.0,
        randomization_factor=0.5,
        multiplier=1.5,
        max_interval=30.0,
        max_elapsed_time=300.0,
    )


def test_config_parses_durations():
    cfg = SenderConfig.model_validate(
        {"timeout": "0", "retry_on_failure": {"initial_interval": "200ms", "max_elapsed_time": 0}}
    )
    assert cfg.timeout == 0.0
    assert cfg.retry_on_failure.initial_interval == 0.2
    assert cfg.retry_on_failure.max_elapsed_time == 0.0


async def test_retryable_errors_are_retried_until_success():
    backend = Backend(RetryableError("down"), RetryableError("still down"))
    h = inline(backend)
    await h.sender.send(make_traces(3))
    assert backend.attempts == 3
    assert len(backend.batches) == 1
    assert h.count("sent") == 3
    assert h.count("send_failed") == 0


async def test_permanent_error_is_not_retried_and_logged_once(caplog):
    backend = Backend(PermanentError("HTTP 400: bad span"))
    h = inline(backend)
    with caplog.at_level(logging.INFO, logger="coldtail"), pytest.raises(PermanentError):
        await h.sender.send(make_traces(4))
    assert backend.attempts == 1
    assert h.count("send_failed") == 4
    assert h.count("sent") == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1
    assert "dropping 4 spans" in errors[0]
    assert "HTTP 400: bad span" in errors[0]


async def test_partial_success_counts_only_the_rejected_items_as_failed(caplog):
    backend = Backend(PermanentError("2 spans too old", rejected=2))
    h = inline(backend)
    with caplog.at_level(logging.WARNING, logger="coldtail"), pytest.raises(PermanentError):
        await h.sender.send(make_traces(5))
    assert backend.attempts == 1
    assert h.count("sent") == 3
    assert h.count("send_failed") == 2
    assert "rejected 2 of 5 spans" in caplog.records[-1].getMessage()


async def test_server_throttle_delay_wins_over_a_shorter_backoff():
    backend = Backend(RetryableError("slow down", retry_after=0.3))
    h = inline(backend)
    started = time.monotonic()
    await h.sender.send(make_traces(1))
    assert time.monotonic() - started >= 0.3
    assert backend.attempts == 2


async def test_gives_up_after_max_elapsed_time(caplog):
    backend = Backend(*[RetryableError("down")] * 1000)
    h = inline(backend, retry_on_failure={"max_elapsed_time": "100ms"})
    with caplog.at_level(logging.ERROR, logger="coldtail"), pytest.raises(RetryableError):
        await h.sender.send(make_traces(2))
    assert 2 < backend.attempts < 20
    assert h.count("send_failed") == 2
    assert "no more retries left" in caplog.records[-1].getMessage()


async def test_retry_disabled_means_one_attempt():
    backend = Backend(RetryableError("down"))
    h = inline(backend, retry_on_failure={"enabled": False})
    with pytest.raises(RetryableError):
        await h.sender.send(make_traces(1))
    assert backend.attempts == 1
    assert h.count("send_failed") == 1


async def test_a_slow_attempt_times_out_and_is_retried():
    backend = Backend(delays=(1.0,))
    h = inline(backend, timeout="50ms")
    await h.sender.send(make_traces(1))
    assert backend.attempts == 2
    assert len(backend.batches) == 1
    assert h.count("sent") == 1


async def test_unexpected_exceptions_become_permanent():
    backend = Backend(KeyError("bug"))
    h = inline(backend)
    with pytest.raises(PermanentError, match="bug"):
        await h.sender.send(make_traces(1))
    assert backend.attempts == 1
    assert h.count("send_failed") == 1


async def test_queue_sends_in_the_background_and_shutdown_drains_it():
    backend = Backend(RetryableError("blip"), delay=0.01)
    h = Harness(backend, sending_queue={"num_consumers": 2})
    h.sender.start()
    for _ in range(20):
        await h.sender.send(make_traces(1))
    assert h.gauge("queue_capacity") == 1000
    await h.sender.shutdown()
    assert len(backend.batches) == 20
    assert h.count("sent") == 20
    assert h.gauge("queue_size") == 0
    await h.sender.shutdown()  # idempotent


async def test_full_queue_refuses_with_a_retryable_error():
    backend = Backend(delay=10)
    h = Harness(backend, sending_queue={"num_consumers": 1, "queue_size": 2})
    h.sender.start()
    await h.sender.send(make_traces(1))
    await asyncio.sleep(0)  # the consumer takes the first batch
    await h.sender.send(make_traces(1))
    await h.sender.send(make_traces(1))
    with pytest.raises(RetryableError, match="queue is full"):
        await h.sender.send(make_traces(3))
    assert h.count("enqueue_failed") == 3
    assert h.gauge("queue_size") == 2
    shutdown = asyncio.create_task(h.sender.shutdown())
    await asyncio.sleep(0.01)
    shutdown.cancel()
    with pytest.raises(asyncio.CancelledError):
        await shutdown


async def test_sends_during_shutdown_are_refused():
    h = Harness(Backend())
    h.sender.start()
    await h.sender.shutdown()
    with pytest.raises(RetryableError, match="shutting down"):
        await h.sender.send(make_traces(1))


async def test_shutdown_keeps_retrying_until_cancelled(caplog):
    backend = Backend(*[RetryableError("down")] * 1000)
    h = Harness(backend, retry_on_failure={"max_elapsed_time": 0})
    h.sender.start()
    for _ in range(3):
        await h.sender.send(make_traces(2))
    with caplog.at_level(logging.ERROR, logger="coldtail"), pytest.raises(TimeoutError):
        await asyncio.wait_for(h.sender.shutdown(), 0.2)
    assert backend.attempts > 3
    assert h.count("send_failed") == 6
    assert "dropping 6 spans" in caplog.records[-1].getMessage()
    assert all(task.done() for task in asyncio.all_tasks() if task.get_name().startswith("sender"))


async def test_shutdown_wakes_a_retry_asleep_in_its_backoff():
    """A batch waiting out a long backoff when the backend returns is sent at shutdown at once,
    not dropped when the shutdown timeout ends the wait."""
    backend = Backend(RetryableError("down"))
    slow = {"initial_interval": "60s", "max_interval": "60s", "randomization_factor": 0}
    h = Harness(backend, retry_on_failure=slow)
    h.sender.start()
    await h.sender.send(make_traces(4))
    async with asyncio.timeout(5):
        while backend.attempts < 1:
            await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.wait_for(h.sender.shutdown(), 5)
    assert time.monotonic() - started < 2
    assert h.count("sent") == 4 and backend.attempts == 2


async def test_shutdown_without_start_is_safe():
    h = Harness(Backend())
    await h.sender.shutdown()
    await h.sender.shutdown()


@pytest.mark.parametrize(
    ("sizer", "capacity", "fits"),
    [("requests", 3, 3), ("items", 10, 2), ("bytes", 0, 2)],  # bytes: sized from a batch below
)
async def test_the_queue_size_counts_in_the_units_of_its_sizer(sizer, capacity, fits):
    batch = make_traces(4)
    if sizer == "bytes":
        capacity = 2 * batch.ByteSize() + 1
    backend = Backend(delay=10)
    h = Harness(backend, sending_queue={"num_consumers": 1, "queue_size": capacity, "sizer": sizer})
    # Not started: everything stays queued.
    for _ in range(fits):
        await h.sender.send(make_traces(4))
    with pytest.raises(RetryableError, match="queue is full"):
        await h.sender.send(make_traces(4))
    assert h.gauge("queue_size") == {"requests": 3, "items": 8, "bytes": capacity - 1}[sizer]


async def test_a_batch_larger_than_the_whole_queue_is_refused_for_good():
    h = Harness(Backend(), sending_queue={"queue_size": 5, "sizer": "items"})
    with pytest.raises(PermanentError, match="larger than the sending queue"):
        await h.sender.send(make_traces(6))
    assert h.count("enqueue_failed") == 6


async def test_block_on_overflow_waits_for_room_instead_of_refusing():
    backend = Backend(delay=0.05)
    h = Harness(
        backend, sending_queue={"num_consumers": 1, "queue_size": 1, "block_on_overflow": True}
    )
    h.sender.start()
    started = time.monotonic()
    for _ in range(4):
        await h.sender.send(make_traces(1))  # each waits until the consumer took the last
    assert time.monotonic() - started >= 0.1
    await h.sender.shutdown()
    assert len(backend.batches) == 4 and h.count("enqueue_failed") == 0


async def test_a_sender_blocked_on_overflow_is_refused_at_shutdown():
    h = Harness(
        Backend(delay=10),
        sending_queue={"num_consumers": 1, "queue_size": 1, "block_on_overflow": True},
    )
    await h.sender.send(make_traces(1))
    blocked = asyncio.create_task(h.sender.send(make_traces(1)))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await h.sender.shutdown()
    with pytest.raises(RetryableError, match="queue is full"):
        await blocked


async def test_wait_for_result_hands_each_sender_its_batchs_outcome():
    backend = Backend(PermanentError("bad data"), delay=0.02)
    h = Harness(backend, sending_queue={"num_consumers": 1, "wait_for_result": True})
    h.sender.start()
    with pytest.raises(PermanentError, match="bad data"):
        await h.sender.send(make_traces(2))
    await h.sender.send(make_traces(3))  # returns once exported
    assert [len(b.resource_spans[0].scope_spans[0].spans) for b in backend.batches] == [3]
    await h.sender.shutdown()


def spans_per_request(backend: Backend) -> list[int]:
    return [count_items(b) for b in backend.batches]


async def test_queue_batching_merges_queued_batches_up_to_min_size():
    backend = Backend()
    h = Harness(backend, sending_queue={"batch": {"min_size": 10, "flush_timeout": "5s"}})
    for _ in range(7):
        await h.sender.send(make_traces(3))  # queued before the consumers start
    h.sender.start()
    async with asyncio.timeout(2):  # min_size, not the 5 s timeout, sends the first request
        while not backend.batches:
            await asyncio.sleep(0.01)
    await h.sender.shutdown()
    assert spans_per_request(backend)[0] == 12  # 4 batches reach min_size 10
    assert sum(spans_per_request(backend)) == 21 and h.count("sent") == 21


async def test_queue_batching_sends_a_small_batch_after_the_flush_timeout():
    backend = Backend()
    h = Harness(backend, sending_queue={"batch": {"min_size": 1000, "flush_timeout": "50ms"}})
    h.sender.start()
    started = time.monotonic()
    await h.sender.send(make_traces(2))
    await h.sender.send(make_traces(2))
    async with asyncio.timeout(2):
        while not backend.batches:
            await asyncio.sleep(0.005)
    assert time.monotonic() - started >= 0.04
    assert spans_per_request(backend) == [4]
    await h.sender.shutdown()


async def test_queue_batching_cuts_requests_to_max_size():
    backend = Backend()
    h = Harness(
        backend,
        sending_queue={"batch": {"min_size": 10, "max_size": 10, "flush_timeout": "1s"}},
    )
    for _ in range(5):
        await h.sender.send(make_traces(7))
    h.sender.start()
    await h.sender.shutdown()
    assert sorted(spans_per_request(backend)) == [4, 4, 7, 10, 10]  # consumers send concurrently


async def test_queue_batching_tells_every_waiting_sender_the_merged_requests_outcome():
    backend = Backend(PermanentError("rejected"))
    h = Harness(
        backend,
        sending_queue={
            "wait_for_result": True,
            "batch": {"min_size": 4, "flush_timeout": "1s"},
        },
    )
    h.sender.start()
    results = await asyncio.gather(
        h.sender.send(make_traces(2)), h.sender.send(make_traces(2)), return_exceptions=True
    )
    assert [type(r) for r in results] == [PermanentError, PermanentError]
    assert backend.attempts == 1  # one merged request
    await h.sender.shutdown()


def test_queue_batch_options_are_checked():
    with pytest.raises(ValueError, match="max_size: must be at least min_size"):
        SenderConfig.model_validate({"sending_queue": {"batch": {"min_size": 10, "max_size": 5}}})
    with pytest.raises(ValueError, match="max_size: only with sizer items"):
        SenderConfig.model_validate(
            {"sending_queue": {"batch": {"sizer": "bytes", "max_size": 10, "min_size": 1}}}
        )
