import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import count_items, get_attr, iter_items, iter_spans, resources
from collector.core.signals import Signal
from collector.processors.filter import factory
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_metrics, make_traces


def traces():
    """checkout: 2 GET spans, 1 health check; cart: 2 GET spans with kind CLIENT."""
    batch = make_traces(2, resource={"service.name": "checkout"}, attributes={"http.method": "GET"})
    batch.MergeFrom(make_traces(1, resource={"service.name": "checkout"}, name="GET /healthz"))
    batch.MergeFrom(
        make_traces(
            2,
            resource={"service.name": "cart", "deployment.environment": "dev"},
            kind=Span.SPAN_KIND_CLIENT,
        )
    )
    return batch


def span_names(batch) -> list[tuple[str, str]]:
    return [
        (get_attr(rs.resource.attributes, "service.name"), span.name)
        for rs, _, span in iter_spans(batch)
    ]


@pytest.mark.parametrize(
    ("spans", "kept"),
    [
        ({}, 5),
        ({"include": {"match_type": "strict", "services": ["checkout"]}}, 3),
        ({"exclude": {"match_type": "strict", "services": ["checkout"]}}, 2),
        ({"exclude": {"match_type": "regexp", "span_names": ["health"]}}, 4),
        ({"include": {"match_type": "regexp", "services": ["^c"]}}, 5),
        ({"include": {"match_type": "regexp", "services": ["^checkout$", "^cart$"]}}, 5),
        ({"include": {"match_type": "strict", "span_kinds": ["SPAN_KIND_CLIENT"]}}, 2),
        ({"include": {"match_type": "strict", "attributes": [{"key": "http.method"}]}}, 2),
        (
            {
                "include": {
                    "match_type": "strict",
                    "attributes": [{"key": "http.method", "value": "GET"}, {"key": "absent"}],
                }
            },
            0,
        ),
        (
            {"exclude": {"match_type": "strict", "resources": [{"key": "deployment.environment"}]}},
            3,
        ),
        (
            {
                "include": {"match_type": "strict", "services": ["checkout"]},
                "exclude": {"match_type": "strict", "span_names": ["GET /healthz"]},
            },
            2,
        ),
        ({"include": {"match_type": "strict", "libraries": [{"name": "other"}]}}, 0),
        (
            {
                "include": {
                    "match_type": "strict",
                    "libraries": [{"name": "coldtail.testing", "version": "1.0"}],
                }
            },
            0,
        ),
        ({"include": {"match_type": "regexp", "libraries": [{"name": "^coldtail"}]}}, 5),
    ],
)
async def test_spans(spans, kept):
    processor, sink = make_processor(factory, {"spans": spans})
    await processor.consume(traces())
    assert sink.item_count == kept
    assert processor_metric(processor, "incoming") == 5
    assert processor_metric(processor, "outgoing") == kept
    if kept == 0:
        assert sink.batches == []


async def test_empty_scopes_and_resources_are_removed():
    processor, sink = make_processor(
        factory, {"spans": {"include": {"match_type": "strict", "services": ["cart"]}}}
    )
    await processor.consume(traces())
    (out,) = sink.batches
    assert len(out.resource_spans) == 1
    assert span_names(out) == [("cart", "GET /items/{id}")] * 2


async def test_order_is_kept_when_some_spans_drop():
    processor, sink = make_processor(
        factory,
        {
            "spans": {
                "exclude": {
                    "match_type": "strict",
                    "attributes": [{"key": "test.index", "value": 1}],
                }
            }
        },
    )
    await processor.consume(make_traces(4))
    indexes = [get_attr(s.attributes, "test.index") for _, _, s in iter_spans(sink.batches[0])]
    assert indexes == [0, 2, 3]


async def test_strict_attribute_values_compare_types():
    processor, sink = make_processor(
        factory,
        {
            "spans": {
                "include": {"match_type": "strict", "attributes": [{"key": "flag", "value": 1}]}
            }
        },
    )
    batch = make_traces(1, attributes={"flag": True})
    batch.MergeFrom(make_traces(1, attributes={"flag": 1}))
    await processor.consume(batch)
    assert sink.item_count == 1


async def test_metrics_by_name_and_resource():
    processor, sink = make_processor(
        factory,
        {
            "metrics": {
                "include": {"match_type": "regexp", "metric_names": ["^http\\."]},
                "exclude": {
                    "match_type": "strict",
                    "resource_attributes": [{"key": "service.name", "value": "cart"}],
                },
            }
        },
        Signal.METRICS,
    )
    batch = make_metrics(3, name="http.server.duration")
    batch.MergeFrom(make_metrics(2, name="rpc.server.duration"))
    batch.MergeFrom(make_metrics(4, name="http.client.duration", resource={"service.name": "cart"}))
    await processor.consume(batch)
    (out,) = sink.batches
    assert [m.name for _, _, m in iter_items(out)] == ["http.server.duration"]
    assert len(resources(out)) == 1
    assert processor_metric(processor, "incoming") == 9
    assert processor_metric(processor, "outgoing") == 3


def logs():
    batch = make_logs(2, body="request served")
    batch.MergeFrom(make_logs(1, body="health check"))
    warn = make_logs(1, body="slow request")
    record = warn.resource_logs[0].scope_logs[0].log_records[0]
    record.severity_number, record.severity_text = 13, "WARN"
    batch.MergeFrom(warn)
    unset = make_logs(1, body="unknown")
    unset.resource_logs[0].scope_logs[0].log_records[0].severity_number = 0
    batch.MergeFrom(unset)
    return batch


@pytest.mark.parametrize(
    ("logs_config", "bodies"),
    [
        (
            {"include": {"match_type": "strict", "severity_number": {"min": "WARN"}}},
            ["slow request 0"],
        ),
        (
            {
                "include": {
                    "match_type": "strict",
                    "severity_number": {"min": 13, "match_undefined": True},
                }
            },
            ["slow request 0", "unknown 0"],
        ),
        (
            {"exclude": {"match_type": "regexp", "bodies": ["^health", "^unknown"]}},
            ["request served 0", "request served 1", "slow request 0"],
        ),
        ({"include": {"match_type": "strict", "severity_texts": ["WARN"]}}, ["slow request 0"]),
        (
            {
                "include": {
                    "match_type": "strict",
                    "record_attributes": [{"key": "test.index", "value": 1}],
                }
            },
            ["request served 1"],
        ),
        (
            {
                "exclude": {
                    "match_type": "regexp",
                    "resource_attributes": [{"key": "service.name", "value": "^cart$"}],
                }
            },
            [
                "request served 0",
                "request served 1",
                "health check 0",
                "slow request 0",
                "unknown 0",
            ],
        ),
    ],
)
async def test_logs(logs_config, bodies):
    processor, sink = make_processor(factory, {"logs": logs_config}, Signal.LOGS)
    await processor.consume(logs())
    kept = [r.body.string_value for b in sink.batches for _, _, r in iter_items(b)]
    assert kept == bodies
    assert processor_metric(processor, "outgoing") == len(bodies)


async def test_dropping_everything_is_not_an_error():
    processor, sink = make_processor(
        factory, {"logs": {"include": {"match_type": "strict", "bodies": ["nothing"]}}}, Signal.LOGS
    )
    assert processor.process(logs()) is None
    await processor.consume(logs())
    assert sink.batches == []
    assert count_items(logs()) == 5
