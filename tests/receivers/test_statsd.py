"""statsd: real UDP datagrams in, aggregated OTLP metrics out, as the OTel Collector's statsd
receiver makes them."""

import asyncio
import logging
import socket

import pytest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from collector.core.consumer import RetryableError
from collector.core.pdata import any_value_to_python
from collector.core.signals import Signal
from collector.receivers.statsd import Config, InvalidLine, StatsdReceiver, factory, parse_line
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import ErrorConsumer, SinkConsumer

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
HOUR = {"endpoint": "127.0.0.1:0", "aggregation_interval": "1h"}


async def started(config: dict, consumer=None) -> tuple[StatsdReceiver, SinkConsumer]:
    sink = consumer or SinkConsumer()
    receiver = factory.create(
        make_settings("receiver", "statsd"), Config.model_validate(config), {Signal.METRICS: sink}
    )
    await receiver.start(StaticHost())
    return receiver, sink


async def send(receiver: StatsdReceiver, *datagrams: str) -> None:
    host, port = receiver.endpoint.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for datagram in datagrams:
            s.sendto(datagram.encode(), (host, int(port)))
    await asyncio.sleep(0.1)  # delivered on loopback


def points(sink: SinkConsumer) -> dict[tuple[str, tuple], tuple[str, object]]:
    """(name, sorted attributes) -> (data kind, point) over everything received."""
    found = {}
    for batch in sink.batches:
        for rm in batch.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        attrs = tuple(
                            sorted(
                                (kv.key, any_value_to_python(kv.value)) for kv in point.attributes
                            )
                        )
                        found[metric.name, attrs] = (kind, point)
    return found


async def test_counters_gauges_and_sets_aggregate_until_the_flush():
    receiver, sink = await started({**HOUR, "enable_metric_type": True})
    await send(
        receiver,
        "orders.placed:3|c|#tier:gold\norders.placed:2|c|@0.5|#tier:gold\norders.placed:1|c",
        "queue.depth:10|g\nqueue.depth:+5|g\nqueue.depth:-3|g",
        "users.seen:alice|s\nusers.seen:bob|s\nusers.seen:alice|s",
    )
    assert sink.batches == []  # aggregating
    await receiver.shutdown()  # flushes
    found = points(sink)
    kind, gold = found["orders.placed", (("metric_type", "counter"), ("tier", "gold"))]
    assert kind == "sum" and gold.as_int == 3 + 2 / 0.5
    assert found["orders.placed", (("metric_type", "counter"),)][1].as_int == 1
    assert found["queue.depth", (("metric_type", "gauge"),)][1].as_double == 12
    assert found["users.seen", (("metric_type", "set"),)][1].as_int == 2
    [batch] = sink.batches
    counter = next(
        m for m in batch.resource_metrics[0].scope_metrics[0].metrics if m.name == "orders.placed"
    )
    assert (
        counter.sum.aggregation_temporality == AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )
    assert not counter.sum.is_monotonic


async def test_each_interval_sends_its_own_deltas_and_gauges_keep_their_value():
    receiver, sink = await started({"endpoint": "127.0.0.1:0", "aggregation_interval": "200ms"})
    await send(receiver, "hits:1|c\nlevel:7|g")
    await sink.wait_for(2, timeout=5)
    await send(receiver, "hits:4|c\nlevel:+1|g")
    await sink.wait_for(4, timeout=5)
    await receiver.shutdown()
    hits = [p.as_int for b in sink.batches for p in _named(b, "hits")]
    levels = [p.as_double for b in sink.batches for p in _named(b, "level")]
    assert hits == [1, 4] and levels == [7, 8]


def _named(batch, name):
    for metric in batch.resource_metrics[0].scope_metrics[0].metrics:
        if metric.name == name:
            yield from getattr(metric, metric.WhichOneof("data")).data_points


async def test_timers_as_gauge_summary_and_exponential_histogram():
    receiver, sink = await started(
        {
            **HOUR,
            "timer_histogram_mapping": [
                {
                    "statsd_type": "timer",
                    "observer_type": "summary",
                    "summary": {"percentiles": [50, 100]},
                },
                {
                    "statsd_type": "histogram",
                    "observer_type": "histogram",
                    "histogram": {"max_size": 10},
                },
            ],
        }
    )
    lines = [f"latency:{v}|ms" for v in (10, 20, 30, 40)] + ["latency:100|ms|@0.5"]
    lines += [f"size:{v}|h" for v in (1, 2, 4, 1000)] + ["size:0|h"]
    lines += ["depth:3|d", "depth:9|d"]
    await send(receiver, "\n".join(lines))
    await receiver.shutdown()
    found = points(sink)
    kind, summary = found["latency", ()]
    assert kind == "summary" and summary.count == 6 and summary.sum == 100 + 200
    assert [(q.quantile, q.value) for q in summary.quantile_values] == [(0.5, 30), (1.0, 100)]
    kind, histogram = found["size", ()]
    assert kind == "exponential_histogram"
    assert (histogram.count, histogram.zero_count, histogram.sum) == (5, 1, 1007)
    assert (histogram.min, histogram.max) == (0, 1000)
    assert (
        len(histogram.positive.bucket_counts) <= 10 and sum(histogram.positive.bucket_counts) == 4
    )
    base = 2 ** (2**-histogram.scale)
    top = histogram.positive.offset + len(histogram.positive.bucket_counts)
    assert base ** (histogram.positive.offset) < 1 <= base ** (histogram.positive.offset + 1)
    assert base ** (top - 1) < 1000 <= base**top
    assert found["depth", ()][0] == "gauge" and found["depth", ()][1].as_double == 9


@pytest.mark.parametrize(
    "line, message",
    [
        ("no-value|c", "expected name:value|type"),
        ("x:1|zz", "unknown type"),
        ("x:abc|c", "invalid value"),
        ("x:1|c|@2", "sample rate"),
        ("x:1|c|#flag", "invalid tag"),
        ("x:nan|g", "invalid value"),
    ],
)
def test_malformed_lines_are_refused_saying_why(line, message):
    with pytest.raises(InvalidLine, match=message):
        parse_line(line, simple_tags=False)


async def test_bad_lines_are_dropped_counted_and_logged_while_good_ones_count(caplog):
    receiver, sink = await started(HOUR)
    with caplog.at_level(logging.WARNING):
        await send(receiver, "good:1|c\nbad:x|c\nalso good:2|c\n\n", "\xff")
        await receiver.shutdown()
    assert {name for name, _ in points(sink)} == {"good", "also good"}
    refused = receiver.settings.telemetry.registry.get_sample_value(
        "otelcol_receiver_refused_metric_points_total", {"receiver": "statsd", "transport": "udp"}
    )
    assert refused == 2
    assert "statsd lines dropped" in caplog.text


async def test_simple_tags_are_accepted_when_enabled():
    receiver, sink = await started({**HOUR, "enable_simple_tags": True})
    await send(receiver, "deploys:1|c|#production,region:eu")
    await receiver.shutdown()
    assert ("deploys", (("production", ""), ("region", "eu"))) in points(sink)


async def test_points_the_pipeline_refuses_are_counted():
    receiver, _ = await started(HOUR, ErrorConsumer(RetryableError("memory limit")))
    await send(receiver, "a:1|c\nb:2|g")
    await receiver.shutdown()
    refused = receiver.settings.telemetry.registry.get_sample_value(
        "otelcol_receiver_refused_metric_points_total", {"receiver": "statsd", "transport": "udp"}
    )
    assert refused == 2
