import asyncio
import logging

import pytest

from collector.core import client
from collector.core.client import ClientInfo
from collector.core.consumer import PermanentError, RetryableError
from collector.core.pdata import (
    count_items,
    get_attr,
    iter_items,
    metric_points,
    resources,
    signal_of,
)
from collector.core.signals import Signal
from collector.core.split import split_batch
from collector.processors.batch import Config, factory
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_metrics, make_traces
from tests.support.sinks import ErrorConsumer, SinkConsumer


def test_defaults_are_the_collectors():
    config = Config()
    assert (config.send_batch_size, config.timeout, config.send_batch_max_size) == (8192, 0.2, 0)


def build(signal: Signal, items: int, service: str = "checkout", name: str = "requests"):
    resource = {"service.name": service}
    if signal is Signal.TRACES:
        return make_traces(items, resource=resource)
    if signal is Signal.METRICS:
        return make_metrics(items, resource=resource, name=name)
    return make_logs(items, resource=resource)


def item_keys(batches) -> list[tuple]:
    """(service, metric name, test.index) of every item of `batches`, in order."""
    keys = []
    for batch in batches:
        metrics = signal_of(batch) is Signal.METRICS
        for res, _scope, item in iter_items(batch):
            service = get_attr(res.attributes, "service.name")
            units = metric_points(item) if metrics else [item]
            name = item.name if metrics else ""
            keys += [(service, name, get_attr(u.attributes, "test.index")) for u in units]
    return keys


async def test_size_trigger_merges_batches():
    processor, sink = make_processor(factory, {"send_batch_size": 10, "timeout": "10s"})
    await processor.start(None)
    for _ in range(3):
        await processor.consume(make_traces(3))
    assert sink.batches == []
    await processor.consume(make_traces(3))
    assert [count_items(b) for b in sink.batches] == [12]
    assert len(sink.batches[0].resource_spans) == 4
    await processor.shutdown()
    assert sink.item_count == 12


async def test_size_trigger_keeps_remainder_below_max_size():
    processor, sink = make_processor(
        factory, {"send_batch_size": 10, "send_batch_max_size": 10, "timeout": "10s"}
    )
    await processor.start(None)
    for _ in range(4):
        await processor.consume(make_traces(3))
    assert [count_items(b) for b in sink.batches] == [10]
    await processor.shutdown()
    assert [count_items(b) for b in sink.batches] == [10, 2]


async def test_timeout_trigger():
    processor, sink = make_processor(factory, {"send_batch_size": 1000, "timeout": "20ms"})
    await processor.start(None)
    await processor.consume(make_logs(2))
    await processor.consume(make_logs(3))
    await sink.wait_for(5)
    assert [count_items(b) for b in sink.batches] == [5]
    await processor.consume(make_logs(1))
    await sink.wait_for(6)
    await processor.shutdown()
    assert processor_metric(processor, "incoming") == processor_metric(processor, "outgoing") == 6


async def test_no_size_trigger_sends_on_timeout_only():
    processor, sink = make_processor(factory, {"send_batch_size": 0, "timeout": "20ms"})
    await processor.start(None)
    await processor.consume(make_metrics(50_000))
    assert sink.batches == []
    await sink.wait_for(50_000)
    await processor.shutdown()


async def test_shutdown_flushes_everything_held():
    processor, sink = make_processor(factory, {"timeout": "1h"}, Signal.METRICS)
    await processor.start(None)
    await processor.consume(make_metrics(4))
    await processor.consume(make_metrics(5))
    await processor.shutdown()
    assert sink.item_count == 9
    await processor.shutdown()
    assert sink.item_count == 9


async def test_shutdown_without_start_flushes():
    processor, sink = make_processor(factory, {})
    await processor.consume(make_traces(2))
    await processor.shutdown()
    assert sink.item_count == 2


async def test_zero_timeout_sends_at_once_and_reports_errors():
    processor, sink = make_processor(factory, {"timeout": "0s", "send_batch_max_size": 8192})
    await processor.start(None)
    await processor.consume(make_traces(3))
    assert sink.item_count == 3
    processor.next = ErrorConsumer(RetryableError("backend down"))
    with pytest.raises(RetryableError):
        await processor.consume(make_traces(1))
    await processor.shutdown()


async def test_a_permanent_error_on_flush_is_logged_not_raised(caplog):
    processor, _ = make_processor(factory, {"send_batch_size": 2, "timeout": "1h"})
    processor.next = ErrorConsumer(PermanentError("the backend rejected the data"))
    with caplog.at_level(logging.ERROR):
        await processor.consume(make_traces(2))
    assert "the next consumer failed" in caplog.text
    await processor.shutdown()


class RefusingConsumer(SinkConsumer):
    """Refuses with a retryable error (a full sending queue) until `open` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.open = False
        self.refusals = 0

    async def consume(self, batch) -> None:
        if not self.open:
            self.refusals += 1
            raise RetryableError("sending queue is full")
        await super().consume(batch)


async def test_held_data_refused_downstream_is_kept_retried_and_new_data_refused():
    processor, _ = make_processor(factory, {"send_batch_size": 3, "timeout": "10ms"})
    downstream = RefusingConsumer()
    processor.next = downstream
    await processor.start(None)
    await processor.consume(make_traces(3, resource={"service.name": "first"}))  # held: acked
    assert downstream.refusals == 1
    second = make_traces(2, resource={"service.name": "second"})
    with pytest.raises(RetryableError, match="refused") as refused:
        await processor.consume(second)
    assert refused.value.retry_after and refused.value.retry_after > 0
    await asyncio.sleep(0.5)
    assert downstream.refusals > 1  # offered again, with a delay between
    downstream.open = True
    await downstream.wait_for(3, timeout=10)
    await processor.consume(second)  # accepted again
    await processor.shutdown()
    services = [key[0] for key in item_keys(downstream.batches)]
    assert services == ["first"] * 3 + ["second"] * 2


async def test_at_shutdown_refused_data_is_offered_until_accepted():
    processor, _ = make_processor(factory, {"send_batch_size": 100, "timeout": "1h"})
    downstream = RefusingConsumer()
    processor.next = downstream
    await processor.start(None)
    await processor.consume(make_traces(4))
    await processor.flush()  # refused: held again
    assert downstream.refusals == 1 and downstream.item_count == 0

    async def reopen():
        await asyncio.sleep(0.3)
        downstream.open = True

    await asyncio.gather(processor.shutdown(), reopen())
    assert downstream.item_count == 4


async def test_concurrent_producers_lose_nothing():
    processor, sink = make_processor(
        factory, {"send_batch_size": 7, "send_batch_max_size": 9, "timeout": "5ms"}
    )
    await processor.start(None)
    await asyncio.gather(*(processor.consume(make_traces(n % 5 + 1)) for n in range(40)))
    await processor.shutdown()
    expected = sum(n % 5 + 1 for n in range(40))
    assert sink.item_count == expected
    assert all(count_items(b) <= 9 for b in sink.batches)
    assert processor_metric(processor, "outgoing") == expected


@pytest.mark.parametrize("signal", list(Signal))
async def test_split_by_max_size_keeps_every_item_in_order(signal):
    processor, sink = make_processor(
        factory, {"send_batch_size": 4, "send_batch_max_size": 4, "timeout": "1h"}, signal
    )
    sent = [build(signal, 7, "a", "m1"), build(signal, 2, "b", "m2"), build(signal, 6, "c", "m3")]
    expected = item_keys(sent)
    for batch in sent:
        await processor.consume(batch)
    await processor.shutdown()
    assert [count_items(b) for b in sink.batches] == [4, 4, 4, 3]
    assert item_keys(sink.batches) == expected
    assert processor_metric(processor, "incoming") == processor_metric(processor, "outgoing") == 15


def test_split_repeats_resource_scope_and_metric_descriptor():
    batch = make_metrics(5, resource={"service.name": "a", "host.name": "h1"}, name="requests")
    batch.resource_metrics[0].schema_url = "https://example.com/schema"
    metric = batch.resource_metrics[0].scope_metrics[0].metrics[0]
    metric.description = "requests served"
    chunks = split_batch(batch, 2)
    assert [count_items(c) for c in chunks] == [2, 2, 1]
    for chunk in chunks:
        (rm,) = resources(chunk)
        assert rm.schema_url == "https://example.com/schema"
        assert get_attr(rm.resource.attributes, "host.name") == "h1"
        (sm,) = rm.scope_metrics
        assert sm.scope.name == "coldtail.testing"
        (part,) = sm.metrics
        assert (part.name, part.description, part.unit) == ("requests", "requests served", "1")
        assert part.sum.is_monotonic
        assert part.sum.aggregation_temporality == metric.sum.aggregation_temporality


def test_split_within_one_scope_of_spans():
    batch = make_traces(5)
    chunks = split_batch(batch, 5)
    assert chunks == [batch]
    chunks = split_batch(batch, 3)
    assert [count_items(c) for c in chunks] == [3, 2]
    assert item_keys(chunks) == item_keys([batch])


async def test_the_collectors_batch_metrics_count_sends_by_trigger_and_size():
    processor, sink = make_processor(factory, {"send_batch_size": 10, "timeout": "30ms"})

    def sample(name: str, **extra) -> float:
        labels = {"processor": "batch", "pipeline": "traces", **extra}
        value = processor.settings.telemetry.registry.get_sample_value(name, labels)
        return value or 0.0

    await processor.start(None)
    for _ in range(4):
        await processor.consume(make_traces(3))  # the 4th makes 12: sent by the size trigger
    await sink.wait_for(12, 2)
    await processor.shutdown()
    assert sample("otelcol_processor_batch_batch_size_trigger_send_total") == 1
    assert sample("otelcol_processor_batch_timeout_trigger_send_total") == 0
    assert sample("otelcol_processor_batch_batch_send_size_count") == 1
    assert sample("otelcol_processor_batch_batch_send_size_sum") == 12
    assert sample("otelcol_processor_batch_metadata_cardinality") == 1
    processor, sink = make_processor(factory, {"send_batch_size": 100, "timeout": "20ms"})
    await processor.start(None)
    await processor.consume(make_traces(5))
    await sink.wait_for(5, 2)
    await processor.shutdown()
    assert sample("otelcol_processor_batch_timeout_trigger_send_total") == 1
    assert sample("otelcol_processor_batch_batch_send_size_bucket", le="10.0") == 1


class ClientRecorder(SinkConsumer):
    """Records, with each batch, the client metadata current when it arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.tenants: list = []

    async def consume(self, batch) -> None:
        current = client.current()
        self.tenants.append((current.get("x-tenant"), dict(current.metadata)))
        await super().consume(batch)


def sent(sink: ClientRecorder) -> list:
    """(tenant, items) of each batch sent."""
    return [(t, count_items(b)) for (t, _), b in zip(sink.tenants, sink.batches, strict=True)]


async def from_tenant(processor, tenant: str | None, items: int) -> None:
    headers = [("X-Tenant", tenant)] if tenant else []
    with client.using(ClientInfo.of("10.0.0.1:5000", [*headers, ("x-other", "dropped")])):
        await processor.consume(make_traces(items))


async def test_metadata_keys_batch_each_tenant_apart_and_send_its_values_on():
    sink = ClientRecorder()
    processor, _ = make_processor(
        factory, {"send_batch_size": 4, "timeout": "30ms", "metadata_keys": ["X-Tenant"]}, sink=sink
    )
    await processor.start(None)
    await from_tenant(processor, "a", 3)
    await from_tenant(processor, "b", 3)
    await from_tenant(processor, None, 1)
    assert sink.batches == []  # 3 + 3 + 1 would pass the size trigger of one batcher
    await from_tenant(processor, "a", 1)  # tenant a reaches 4
    assert sent(sink) == [(("a",), 4)]
    await sink.wait_for(8)  # b's and the tenantless batch go on timeout
    await processor.shutdown()
    assert sorted(sent(sink)) == [((), 1), (("a",), 4), (("b",), 3)]
    # Only the metadata_keys travel on, not the other headers.
    assert all(set(metadata) <= {"x-tenant"} for _, metadata in sink.tenants)
    assert processor_metric(processor, "incoming") == 8


async def test_metadata_cardinality_limit_refuses_a_further_combination():
    processor, sink = make_processor(
        factory, {"timeout": "1h", "metadata_keys": ["x-tenant"], "metadata_cardinality_limit": 2}
    )
    await processor.start(None)
    await from_tenant(processor, "a", 1)
    await from_tenant(processor, "b", 1)
    with pytest.raises(PermanentError, match="metadata_cardinality_limit"):
        await from_tenant(processor, "c", 1)
    await from_tenant(processor, "a", 1)  # known combinations still go through
    await processor.shutdown()
    assert sink.item_count == 3
