import pytest

from collector.core.pdata import get_attr, resources
from collector.core.signals import Signal
from collector.processors.resource import factory
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_metrics, make_traces

BUILDERS = {Signal.TRACES: make_traces, Signal.METRICS: make_metrics, Signal.LOGS: make_logs}


@pytest.mark.parametrize("signal", list(Signal))
async def test_actions_apply_to_every_resource(signal):
    processor, sink = make_processor(
        factory,
        {
            "attributes": [
                {"key": "cloud.region", "action": "upsert", "value": "eu-west-1"},
                {"key": "service.namespace", "action": "insert", "from_attribute": "team"},
                {"key": "team", "action": "delete"},
            ]
        },
        signal,
    )
    make = BUILDERS[signal]
    batch = make(2, resource={"service.name": "a", "team": "payments"})
    batch.MergeFrom(make(3, resource={"service.name": "b", "cloud.region": "us-east-1"}))
    await processor.consume(batch)
    (out,) = sink.batches
    assert [
        {kv.key: get_attr(r.resource.attributes, kv.key) for kv in r.resource.attributes}
        for r in resources(out)
    ] == [
        {"service.name": "a", "cloud.region": "eu-west-1", "service.namespace": "payments"},
        {"service.name": "b", "cloud.region": "eu-west-1"},
    ]
    assert processor_metric(processor, "incoming") == processor_metric(processor, "outgoing") == 5
