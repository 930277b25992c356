import pytest

from collector.core.consumer import PermanentError, RetryableError
from collector.core.fanout import FanOut, fan_out
from tests.support.builders import make_traces
from tests.support.sinks import ErrorConsumer, SinkConsumer


def test_single_consumer_is_passed_through():
    sink = SinkConsumer()
    assert fan_out([sink]) is sink


async def test_copies_only_for_mutating_consumers():
    reader, writer1, writer2 = SinkConsumer(), SinkConsumer(True), SinkConsumer(True)
    batch = make_traces(2)
    await FanOut([writer1, reader, writer2]).consume(batch)
    assert reader.batches[0] is batch
    # A reader shares the original, so every writer works on its own copy.
    assert writer1.batches[0] is not batch and writer2.batches[0] is not batch
    assert writer1.batches[0] == writer2.batches[0] == batch


async def test_last_writer_takes_original_without_readers():
    w1, w2 = SinkConsumer(True), SinkConsumer(True)
    batch = make_traces(1)
    await FanOut([w1, w2]).consume(batch)
    assert w1.batches[0] is not batch and w2.batches[0] is batch


async def test_one_failing_branch_does_not_starve_others():
    sink = SinkConsumer()
    failing = ErrorConsumer(RetryableError("down", retry_after=3))
    with pytest.raises(RetryableError, match="down"):
        await FanOut([failing, sink]).consume(make_traces(1))
    assert sink.item_count == 1


async def test_mixed_errors_are_retryable_all_permanent_stay_permanent():
    perm = ErrorConsumer(PermanentError("bad"))
    retry = ErrorConsumer(RetryableError("busy", retry_after=2))
    with pytest.raises(RetryableError) as info:
        await FanOut([perm, retry]).consume(make_traces(1))
    assert info.value.retry_after == 2
    with pytest.raises(PermanentError):
        await FanOut([perm, ErrorConsumer(PermanentError("worse"))]).consume(make_traces(1))
