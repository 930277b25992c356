import hashlib

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import get_attr, iter_items, iter_spans, metric_points, set_attr
from collector.core.signals import Signal
from collector.processors.attributes import Config, factory
from collector.processors.internal.attraction import AttributeActions
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_metrics, make_traces


def run(actions: list[dict], attrs: dict) -> dict:
    """`attrs` after applying `actions`, as a Python dict."""
    config = Config.model_validate({"actions": actions})
    fields = _repeated(attrs)
    AttributeActions(config.actions).apply(fields)
    return {kv.key: get_attr(fields, kv.key) for kv in fields}


def _repeated(attrs: dict):
    holder = Span()
    for key, value in attrs.items():
        set_attr(holder.attributes, key, value)
    return holder.attributes


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("action", "before", "after"),
    [
        ({"key": "a", "action": "insert", "value": 1}, {}, {"a": 1}),
        ({"key": "a", "action": "insert", "value": 1}, {"a": 0}, {"a": 0}),
        ({"key": "a", "action": "update", "value": "x"}, {}, {}),
        ({"key": "a", "action": "update", "value": "x"}, {"a": 0}, {"a": "x"}),
        ({"key": "a", "action": "upsert", "value": True}, {}, {"a": True}),
        ({"key": "a", "action": "upsert", "value": 2.5}, {"a": 0}, {"a": 2.5}),
        ({"key": "a", "action": "upsert", "from_attribute": "b"}, {"b": "v"}, {"b": "v", "a": "v"}),
        ({"key": "a", "action": "insert", "from_attribute": "b"}, {}, {}),
        (
            {"key": "a", "action": "update", "from_attribute": "b"},
            {"a": 1, "b": [1, 2]},
            {"a": [1, 2], "b": [1, 2]},
        ),
        ({"key": "a", "action": "delete"}, {"a": 1, "b": 2}, {"b": 2}),
        (
            {"pattern": "^secret", "action": "delete"},
            {"secret.a": 1, "b": 2, "secret.c": 3},
            {"b": 2},
        ),
        ({"key": "b", "pattern": "^x", "action": "delete"}, {"x1": 1, "b": 2, "c": 3}, {"c": 3}),
        ({"key": "a", "action": "hash"}, {"a": "me@example.com"}, {"a": sha256("me@example.com")}),
        ({"key": "a", "action": "hash"}, {"a": 42}, {"a": sha256("42")}),
        (
            {"pattern": "token$", "action": "hash"},
            {"x.token": True, "y": "keep"},
            {"x.token": sha256("true"), "y": "keep"},
        ),
        (
            {"key": "url", "action": "extract", "pattern": r"^(?P<scheme>\w+)://(?P<host>[^/]+)"},
            {"url": "https://example.com/x", "host": "old"},
            {"url": "https://example.com/x", "host": "example.com", "scheme": "https"},
        ),
        (
            {"key": "url", "action": "extract", "pattern": r"^(?P<scheme>\w+)://"},
            {"url": "no scheme"},
            {"url": "no scheme"},
        ),
        ({"key": "a", "action": "convert", "converted_type": "int"}, {"a": "42"}, {"a": 42}),
        ({"key": "a", "action": "convert", "converted_type": "int"}, {"a": 4.9}, {"a": 4}),
        ({"key": "a", "action": "convert", "converted_type": "int"}, {"a": "4x"}, {"a": "4x"}),
        ({"key": "a", "action": "convert", "converted_type": "double"}, {"a": "1.5"}, {"a": 1.5}),
        ({"key": "a", "action": "convert", "converted_type": "double"}, {"a": 3}, {"a": 3.0}),
        (
            {"key": "a", "action": "convert", "converted_type": "string"},
            {"a": False},
            {"a": "false"},
        ),
        (
            {"key": "a", "action": "convert", "converted_type": "string"},
            {"a": 1e21},
            {"a": "1000000000000000000000"},
        ),
        ({"key": "a", "action": "convert", "converted_type": "string"}, {}, {}),
    ],
)
def test_action(action, before, after):
    assert run([action], before) == after


def test_actions_run_in_order():
    actions = [
        {"key": "user", "action": "insert", "from_attribute": "enduser.id"},
        {"key": "enduser.id", "action": "delete"},
        {"key": "user", "action": "hash"},
    ]
    assert run(actions, {"enduser.id": "alice"}) == {"user": sha256("alice")}


def test_insert_copies_the_value_not_a_reference():
    fields = _repeated({"b": "v"})
    config = Config.model_validate({"actions": [{"key": "a", "action": "insert", "value": "x"}]})
    actions = AttributeActions(config.actions)
    actions.apply(fields)
    fields[-1].value.string_value = "changed"
    other = _repeated({})
    actions.apply(other)
    assert get_attr(other, "a") == "x"


async def test_span_attributes_changed_only_where_included():
    processor, sink = make_processor(
        factory,
        {
            "include": {"match_type": "strict", "services": ["checkout"]},
            "exclude": {"match_type": "regexp", "span_names": ["^GET /health"]},
            "actions": [{"key": "env", "action": "upsert", "value": "prod"}],
        },
    )
    batch = make_traces(2, resource={"service.name": "checkout"})
    batch.MergeFrom(make_traces(2, resource={"service.name": "cart"}))
    batch.MergeFrom(make_traces(1, resource={"service.name": "checkout"}, name="GET /healthz"))
    await processor.consume(batch)
    (out,) = sink.batches
    envs = [
        (
            get_attr(rs.resource.attributes, "service.name"),
            span.name,
            get_attr(span.attributes, "env"),
        )
        for rs, _, span in iter_spans(out)
    ]
    assert envs == [
        ("checkout", "GET /items/{id}", "prod"),
        ("checkout", "GET /items/{id}", "prod"),
        ("cart", "GET /items/{id}", None),
        ("cart", "GET /items/{id}", None),
        ("checkout", "GET /healthz", None),
    ]
    assert processor_metric(processor, "incoming") == processor_metric(processor, "outgoing") == 5
    assert processor.mutates_data


async def test_match_on_attributes_kind_and_library():
    processor, sink = make_processor(
        factory,
        {
            "include": {
                "match_type": "strict",
                "span_kinds": ["SPAN_KIND_CLIENT"],
                "attributes": [{"key": "http.method", "value": "GET"}, {"key": "peer"}],
                "libraries": [{"name": "coldtail.testing"}],
            },
            "actions": [{"key": "hit", "action": "insert", "value": True}],
        },
    )
    client = {"http.method": "GET", "peer": "db"}
    batch = make_traces(1, kind=Span.SPAN_KIND_CLIENT, attributes=client)
    batch.MergeFrom(make_traces(1, kind=Span.SPAN_KIND_SERVER, attributes=client))
    batch.MergeFrom(make_traces(1, kind=Span.SPAN_KIND_CLIENT, attributes={"http.method": "GET"}))
    batch.MergeFrom(
        make_traces(1, kind=Span.SPAN_KIND_CLIENT, attributes={**client, "http.method": "POST"})
    )
    await processor.consume(batch)
    hits = [get_attr(span.attributes, "hit") for _, _, span in iter_spans(sink.batches[0])]
    assert hits == [True, None, None, None]


async def test_log_records():
    processor, sink = make_processor(
        factory,
        {
            "include": {"match_type": "regexp", "log_bodies": ["^hello 1"]},
            "actions": [{"key": "test.index", "action": "convert", "converted_type": "string"}],
        },
        Signal.LOGS,
    )
    await processor.consume(make_logs(3))
    values = [get_attr(r.attributes, "test.index") for _, _, r in iter_items(sink.batches[0])]
    assert values == [0, "1", 2]


async def test_metric_data_points():
    processor, sink = make_processor(
        factory,
        {
            "exclude": {"match_type": "strict", "metric_names": ["skipped"]},
            "actions": [{"key": "env", "action": "insert", "value": "prod"}],
        },
        Signal.METRICS,
    )
    batch = make_metrics(2, name="requests")
    batch.MergeFrom(make_metrics(1, name="skipped"))
    await processor.consume(batch)
    envs = [
        (metric.name, get_attr(point.attributes, "env"))
        for _, _, metric in iter_items(sink.batches[0])
        for point in metric_points(metric)
    ]
    assert envs == [("requests", "prod"), ("requests", "prod"), ("skipped", None)]


def test_span_properties_rejected_for_logs():
    config = Config.model_validate(
        {
            "include": {"match_type": "strict", "services": ["a"]},
            "actions": [{"key": "a", "action": "delete"}],
        }
    )
    with pytest.raises(ValueError, match="services cannot be used to match logs"):
        make_processor(factory, config.model_dump(), Signal.LOGS)
