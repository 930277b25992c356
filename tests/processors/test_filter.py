import logging

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.consumer import PermanentError
from collector.core.pdata import count_items, get_attr, iter_items, iter_spans, resources, set_attr
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


# --- OTTL conditions -----------------------------------------------------------------------

# A condition that fails on every item: no name is 1000 bytes long.
FAILING = 'Substring(name, 0, 1000) == ""'


def traces_with_events():
    """traces() with events on the checkout GET spans: one `debug`, one `cache.miss`."""
    batch = traces()
    for span in batch.resource_spans[0].scope_spans[0].spans[:2]:
        span.events.add().name = "debug"
        span.events.add().name = "cache.miss"
    return batch


@pytest.mark.parametrize(
    ("conditions", "kept"),
    [
        ({"span": ['name == "GET /healthz"']}, 4),
        ({"span": ['resource.attributes["service.name"] == "cart"']}, 3),
        ({"span": ["kind == SPAN_KIND_CLIENT", 'IsMatch(name, "health")']}, 2),
        ({"span": ['attributes["http.method"] == "GET" and attributes["test.index"] == 1']}, 4),
        ({"span": ['span.attributes["http.method"] != nil']}, 3),
        ({"span": ['resource.attributes["deployment.environment"] == nil']}, 2),
        ({"span": ["false"]}, 5),
        ({"span": []}, 5),
    ],
)
async def test_ottl_span_conditions(conditions, kept):
    processor, sink = make_processor(factory, {"traces": conditions})
    await processor.consume(traces())
    assert sink.item_count == kept
    assert processor_metric(processor, "outgoing") == kept


async def test_ottl_span_event_conditions_keep_the_span():
    processor, sink = make_processor(
        factory,
        {"traces": {"span": ['name == "GET /healthz"'], "spanevent": ['name == "debug"']}},
    )
    await processor.consume(traces_with_events())
    (out,) = sink.batches
    assert [[e.name for e in s.events] for _, _, s in iter_spans(out)] == [
        ["cache.miss"],
        ["cache.miss"],
        [],
        [],
    ]


async def test_a_dropped_span_skips_its_event_conditions():
    # An event condition that would fail on every event is never run for dropped spans.
    processor, sink = make_processor(
        factory,
        {
            "traces": {
                "span": ['resource.attributes["service.name"] == "checkout"'],
                "spanevent": [FAILING],
            }
        },
    )
    await processor.consume(traces_with_events())
    assert sink.item_count == 2


async def test_ottl_metric_and_datapoint_conditions():
    processor, sink = make_processor(
        factory,
        {
            "metrics": {
                "metric": ['name == "rpc.server.duration"', 'HasAttrOnDatapoint("env", "dev")'],
                "datapoint": ['attributes["test.index"] == 0', "value_int > 2"],
            }
        },
        Signal.METRICS,
    )
    batch = make_metrics(3, name="http.server.duration")
    batch.MergeFrom(make_metrics(2, name="rpc.server.duration"))
    batch.MergeFrom(make_metrics(1, name="single"))
    flagged = make_metrics(2, name="flagged")
    set_attr(
        flagged.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[1].attributes,
        "env",
        "dev",
    )
    batch.MergeFrom(flagged)
    await processor.consume(batch)
    (out,) = sink.batches
    kept = [(m.name, [p.as_int for p in m.sum.data_points]) for _, _, m in iter_items(out)]
    # http: points 1, 2, 3 lose index 0 and values above 2; single: its only point is index 0.
    assert kept == [("http.server.duration", [2])]
    assert processor_metric(processor, "incoming") == 8
    assert processor_metric(processor, "outgoing") == 1


async def test_ottl_log_conditions():
    processor, sink = make_processor(
        factory,
        {"logs": {"log_record": ['IsMatch(body, "^health")', "severity_number == 0"]}},
        Signal.LOGS,
    )
    await processor.consume(logs())
    kept = [r.body.string_value for b in sink.batches for _, _, r in iter_items(b)]
    assert kept == ["request served 0", "request served 1", "slow request 0"]


async def test_ottl_dropping_everything_is_not_an_error():
    processor, sink = make_processor(factory, {"logs": {"log_record": ["true"]}}, Signal.LOGS)
    await processor.consume(logs())
    assert sink.batches == []


@pytest.mark.parametrize("mode", ["ignore", "silent"])
async def test_a_failing_condition_does_not_match(caplog, mode):
    # Substring fails on every span name; the second condition still drops the health check.
    processor, sink = make_processor(
        factory,
        {
            "error_mode": mode,
            "traces": {"span": [FAILING, 'name == "GET /healthz"']},
        },
    )
    with caplog.at_level(logging.WARNING):
        await processor.consume(traces())
    assert sink.item_count == 4
    assert ("failed on 5 item(s)" in caplog.text) is (mode == "ignore")


async def test_a_failing_condition_fails_the_batch_with_propagate():
    config = {"error_mode": "propagate", "traces": {"span": [FAILING]}}
    processor, sink = make_processor(factory, config)
    with pytest.raises(PermanentError, match=r"Substring.*out of range"):
        await processor.consume(traces())
    assert sink.batches == []


async def test_legacy_and_ottl_for_different_signals():
    config = {
        "spans": {"exclude": {"match_type": "strict", "services": ["cart"]}},
        "logs": {"log_record": ['body == "health check 0"']},
    }
    processor, sink = make_processor(factory, config)
    await processor.consume(traces())
    assert sink.item_count == 3
    processor, sink = make_processor(factory, config, Signal.LOGS)
    await processor.consume(logs())
    assert sink.item_count == 4
