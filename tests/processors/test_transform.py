"""The transform processor: both config shapes, context inference, group conditions, order,
error modes, and the upstream README's statement lists run on real batches."""

import logging
from pathlib import Path

import pytest
import yaml

from collector.core.config import ConfigError, validate
from collector.core.consumer import PermanentError
from collector.core.pdata import get_attr, iter_items, set_attr
from collector.core.signals import Signal
from collector.processors.internal.ottl import syntax
from collector.processors.transform import factory
from collector.registry import registry
from tests.processors import make_processor, processor_metric
from tests.support.builders import make_logs, make_metrics, make_traces


def spans(batch):
    return [span for _, _, span in iter_items(batch)]


async def transform(config: dict, batch, signal=Signal.TRACES):
    processor, sink = make_processor(factory, config, signal)
    await processor.consume(batch)
    (out,) = sink.batches
    return out


TESTDATA = yaml.safe_load((Path(__file__).parent / "testdata" / "transform.yaml").read_text())


def readme(name: str) -> dict:
    """A valid case of the testdata: the upstream README's examples as written there."""
    return TESTDATA["valid"][name]


async def test_readme_basic_config_on_traces():
    config = readme("readme_basic")
    batch = make_traces(
        2,
        attributes={
            "process.command_line": "app --password=hunter2 --port 80",
            "cloud.region": "eu-west-1",
            "http.method": "GET",
        },
    )
    out = await transform(config, batch)
    for span in spans(out):
        assert {kv.key for kv in span.attributes} == {"process.command_line", "cloud.region"}
        assert get_attr(span.attributes, "process.command_line") == "app --password=***--port 80"


async def test_readme_basic_config_on_metrics_and_logs():
    config = readme("readme_basic")
    metrics = make_metrics(1, resource={"host.name": "h1", "service.name": "checkout"})
    out = await transform(config, metrics, Signal.METRICS)
    rm = out.resource_metrics[0]
    assert [kv.key for kv in rm.resource.attributes] == ["host.name"]
    # metric.type is a number: comparing it with "Sum" never holds, upstream as here.
    assert rm.scope_metrics[0].metrics[0].description == ""

    logs = make_logs(2)
    first, second = logs.resource_logs[0].scope_logs[0].log_records
    first.body.string_value = "request failed"
    set_attr(first.attributes, "http.route", "/user/7/list/9")
    set_attr(second.attributes, "http.route", "/account/1234/x")
    out = await transform(config, logs, Signal.LOGS)
    first, second = (r for _, _, r in iter_items(out))
    assert first.severity_text == "FAIL"
    assert first.body.string_value == "/user/{userId}/list/{listId}"
    assert second.severity_text == "INFO"
    assert second.body.string_value == "/account/{accountId}/x"


async def test_readme_json_logs_group_with_cache():
    config = readme("readme_parse_json_logs")
    logs = make_logs(2)
    first, second = logs.resource_logs[0].scope_logs[0].log_records
    first.body.string_value = (
        '{"name": "log", "attr1": "foo", "attr2": "bar", "nested": {"attr3": "example"}}'
    )
    out = await transform(config, logs, Signal.LOGS)
    first, second = (r for _, _, r in iter_items(out))
    assert get_attr(first.attributes, "attr1") == "foo"
    assert get_attr(first.attributes, "attr2") == "bar"
    assert get_attr(first.attributes, "nested.attr3") == "example"
    assert get_attr(second.attributes, "attr1") is None


async def test_group_with_context_and_ored_conditions():
    config = {
        "trace_statements": [
            {
                "context": "span",
                "conditions": ['attributes["test.index"] == 0', 'attributes["test.index"] == 2'],
                "statements": [
                    'set(attributes["picked"], true)',
                    'set(name, "second") where attributes["test.index"] == 2',
                ],
            }
        ]
    }
    out = await transform(config, make_traces(3))
    assert [get_attr(s.attributes, "picked") for s in spans(out)] == [True, None, True]
    assert [s.name for s in spans(out)] == ["GET /items/{id}", "GET /items/{id}", "second"]


async def test_statements_run_in_order_and_groups_one_after_the_other():
    config = {
        "trace_statements": [
            'set(span.attributes["a"], "1")',
            'set(span.attributes["b"], Concat([span.attributes["a"], "2"], ""))',
            {"context": "resource", "statements": ['set(attributes["r"], "res")']},
            'set(span.attributes["c"], resource.attributes["r"])',
        ]
    }
    (span,) = spans(await transform(config, make_traces(1)))
    assert (get_attr(span.attributes, "b"), get_attr(span.attributes, "c")) == ("12", "res")


async def test_consecutive_statements_share_the_items_cache():
    config = {
        "trace_statements": [
            'set(span.cache["n"], span.name)',
            'set(span.attributes["from_cache"], span.cache["n"])',
        ]
    }
    (span,) = spans(await transform(config, make_traces(1)))
    assert get_attr(span.attributes, "from_cache") == "GET /items/{id}"


async def test_inferred_contexts():
    config = {
        "trace_statements": [
            {"statements": ['set(resource.attributes["seen"], "yes")']},
            {
                "statements": [
                    'set(spanevent.attributes["span"], span.name)',
                    'set(spanevent.attributes["env"], resource.attributes["seen"])',
                ]
            },
        ],
        "metric_statements": [
            'set(datapoint.attributes["metric"], metric.name)',
            'set(metric.description, "described")',
        ],
    }
    traces = make_traces(1)
    spans(traces)[0].events.add().name = "e1"
    (span,) = spans(await transform(config, traces))
    assert get_attr(span.events[0].attributes, "span") == "GET /items/{id}"
    assert get_attr(span.events[0].attributes, "env") == "yes"

    out = await transform(config, make_metrics(2, name="m"), Signal.METRICS)
    (metric,) = [m for _, _, m in iter_items(out)]
    assert metric.description == "described"
    assert [get_attr(p.attributes, "metric") for p in metric.sum.data_points] == ["m", "m"]


async def test_statements_compile_once_not_per_batch(monkeypatch):
    processor, sink = make_processor(
        factory, {"trace_statements": ['set(span.attributes["x"], "y") where span.name != ""']}
    )

    def no_parsing(text):
        raise AssertionError("parsed while processing")

    monkeypatch.setattr(syntax, "parse_statement", no_parsing)
    monkeypatch.setattr(syntax, "parse_condition", no_parsing)
    for _ in range(3):
        await processor.consume(make_traces(5))
    assert all(get_attr(s.attributes, "x") == "y" for b in sink.batches for s in spans(b))


def failing_config(mode: str | None = None, group_mode: str | None = None) -> dict:
    group = {
        "context": "span",
        "statements": [
            'set(attributes["before"], true)',
            'set(attributes["x"], Substring(name, 0, 1000))',
            'set(attributes["after"], true)',
        ],
    }
    if group_mode:
        group["error_mode"] = group_mode
    config: dict = {"trace_statements": [group]}
    if mode:
        config["error_mode"] = mode
    return config


async def test_propagate_fails_the_batch():
    processor, sink = make_processor(factory, failing_config("propagate"))
    with pytest.raises(PermanentError, match=r"Substring.*out of range"):
        await processor.consume(make_traces(2))
    assert sink.batches == []
    assert processor_metric(processor, "outgoing") == 0


@pytest.mark.parametrize(
    ("mode", "group_mode"), [(None, None), ("ignore", None), ("propagate", "ignore")]
)
async def test_ignore_logs_once_per_batch_and_goes_on(caplog, mode, group_mode):
    processor, sink = make_processor(factory, failing_config(mode, group_mode))
    with caplog.at_level(logging.WARNING):
        await processor.consume(make_traces(3))
    for span in spans(sink.batches[0]):
        assert get_attr(span.attributes, "before") is True
        assert get_attr(span.attributes, "after") is True
    warnings = [r.getMessage() for r in caplog.records if "Substring" in r.getMessage()]
    assert len(warnings) == 1
    assert "failed on 3 item(s)" in warnings[0] and "out of range" in warnings[0]


async def test_silent_goes_on_without_a_word(caplog):
    processor, sink = make_processor(factory, failing_config("silent"))
    with caplog.at_level(logging.DEBUG):
        await processor.consume(make_traces(2))
    assert all(get_attr(s.attributes, "after") for s in spans(sink.batches[0]))
    assert "Substring" not in caplog.text


async def test_failing_group_condition_does_not_hold(caplog):
    config = {
        "error_mode": "ignore",
        "trace_statements": [
            {
                "context": "span",
                "conditions": ['Substring(name, 0, 1000) == ""', 'attributes["test.index"] == 1'],
                "statements": ['set(attributes["hit"], true)'],
            }
        ],
    }
    out = await transform(config, make_traces(2))
    assert [get_attr(s.attributes, "hit") for s in spans(out)] == [None, True]


async def test_other_signals_pass_unchanged():
    processor, sink = make_processor(
        factory, {"trace_statements": ['set(span.name, "x")']}, Signal.LOGS
    )
    logs = make_logs(2)
    await processor.consume(logs)
    assert sink.batches == [logs]


def service_config(transform: dict) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"transform": transform},
        "exporters": {"debug": {}},
        "service": {
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["transform"],
                    "exporters": ["debug"],
                }
            }
        },
    }


@pytest.mark.parametrize(
    ("transform_config", "errors"),
    [
        (
            {
                "trace_statements": [
                    {"context": "span", "statements": ['set(name, "a")', "set(name, Foo())"]}
                ]
            },
            [
                "processors::transform::trace_statements::0::statements::1: "
                "unknown function 'Foo' at column 11"
            ],
        ),
        (
            {
                "trace_statements": [
                    'set(span.name, "a")',
                    'set(span.nam, "b") where span.kind == 1',
                ]
            },
            [
                "processors::transform::trace_statements::1: "
                "unknown path 'span.nam' in the span context at column 5"
            ],
        ),
        (
            {"log_statements": [{"conditions": ["log.body =="], "statements": ["set(log.x, 1)"]}]},
            [
                "processors::transform::log_statements::0::conditions::0: unexpected end of text",
                "processors::transform::log_statements::0::statements::0: "
                "unknown path 'log.x' in the log context at column 5",
            ],
        ),
        (
            {"metric_statements": [{"context": "log", "statements": ["set(name, 1)"]}]},
            [
                "processors::transform::metric_statements::0::context: "
                "context 'log' is not one of resource, scope, metric, datapoint"
            ],
        ),
        (
            {"trace_statements": [{"statements": ["set(name, 1)"], "shared_cache": True}]},
            ["processors::transform::trace_statements::0::shared_cache: unknown key"],
        ),
    ],
)
def test_config_errors_name_the_key_path(transform_config, errors):
    with pytest.raises(ConfigError) as e:
        validate(service_config(transform_config), registry())
    messages = [str(issue) for issue in e.value.errors]
    for expected in errors:
        assert any(m.startswith(expected) for m in messages), messages
    assert len(messages) == len(errors)
