import logging

import psutil
import pytest

from collector.core.consumer import RetryableError
from collector.core.memory import MemoryPressure
from collector.core.signals import Signal
from collector.processors.memory_limiter import MIB, Config, factory, total_memory
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_traces


@pytest.mark.parametrize(
    ("config", "hard", "soft"),
    [
        ({"limit_mib": 1000}, 1000 * MIB, 800 * MIB),
        ({"limit_mib": 1000, "spike_limit_mib": 100}, 1000 * MIB, 900 * MIB),
        ({"limit_percentage": 50}, 500 * MIB, 400 * MIB),
        ({"limit_percentage": 50, "spike_limit_percentage": 10}, 500 * MIB, 400 * MIB),
        ({"limit_percentage": 80, "spike_limit_percentage": 30}, 800 * MIB, 500 * MIB),
    ],
)
def test_limits(config, hard, soft):
    config = Config.model_validate({"check_interval": "1s", **config})
    assert config.limits(total_memory=1000 * MIB) == (hard, soft)


def test_total_memory_is_positive_and_at_most_physical():
    assert 0 < total_memory() <= psutil.virtual_memory().total


class FakeMemory:
    def __init__(self, mib: int) -> None:
        self.mib = mib

    def __call__(self) -> int:
        return self.mib * MIB


async def test_refuses_above_soft_limit_and_accepts_again_below(caplog):
    memory = FakeMemory(100)
    processor, sink = make_processor(
        factory,
        {"check_interval": "1h", "limit_mib": 1000, "spike_limit_mib": 200},
        memory_usage=memory,
    )
    await processor.start(None)
    await processor.consume(make_traces(2))
    assert sink.item_count == 2

    memory.mib = 850
    with caplog.at_level(logging.INFO):
        processor.check()
        processor.check()
    assert caplog.text.count("above the soft limit") == 1
    with pytest.raises(RetryableError) as excinfo:
        await processor.consume(make_traces(3))
    assert excinfo.value.retry_after == 3600
    assert "850 MiB is above the soft limit 800 MiB" in str(excinfo.value)
    assert sink.item_count == 2

    memory.mib = 780  # below the soft limit, above the resume mark (95% of 800)
    processor.check()
    with pytest.raises(RetryableError):
        await processor.consume(make_traces(3))

    memory.mib = 650
    with caplog.at_level(logging.INFO):
        processor.check()
    assert "below the resume mark, accepting data" in caplog.text
    await processor.consume(make_traces(3))
    assert sink.item_count == 5
    assert processor_metric(processor, "incoming") == 11
    assert processor_metric(processor, "outgoing") == 5
    await processor.shutdown()


async def test_hard_limit_forces_garbage_collection(monkeypatch):
    collected = []
    monkeypatch.setattr("gc.collect", lambda: collected.append(True))
    memory = FakeMemory(1200)
    processor, _ = make_processor(
        factory, {"check_interval": "1h", "limit_mib": 1000}, Signal.LOGS, memory_usage=memory
    )
    processor.check()
    assert collected and processor.refusing
    with pytest.raises(RetryableError):
        await processor.consume(make_logs(1))


async def test_start_measures_at_once_and_shutdown_is_idempotent():
    processor, _ = make_processor(
        factory, {"check_interval": "1h", "limit_mib": 100}, memory_usage=FakeMemory(90)
    )
    await processor.shutdown()
    await processor.start(None)
    assert processor.refusing
    await processor.shutdown()
    await processor.shutdown()


async def test_real_memory_reading():
    processor, sink = make_processor(
        factory, {"check_interval": "10ms", "limit_percentage": 100, "spike_limit_percentage": 1}
    )
    await processor.start(None)
    assert 0 < processor.usage < processor.soft_limit
    await processor.consume(make_traces(1))
    await processor.shutdown()
    assert sink.item_count == 1
    assert not processor.mutates_data


async def test_after_a_burst_is_freed_the_real_process_is_accepted_again():
    """CPython and protobuf keep freed memory: without handing it back, the RSS of a drained
    process stays at its peak and the limiter would refuse for good."""
    baseline = psutil.Process().memory_info().rss // MIB
    processor, sink = make_processor(
        factory,
        {"check_interval": "1h", "limit_mib": baseline + 200, "spike_limit_mib": 80},
    )
    await processor.start(None)
    request = make_traces(20_000).SerializeToString()
    burst = [type(make_traces(1)).FromString(request) for _ in range(30)]  # ~200 MiB parsed
    processor.check()
    assert processor.refusing, f"RSS {processor.usage // MIB} MiB, baseline {baseline} MiB"
    del burst
    processor.check()
    assert not processor.refusing, f"RSS {processor.usage // MIB} MiB after the burst was freed"
    await processor.consume(make_traces(1))
    assert sink.item_count == 1
    await processor.shutdown()


async def test_the_shared_pressure_lets_receivers_refuse_before_parsing():
    memory = FakeMemory(100)
    processor, _ = make_processor(
        factory,
        {"check_interval": "1h", "limit_mib": 1000, "spike_limit_mib": 200},
        memory_usage=memory,
    )
    await processor.start(None)
    pressure = processor.settings.shared.get(MemoryPressure)
    assert pressure.admits(10 * MIB) is None
    assert "left below the soft limit" in pressure.admits(300 * MIB)  # 4x 300 > 700 MiB left
    memory.mib = 900
    processor.check()
    assert pressure.admits(1) == "memory usage is above the soft limit"
    await processor.shutdown()
