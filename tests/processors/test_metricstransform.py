"""metricstransform: renames, label operations, scaling, type toggles and aggregations, the
insert, combine and group actions; ADOT's ECS Container Insights pipeline on the
awsecscontainermetrics receiver's metrics from the ECS metadata emulator; and a real
`coldtail run` fed by the OpenTelemetry SDK's OTLP metric exporter."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource
from pydantic import ValidationError

from collector.core.component import Kind, Registry
from collector.core.config import ConfigError, validate
from collector.core.confmap import load
from collector.core.pdata import Metrics, any_value_to_python, copy_batch, metric_points, set_attr
from collector.core.signals import Signal
from collector.processors.filter import factory as filter_factory
from collector.processors.metricstransform import factory
from collector.processors.metricstransform.operations import collector_version
from collector.processors.metricstransform.selection import expand
from collector.receivers.awsecscontainermetrics import factory as ecs_factory
from collector.registry import registry
from emulator.ecs_metadata import EcsMetadataServer, EcsTask
from tests.processors import make_processor, processor_metric
from tests.support.components import StaticHost, make_settings
from tests.support.jsonl import read_requests
from tests.support.process import CollectorProcess, free_port
from tests.support.sinks import SinkConsumer

TESTDATA = Path(__file__).parent / "testdata" / "metricstransform_config.yaml"
ECS_CONFIG = (
    Path(__file__).parents[1]
    / "testdata"
    / "upstream_configs"
    / "aws-otel-collector-ecs-container-insights-task-metrics.yaml"
)
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
T0, T1 = 1_700_000_000_000_000_000, 1_700_000_060_000_000_000


# --- building and reading batches -------------------------------------------------------------


def number_metric(
    name: str,
    points: list[tuple[dict, float]],
    *,
    kind: str = "gauge",
    temporality: int = CUMULATIVE,
    unit: str = "1",
    monotonic: bool = False,
    start: int = T0,
    time: int = T1,
) -> Metric:
    """A gauge or sum whose points have `(labels, value)`: ints stay ints, floats doubles."""
    metric = Metric(name=name, unit=unit)
    if kind == "sum":
        metric.sum.aggregation_temporality = temporality
        metric.sum.is_monotonic = monotonic
    data = getattr(metric, kind)
    for labels, value in points:
        point = data.data_points.add(start_time_unix_nano=start, time_unix_nano=time)
        if isinstance(value, int):
            point.as_int = value
        else:
            point.as_double = value
        for key, label in labels.items():
            set_attr(point.attributes, key, label)
    return metric


def histogram_metric(name: str, points: list[tuple[dict, list[float], list[int], float]]) -> Metric:
    """A cumulative histogram whose points have `(labels, bounds, bucket counts, sum)`."""
    metric = Metric(name=name, unit="ms")
    metric.histogram.aggregation_temporality = CUMULATIVE
    for labels, bounds, counts, total in points:
        point = metric.histogram.data_points.add(
            start_time_unix_nano=T0,
            time_unix_nano=T1,
            explicit_bounds=bounds,
            bucket_counts=counts,
            count=sum(counts),
            sum=total,
            min=total / max(sum(counts), 1),
            max=total,
        )
        for key, label in labels.items():
            set_attr(point.attributes, key, label)
    return metric


def batch_of(*metrics: Metric, resource: dict | None = None) -> Metrics:
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for key, value in (resource or {"service.name": "checkout"}).items():
        set_attr(rm.resource.attributes, key, value)
    sm = rm.scope_metrics.add()
    sm.scope.name = "coldtail.testing"
    sm.metrics.extend(metrics)
    return batch


def labels_of(point) -> dict:
    return {kv.key: any_value_to_python(kv.value) for kv in point.attributes}


def values(metric: Metric) -> list[tuple[dict, float]]:
    """(labels, value) of every gauge or sum point, in order."""
    return [(labels_of(p), getattr(p, p.WhichOneof("value"))) for p in metric_points(metric)]


def metrics_of(batch: Metrics) -> list[Metric]:
    return [m for rm in batch.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def names(batch: Metrics) -> list[str]:
    return [m.name for m in metrics_of(batch)]


def by_name(batch: Metrics) -> dict[str, Metric]:
    return {m.name: m for m in metrics_of(batch)}


async def transformed(config: dict, batch: Metrics) -> Metrics | None:
    """The batch the processor passes on (None when it passes nothing)."""
    processor, sink = make_processor(factory, config, Signal.METRICS)
    await processor.consume(batch)
    assert len(sink.batches) <= 1
    return sink.batches[0] if sink.batches else None


def update(include: str, *operations: dict, **keys) -> dict:
    """A config of one update transform of `include`."""
    return {
        "transforms": [
            {"include": include, "action": "update", "operations": list(operations), **keys}
        ]
    }


CPU = [
    ({"cpu": "0", "state": "user"}, 10),
    ({"cpu": "1", "state": "user"}, 20),
    ({"cpu": "0", "state": "idle"}, 30),
    ({"cpu": "1", "state": "idle"}, 45),
]


# --- config -----------------------------------------------------------------------------------


def test_the_testdata_configs_validate_or_fail_with_their_error():
    data = yaml.safe_load(TESTDATA.read_text())
    for config in data["valid"].values():
        factory.config.model_validate(config or {})
    for case in data["invalid"]:
        with pytest.raises(ValidationError) as excinfo:
            factory.config.model_validate(case["config"])
        assert case["error"] in str(excinfo.value), case["name"]


def own_registry(tree: dict) -> Registry:
    """The built-in factories of the components `tree` declares, and this one."""
    reg = Registry()
    reg.register(factory)
    for kind in Kind:
        types = {cid.split("/")[0] for cid in tree.get(kind.section) or {}}
        for type_ in types - {"metricstransform"}:
            found = registry().get(kind, type_)
            if found is not None:
                reg.register(found)
    return reg


def test_a_bad_transform_is_reported_at_its_key_path(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        """
receivers: {otlp: {protocols: {grpc: {endpoint: "127.0.0.1:0"}}}}
processors:
  metricstransform:
    transforms:
      - {include: "(", match_type: regexp, action: update, new_name: x}
      - include: a
        action: update
        operations: [{action: aggregate_labels, label_set: [x]}]
exporters: {debug: {}}
service:
  pipelines:
    metrics: {receivers: [otlp], processors: [metricstransform], exporters: [debug]}
"""
    )
    tree = load([str(config)], env={})
    with pytest.raises(ConfigError) as excinfo:
        validate(tree, own_registry(tree))
    found = {e.path: e.message for e in excinfo.value.errors}
    assert set(found) == {
        "processors::metricstransform::transforms::0::include",
        "processors::metricstransform::transforms::1::operations::0",
    }
    assert found["processors::metricstransform::transforms::0::include"].startswith(
        "invalid regular expression '(': missing )"
    )
    assert (
        found["processors::metricstransform::transforms::1::operations::0"]
        == "aggregation_type is required when action is aggregate_labels"
    )


def test_the_ecs_container_insights_config_validates():
    tree = load([str(ECS_CONFIG)], env={})
    service = validate(tree, own_registry(tree))
    [performance] = [p for p in service.pipelines if str(p.id) == "metrics/performance"]
    assert [str(p) for p in performance.processors] == ["filter", "metricstransform", "resource"]


def test_dollar_dollar_in_a_config_file_is_a_group_reference(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "transforms:\n"
        "  - include: ^system\\.cpu\\.(.*)$$\n"
        "    match_type: regexp\n"
        "    action: update\n"
        "    new_name: system.processor.$${1}.stat\n"
    )
    [transform] = factory.config.model_validate(load([str(config)], env={})).transforms
    assert transform.include == r"^system\.cpu\.(.*)$"
    assert transform.new_name == "system.processor.${1}.stat"


# --- renaming ---------------------------------------------------------------------------------


async def test_update_renames_the_metric_and_later_transforms_see_the_new_name():
    config = {
        "transforms": [
            {"include": "system.cpu.usage", "action": "update", "new_name": "cpu.time"},
            {"include": "cpu.time", "action": "update", "new_name": "cpu.seconds"},
            {"include": "system.cpu", "action": "update", "new_name": "not.this"},
        ]
    }
    batch = batch_of(number_metric("system.cpu.usage", CPU), number_metric("system.memory", []))
    out = await transformed(config, batch)
    assert names(out) == ["cpu.seconds", "system.memory"]
    assert values(by_name(out)["cpu.seconds"]) == CPU


@pytest.mark.parametrize(
    ("include", "new_name", "renamed"),
    [
        (r"^system\.cpu\.(.*)$", "system.processor.$1.stat", "system.processor.usage.stat"),
        (r"^system\.cpu\.(.*)$", "system.processor.${1}.stat", "system.processor.usage.stat"),
        (r"^system\.(?P<part>cpu)\.", "$part/${part}", "cpu/cpu"),
        (r"^system\.(?<part>cpu)\.", "host.${part}", "host.cpu"),
        (r"^system\.cpu\.(.*)$", "cost: $$1", "cost: $1"),
        (r"^system\.cpu\.(.*)$", "$1x", "$1x"),  # names group "1x": empty, so literal
        (r"cpu", "processor", "processor"),  # found anywhere in the name
    ],
)
async def test_regexp_renames_expand_capture_groups(include, new_name, renamed):
    config = update(include, match_type="regexp", new_name=new_name)
    out = await transformed(config, batch_of(number_metric("system.cpu.usage", CPU)))
    assert names(out) == [renamed]


def test_expand_follows_go_templates():
    match = re.search(r"(?P<first>a+)(b+)?(c)", "aaxaacz")
    assert match is not None
    # Groups by number and name, unmatched and unknown groups empty, a lone `$` kept.
    template = "$1-$first-${first}-$3-$2-$9-$none-$-$$-${}"
    assert expand(template, match) == "aa-aa-aa-c----$-$-${}"


# --- insert and experimental_match_labels -----------------------------------------------------


async def test_insert_adds_a_transformed_copy_and_leaves_the_original():
    config = {
        "transforms": [
            {
                "include": "system.cpu.usage",
                "action": "insert",
                "new_name": "system.cpu.usage.by_state",
                "operations": [
                    {
                        "action": "aggregate_labels",
                        "label_set": ["state"],
                        "aggregation_type": "sum",
                    }
                ],
            }
        ]
    }
    out = await transformed(config, batch_of(number_metric("system.cpu.usage", CPU)))
    assert names(out) == ["system.cpu.usage", "system.cpu.usage.by_state"]
    found = by_name(out)
    assert values(found["system.cpu.usage"]) == CPU
    assert values(found["system.cpu.usage.by_state"]) == [
        ({"state": "user"}, 30),
        ({"state": "idle"}, 75),
    ]


async def test_insert_with_match_labels_copies_only_the_matching_points():
    config = {
        "transforms": [
            {
                "include": "system.cpu.usage",
                "action": "insert",
                "new_name": "system.cpu.idle",
                "experimental_match_labels": {"state": "idle"},
            },
            {
                "include": "system.cpu.usage",
                "match_type": "regexp",
                "action": "insert",
                "new_name": "system.cpu.one",
                "experimental_match_labels": {"cpu": "^1$", "absent": "^$"},
            },
            {
                "include": "system.cpu.usage",
                "action": "insert",
                "new_name": "never",
                "experimental_match_labels": {"state": "steal"},
            },
        ]
    }
    out = await transformed(config, batch_of(number_metric("system.cpu.usage", CPU)))
    found = by_name(out)
    assert list(found) == ["system.cpu.usage", "system.cpu.idle", "system.cpu.one"]
    assert values(found["system.cpu.usage"]) == CPU
    assert values(found["system.cpu.idle"]) == CPU[2:]
    assert values(found["system.cpu.one"]) == [CPU[1], CPU[3]]


async def test_update_with_partly_matching_labels_changes_only_the_matching_points():
    config = update(
        "system.cpu.usage",
        {"action": "update_label", "label": "cpu", "new_label": "core"},
        {"action": "experimental_scale_value", "experimental_scale": 10},
        {"action": "add_label", "new_label": "whole", "new_value": "yes"},
        new_name="renamed",
        experimental_match_labels={"state": "idle"},
    )
    out = await transformed(config, batch_of(number_metric("system.cpu.usage", CPU)))
    # Not every point matches: no rename, no label added; the idle points are changed.
    [metric] = metrics_of(out)
    assert metric.name == "system.cpu.usage"
    assert values(metric) == [
        CPU[0],
        CPU[1],
        ({"core": "0", "state": "idle"}, 300),
        ({"core": "1", "state": "idle"}, 450),
    ]

    # Every point matches: renamed.
    every_point = update(
        "system.cpu.usage",
        new_name="renamed",
        match_type="regexp",
        experimental_match_labels={"cpu": "0|1"},
    )
    out = await transformed(every_point, batch_of(number_metric("system.cpu.usage", CPU)))
    assert names(out) == ["renamed"]


# --- label operations -------------------------------------------------------------------------


async def test_add_label_keeps_a_label_a_point_already_has():
    config = update(
        "m",
        {"action": "add_label", "new_label": "state", "new_value": "unknown"},
        {"action": "add_label", "new_label": "collector", "new_value": "coldtail {{version}}"},
    )
    metric = number_metric("m", [({"state": "user"}, 1), ({}, 2)])
    [metric] = metrics_of(await transformed(config, batch_of(metric)))
    version = f"coldtail {collector_version()}"
    assert values(metric) == [
        ({"state": "user", "collector": version}, 1),
        ({"state": "unknown", "collector": version}, 2),
    ]


async def test_update_label_renames_the_label_and_its_values():
    config = update(
        "system.memory.usage",
        {
            "action": "update_label",
            "label": "state",
            "new_label": "memory.state",
            "value_actions": [
                {"value": "slab_reclaimable", "new_value": "sreclaimable"},
                {"value": 7, "new_value": "seven"},
            ],
        },
        {
            "action": "update_label",
            "label": "memory.state",
            "value_actions": [{"value": "used", "new_value": "in use"}],
        },
    )
    metric = number_metric(
        "system.memory.usage",
        [
            ({"state": "slab_reclaimable"}, 1),
            ({"state": "used", "memory.state": "stale"}, 2),
            ({"state": 7}, 3),
            ({"other": "x"}, 4),
        ],
    )
    [metric] = metrics_of(await transformed(config, batch_of(metric)))
    assert values(metric) == [
        ({"memory.state": "sreclaimable"}, 1),
        ({"memory.state": "in use"}, 2),
        ({"memory.state": "seven"}, 3),
        ({"other": "x"}, 4),
    ]


async def test_delete_label_value_deletes_points_and_emptied_metrics():
    config = update(
        "system.cpu.usage",
        {"action": "delete_label_value", "label": "state", "label_value": "idle"},
    )
    config["transforms"].append(
        {
            "include": "requests",
            "action": "update",
            "operations": [{"action": "delete_label_value", "label": "code", "label_value": 200}],
        }
    )
    batch = batch_of(
        number_metric("system.cpu.usage", CPU),
        number_metric("requests", [({"code": 200}, 5)]),
        number_metric("empty", []),
    )
    out = await transformed(config, batch)
    found = by_name(out)
    assert list(found) == ["system.cpu.usage", "empty"]
    assert values(found["system.cpu.usage"]) == CPU[:2]


async def test_a_batch_whose_points_are_all_deleted_is_not_passed_on():
    config = update(
        "requests", {"action": "delete_label_value", "label": "code", "label_value": "500"}
    )
    processor, sink = make_processor(factory, config, Signal.METRICS)
    await processor.consume(batch_of(number_metric("requests", [({"code": "500"}, 1)] * 3)))
    assert sink.batches == []
    assert processor_metric(processor, "incoming") == 3
    assert processor_metric(processor, "outgoing") == 0


# --- values -----------------------------------------------------------------------------------


async def test_toggle_scalar_data_type_swaps_ints_and_doubles():
    config = update("m", {"action": "toggle_scalar_data_type"})
    metric = number_metric(
        "m", [({"a": "1"}, 3), ({"a": "2"}, 2.75), ({"a": "3"}, -2.75), ({"a": "4"}, math.nan)]
    )
    histogram = histogram_metric("m", [({}, [1.0], [1, 1], 3.0)])
    out = await transformed(config, batch_of(metric))
    points = metric_points(metrics_of(out)[0])
    assert [(p.WhichOneof("value"), getattr(p, p.WhichOneof("value"))) for p in points] == [
        ("as_double", 3.0),
        ("as_int", 2),
        ("as_int", -2),
        ("as_int", 0),
    ]
    unchanged = await transformed(config, batch_of(histogram))
    assert metrics_of(unchanged)[0] == histogram


async def test_scale_value_multiplies_numbers_and_histograms():
    config = update("m", {"action": "experimental_scale_value", "experimental_scale": 1000})
    numbers = number_metric("m", [({"a": "int"}, 3), ({"a": "double"}, 0.25)])
    [scaled] = metrics_of(await transformed(config, batch_of(numbers)))
    assert values(scaled) == [({"a": "int"}, 3000), ({"a": "double"}, 250.0)]

    to_mib = update("m", {"action": "experimental_scale_value", "experimental_scale": 1 / 1048576})
    [scaled] = metrics_of(
        await transformed(to_mib, batch_of(number_metric("m", [({}, 5_000_000)])))
    )
    assert values(scaled) == [({}, 4)]  # 4.77 MiB, truncated as an int

    histogram = histogram_metric("m", [({}, [0.5, 1.0], [1, 2, 1], 2.5)])
    histogram.histogram.data_points[0].exemplars.add(as_double=0.75, time_unix_nano=T1)
    [scaled] = metrics_of(await transformed(config, batch_of(histogram)))
    [point] = scaled.histogram.data_points
    assert list(point.explicit_bounds) == [500.0, 1000.0]
    assert (point.sum, point.min, point.max) == (2500.0, 625.0, 2500.0)
    assert list(point.bucket_counts) == [1, 2, 1]
    assert point.exemplars[0].as_double == 750.0


# --- aggregation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregation", "ints", "doubles"),
    [
        ("sum", {"user": 30, "idle": 75}, {"user": 3.0, "idle": 7.5}),
        ("mean", {"user": 15, "idle": 37}, {"user": 1.5, "idle": 3.75}),
        ("min", {"user": 10, "idle": 30}, {"user": 1.0, "idle": 3.0}),
        ("max", {"user": 20, "idle": 45}, {"user": 2.0, "idle": 4.5}),
        ("count", {"user": 2, "idle": 2}, {"user": 2.0, "idle": 2.0}),
        ("median", {"user": 15, "idle": 37}, {"user": 1.5, "idle": 3.75}),
    ],
)
async def test_aggregate_labels_keeps_the_label_set_and_aggregates(aggregation, ints, doubles):
    config = update(
        "^cpu",
        {"action": "aggregate_labels", "label_set": ["state"], "aggregation_type": aggregation},
        match_type="regexp",
    )
    as_doubles = [(labels, value / 10) for labels, value in CPU]
    batch = batch_of(number_metric("cpu.int", CPU), number_metric("cpu.double", as_doubles))
    found = by_name(await transformed(config, batch))
    assert values(found["cpu.int"]) == [({"state": s}, v) for s, v in ints.items()]
    assert values(found["cpu.double"]) == [({"state": s}, v) for s, v in doubles.items()]
    assert all(p.WhichOneof("value") == "as_int" for p in metric_points(found["cpu.int"]))


async def test_median_of_an_odd_count_and_count_of_one_point():
    config = update(
        "m",
        {"action": "aggregate_labels", "label_set": [], "aggregation_type": "median"},
    )
    metric = number_metric("m", [({"i": str(i)}, v) for i, v in enumerate([9, 1, 5])])
    [out] = metrics_of(await transformed(config, batch_of(metric)))
    assert values(out) == [({}, 5)]
    count = update(
        "m", {"action": "aggregate_labels", "label_set": [], "aggregation_type": "count"}
    )
    [out] = metrics_of(await transformed(count, batch_of(number_metric("m", [({}, 42)]))))
    assert values(out) == [({}, 1)]


async def test_points_merge_only_with_the_same_timestamps_and_delta_start_times():
    sums = Metric(name="requests")
    sums.sum.aggregation_temporality = DELTA
    sums.sum.is_monotonic = True
    for start, time, route, value in [
        (T0, T1, "/a", 1),
        (T0, T1, "/b", 2),
        (T0 + 1, T1, "/c", 4),  # another delta window: not merged
        (T0, T1 + 1, "/d", 8),  # another timestamp: not merged
    ]:
        point = sums.sum.data_points.add(start_time_unix_nano=start, time_unix_nano=time)
        point.as_int = value
        set_attr(point.attributes, "route", route)
    cumulative = number_metric(
        "total", [({"route": "/a"}, 1), ({"route": "/b"}, 2)], kind="sum", monotonic=True
    )
    cumulative.sum.data_points[1].start_time_unix_nano = T0 - 5
    config = update(
        "requests|total",
        {"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"},
        match_type="regexp",
    )
    found = by_name(await transformed(config, batch_of(sums, cumulative)))
    assert [
        (p.start_time_unix_nano, p.time_unix_nano, p.as_int)
        for p in found["requests"].sum.data_points
    ] == [
        (T0, T1, 3),
        (T0 + 1, T1, 4),
        (T0, T1 + 1, 8),
    ]
    [point] = found["total"].sum.data_points
    assert (point.start_time_unix_nano, point.as_int) == (T0 - 5, 3)  # the earliest start
    assert (
        found["total"].sum.is_monotonic and found["total"].sum.aggregation_temporality == CUMULATIVE
    )


async def test_aggregate_label_values_merges_the_listed_values():
    config = update(
        "system.memory.usage",
        {
            "action": "aggregate_label_values",
            "label": "state",
            "aggregated_values": ["slab_reclaimable", "slab_unreclaimable"],
            "new_value": "slab",
            "aggregation_type": "sum",
        },
    )
    metric = number_metric(
        "system.memory.usage",
        [
            ({"state": "used"}, 100),
            ({"state": "slab_reclaimable"}, 10),
            ({"state": "slab_unreclaimable"}, 5),
            ({"state": "free"}, 50),
        ],
    )
    [out] = metrics_of(await transformed(config, batch_of(metric)))
    assert values(out) == [
        ({"state": "used"}, 100),
        ({"state": "slab"}, 15),
        ({"state": "free"}, 50),
    ]


async def test_histograms_with_the_same_bounds_are_summed():
    histogram = histogram_metric(
        "http.duration",
        [
            ({"route": "/a", "code": "200"}, [10.0, 100.0], [1, 2, 0], 80.0),
            ({"route": "/a", "code": "500"}, [10.0, 100.0], [0, 1, 1], 250.0),
            ({"route": "/a", "code": "404"}, [10.0, 100.0], [0, 0, 0], 0.0),
            ({"route": "/a", "code": "503"}, [5.0, 50.0], [1, 0, 0], 2.0),
        ],
    )
    histogram.histogram.data_points[1].exemplars.add(as_double=200.0, time_unix_nano=T1)
    config = update(
        "http.duration",
        {"action": "aggregate_labels", "label_set": ["route"], "aggregation_type": "max"},
    )
    [out] = metrics_of(await transformed(config, batch_of(histogram)))
    merged, other_bounds = out.histogram.data_points
    assert labels_of(merged) == {"route": "/a"}
    assert list(merged.explicit_bounds) == [10.0, 100.0]
    assert list(merged.bucket_counts) == [1, 3, 1]
    assert (merged.count, merged.sum) == (5, 330.0)
    assert (merged.min, merged.max) == (80.0 / 3, 250.0)
    assert [e.as_double for e in merged.exemplars] == [200.0]
    assert list(other_bounds.explicit_bounds) == [5.0, 50.0]
    assert other_bounds.count == 1


async def test_exponential_histograms_with_the_same_scale_and_offsets_are_summed():
    metric = Metric(name="latency", unit="ms")
    metric.exponential_histogram.aggregation_temporality = CUMULATIVE
    for host, positive, zero in [("a", [1, 2], 1), ("b", [3, 0, 4], 0)]:
        point = metric.exponential_histogram.data_points.add(
            time_unix_nano=T1, scale=2, count=sum(positive) + zero, zero_count=zero, sum=10.0
        )
        point.positive.offset = 3
        point.positive.bucket_counts.extend(positive)
        set_attr(point.attributes, "host", host)
    config = update(
        "latency", {"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"}
    )
    [out] = metrics_of(await transformed(config, batch_of(metric)))
    [point] = out.exponential_histogram.data_points
    assert list(point.positive.bucket_counts) == [4, 2, 4]
    assert (point.count, point.zero_count, point.sum, point.scale) == (11, 1, 20.0, 2)


async def test_summaries_are_left_as_they_are_by_aggregations():
    metric = Metric(name="rpc.duration")
    for method in ("get", "put"):
        point = metric.summary.data_points.add(time_unix_nano=T1, count=2, sum=3.0)
        set_attr(point.attributes, "method", method)
    config = update(
        "rpc.duration",
        {"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"},
        {"action": "add_label", "new_label": "kind", "new_value": "summary"},
    )
    [out] = metrics_of(await transformed(config, batch_of(metric)))
    assert [labels_of(p) for p in out.summary.data_points] == [
        {"method": "get", "kind": "summary"},
        {"method": "put", "kind": "summary"},
    ]


async def test_int_sums_wrap_around_as_int64():
    config = update("m", {"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"})
    metric = number_metric("m", [({"a": "1"}, 2**63 - 1), ({"a": "2"}, 1)])
    [out] = metrics_of(await transformed(config, batch_of(metric)))
    assert values(out) == [({}, -(2**63))]


# --- combine and group ------------------------------------------------------------------------


def iis_metrics() -> list[Metric]:
    return [
        number_metric(
            f"Web Service (*)/Total {method} Requests", [({"site": "web"}, n)], kind="sum"
        )
        for method, n in (("Delete", 1), ("Get", 20), ("Post", 5))
    ]


async def test_combine_merges_metrics_into_one_labelled_from_the_pattern():
    config = {
        "transforms": [
            {
                "include": r"^Web Service \(\*\)/Total (?P<http_method>.*) Requests$",
                "match_type": "regexp",
                "action": "combine",
                "new_name": "iis.requests",
                "submatch_case": "lower",
                "operations": [{"action": "add_label", "new_label": "source", "new_value": "iis"}],
            }
        ]
    }
    batch = batch_of(*iis_metrics(), number_metric("other", [({}, 1)]))
    out = await transformed(config, batch)
    assert names(out) == ["other", "iis.requests"]
    combined = by_name(out)["iis.requests"]
    assert combined.WhichOneof("data") == "sum"
    assert combined.sum.aggregation_temporality == CUMULATIVE
    assert values(combined) == [
        ({"site": "web", "http_method": "delete", "source": "iis"}, 1),
        ({"site": "web", "http_method": "get", "source": "iis"}, 20),
        ({"site": "web", "http_method": "post", "source": "iis"}, 5),
    ]


async def test_combine_with_unnamed_groups_and_an_aggregation():
    config = {
        "transforms": [
            {
                "include": r"^disk\.(read|write)\.(\w+)$",
                "match_type": "regexp",
                "action": "combine",
                "new_name": "disk.io",
                "submatch_case": "upper",
                "aggregation_type": "sum",
                "operations": [
                    {"action": "aggregate_labels", "label_set": ["$1"], "aggregation_type": "sum"}
                ],
            }
        ]
    }
    batch = batch_of(
        number_metric("disk.read.sda", [({}, 1.5)]),
        number_metric("disk.read.sdb", [({}, 2.0)]),
        number_metric("disk.write.sda", [({}, 4.0)]),
    )
    [combined] = metrics_of(await transformed(config, batch))
    assert combined.name == "disk.io"
    assert values(combined) == [({"$1": "READ"}, 3.5), ({"$1": "WRITE"}, 4.0)]


async def test_metrics_that_cannot_be_combined_stay_as_they_are(caplog):
    config = {
        "transforms": [
            {"include": "^a|^b", "match_type": "regexp", "action": "combine", "new_name": "ab"}
        ]
    }
    batch = batch_of(number_metric("a", [({}, 1)]), number_metric("b", [({}, 1)], kind="sum"))
    expected = copy_batch(batch)
    with caplog.at_level(logging.WARNING, logger="coldtail"):
        out = await transformed(config, batch)
    assert out == expected
    assert any(
        "metrics not combined into ab" in r.getMessage()
        and "a and b are of different types (gauge, sum)" in r.getMessage()
        for r in caplog.records
    )


async def test_combine_takes_only_the_matching_points():
    config = {
        "transforms": [
            {
                "include": "^cpu",
                "match_type": "regexp",
                "action": "combine",
                "new_name": "cpu.idle",
                "experimental_match_labels": {"state": "idle"},
            }
        ]
    }
    out = await transformed(config, batch_of(number_metric("cpu.usage", CPU)))
    found = by_name(out)
    assert values(found["cpu.usage"]) == CPU[:2]
    assert values(found["cpu.idle"]) == CPU[2:]


async def test_group_moves_metrics_to_a_new_resource():
    config = {
        "transforms": [
            {
                "include": r"^k8s\.pod\.",
                "match_type": "regexp",
                "action": "group",
                "group_resource_labels": {"resource.type": "k8s.pod", "source": "kubelet"},
            },
            {"include": "nothing", "action": "group", "group_resource_labels": {}},
        ]
    }
    batch = batch_of(
        number_metric("k8s.pod.cpu", [({}, 1)]),
        number_metric("container.cpu", [({}, 2)]),
        number_metric("k8s.pod.memory", [({}, 3)]),
        resource={"k8s.node.name": "node-1"},
    )
    out = await transformed(config, batch)
    assert len(out.resource_metrics) == 2
    original, grouped = out.resource_metrics
    assert [m.name for m in original.scope_metrics[0].metrics] == ["container.cpu"]
    assert labels_of(grouped.resource) == {
        "k8s.node.name": "node-1",
        "resource.type": "k8s.pod",
        "source": "kubelet",
    }
    assert grouped.scope_metrics[0].scope.name == "coldtail.testing"
    assert [m.name for m in grouped.scope_metrics[0].metrics] == ["k8s.pod.cpu", "k8s.pod.memory"]


async def test_a_scope_and_resource_left_empty_are_removed():
    config = {
        "transforms": [
            {"include": "k8s.pod.cpu", "action": "group", "group_resource_labels": {"g": "1"}}
        ]
    }
    out = await transformed(config, batch_of(number_metric("k8s.pod.cpu", [({}, 1)])))
    [resource] = out.resource_metrics
    assert labels_of(resource.resource) == {"service.name": "checkout", "g": "1"}


async def test_without_transforms_the_batch_passes_unchanged():
    batch = batch_of(number_metric("m", CPU), number_metric("n", []))
    expected = copy_batch(batch)
    processor, sink = make_processor(factory, {}, Signal.METRICS)
    await processor.consume(batch)
    assert sink.batches == [expected]
    assert processor_metric(processor, "incoming") == processor_metric(processor, "outgoing") == 4


# --- ADOT's ECS Container Insights pipeline ---------------------------------------------------


class Recorder:
    """Passes batches on, keeping a copy of each as it came."""

    mutates_data = False

    def __init__(self, next) -> None:
        self.next = next
        self.copies: list[Metrics] = []

    async def consume(self, batch) -> None:
        self.copies.append(copy_batch(batch))
        await self.next.consume(batch)


async def ecs_batches(monkeypatch, transform_config: dict, filter_config: dict | None = None):
    """(the awsecscontainermetrics receiver's first batch, what filter and metricstransform made
    of it), the receiver reading the ECS metadata emulator."""
    sink = SinkConsumer()
    transform = factory.create(
        make_settings(Kind.PROCESSOR, "metricstransform", "metrics"),
        factory.config.model_validate(transform_config),
        Signal.METRICS,
        sink,
    )
    first = transform
    if filter_config is not None:
        first = filter_factory.create(
            make_settings(Kind.PROCESSOR, "filter", "metrics"),
            filter_factory.config.model_validate(filter_config),
            Signal.METRICS,
            transform,
        )
    recorder = Recorder(first)
    task = EcsTask(family="checkout", service_name="checkout-api", stopped_name="migrate")
    async with EcsMetadataServer(task) as server:
        monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", server.uri)
        receiver = ecs_factory.create(
            make_settings(Kind.RECEIVER, "awsecscontainermetrics"),
            ecs_factory.config.model_validate({"collection_interval": "50ms"}),
            {Signal.METRICS: recorder},
        )
        await receiver.start(StaticHost())
        try:
            await sink.wait_for(1, timeout=5)
        finally:
            await receiver.shutdown()
    return recorder.copies[0], sink.batches[0]


def by_container(batch: Metrics) -> dict[str, dict[str, Metric]]:
    """container.name ("task" for the task) -> metric name -> metric."""
    out = {}
    for rm in batch.resource_metrics:
        resource = labels_of(rm.resource)
        out[resource.get("container.name", "task")] = {
            m.name: m for sm in rm.scope_metrics for m in sm.metrics
        }
    return out


def value(metric: Metric) -> float:
    [(_, found)] = values(metric)
    return found


ECS_RENAMES = {
    "ecs.task.memory.utilized": "MemoryUtilized",
    "ecs.task.memory.reserved": "MemoryReserved",
    "ecs.task.cpu.utilized": "CpuUtilized",
    "ecs.task.cpu.reserved": "CpuReserved",
    "ecs.task.network.rate.rx": "NetworkRxBytes",
    "ecs.task.network.rate.tx": "NetworkTxBytes",
    "ecs.task.storage.read_bytes": "StorageReadBytes",
    "ecs.task.storage.write_bytes": "StorageWriteBytes",
}


async def test_the_ecs_container_insights_pipeline_renames_the_task_metrics(monkeypatch):
    tree = load([str(ECS_CONFIG)], env={})
    raw, out = await ecs_batches(
        monkeypatch, tree["processors"]["metricstransform"], tree["processors"]["filter"]
    )
    before, after = by_container(raw), by_container(out)
    # The filter keeps the task's eight metrics and the stopped container's run time; the
    # running containers' resources are left without metrics and removed.
    assert set(after) == {"task", "migrate"}
    assert set(after["task"]) == set(ECS_RENAMES.values())
    assert after["migrate"] == before["migrate"]  # container.duration: not renamed
    for old, new in ECS_RENAMES.items():
        renamed, original = after["task"][new], before["task"][old]
        assert (renamed.unit, renamed.WhichOneof("data")) == (
            original.unit,
            original.WhichOneof("data"),
        )
        assert metric_points(renamed) == metric_points(original)
    # The renamed task metrics are the receiver's aggregates of its running containers.
    running = [before[name] for name in ("app", "coldtail")]
    task = {new: value(after["task"][new]) for new in ECS_RENAMES.values()}
    for summed in ("memory.utilized", "network.rate.rx", "network.rate.tx", "storage.read_bytes"):
        per_container = sum(value(c[f"container.{summed}"]) for c in running)
        assert task[ECS_RENAMES[f"ecs.task.{summed}"]] == pytest.approx(per_container)
    assert task["MemoryReserved"] == 1024  # the task's limits: 1024 MiB and 0.5 vCPU
    assert task["CpuReserved"] == 512.0
    assert task["StorageReadBytes"] > 0 and task["NetworkRxBytes"] > 0


async def test_ecs_task_metrics_combined_and_aggregated(monkeypatch):
    config = {
        "transforms": [
            {
                "include": r"^ecs\.task\.network\.rate\.(?P<direction>rx|tx)$",
                "match_type": "regexp",
                "action": "combine",
                "new_name": "NetworkRate",
                "submatch_case": "upper",
            },
            {
                "include": "NetworkRate",
                "action": "insert",
                "new_name": "NetworkRateTotal",
                "operations": [
                    {"action": "aggregate_labels", "label_set": [], "aggregation_type": "sum"}
                ],
            },
            {
                "include": r"^ecs\.task\.memory\.usage$",
                "match_type": "regexp",
                "action": "update",
                "new_name": "MemoryUsageMiB",
                "operations": [
                    {"action": "experimental_scale_value", "experimental_scale": 1 / 1048576},
                    {"action": "add_label", "new_label": "unit", "new_value": "MiB"},
                ],
            },
        ]
    }
    raw, out = await ecs_batches(monkeypatch, config)
    before, after = by_container(raw), by_container(out)
    task = after["task"]
    assert "ecs.task.network.rate.rx" not in task and "ecs.task.memory.usage" not in task
    rx = value(before["task"]["ecs.task.network.rate.rx"])
    tx = value(before["task"]["ecs.task.network.rate.tx"])
    assert values(task["NetworkRate"]) == [({"direction": "RX"}, rx), ({"direction": "TX"}, tx)]
    assert task["NetworkRate"].unit == "Bytes/Second"
    assert values(task["NetworkRateTotal"]) == [({}, pytest.approx(rx + tx))]
    memory = value(before["task"]["ecs.task.memory.usage"])
    assert values(task["MemoryUsageMiB"]) == [({"unit": "MiB"}, memory // 1048576)]
    # Container resources have no such names: their metrics pass unchanged.
    assert after["app"] == before["app"]


# --- a real collector fed by the OpenTelemetry SDK --------------------------------------------

PIPELINE = """
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: "127.0.0.1:{port}"}}}}}}
processors:
  metricstransform:
    transforms:
      - include: ^http\\.server\\.(.*)$$
        match_type: regexp
        action: update
        new_name: web.$${{1}}
        operations:
          - {{action: aggregate_labels, label_set: [route], aggregation_type: sum}}
          - {{action: add_label, new_label: tier, new_value: frontend}}
      - include: queue.depth
        action: update
        operations:
          - action: update_label
            label: queue
            value_actions: [{{value: q1, new_value: orders}}]
          - {{action: delete_label_value, label: queue, label_value: q2}}
          - {{action: toggle_scalar_data_type}}
exporters:
  file: {{path: "{out}"}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    metrics: {{receivers: [otlp], processors: [metricstransform], exporters: [file]}}
"""


def sdk_metrics():
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "shop"}), metric_readers=[reader]
    )
    meter = provider.get_meter("shop.web", "1.0")
    requests = meter.create_counter("http.server.requests", unit="1")
    duration = meter.create_histogram("http.server.duration", unit="ms")
    for route, code, n, ms in [
        ("/cart", "200", 5, 12.0),
        ("/cart", "500", 2, 80.0),
        ("/pay", "200", 3, 40.0),
    ]:
        requests.add(n, {"route": route, "code": code})
        for _ in range(n):
            duration.record(ms, {"route": route, "code": code})
    gauge = meter.create_gauge("queue.depth")
    gauge.set(7, {"queue": "q1"})
    gauge.set(9, {"queue": "q2"})
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


async def test_a_collector_process_transforms_what_the_sdk_exports(tmp_path):
    port, out = free_port(), tmp_path / "out.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(PIPELINE.format(port=port, out=out))
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    with CollectorProcess(config) as collector:
        assert exporter.export(sdk_metrics()) == MetricExportResult.SUCCESS
        exporter.shutdown()
        assert collector.stop() == 0, collector.log

    [request] = read_requests(out)[Signal.METRICS]
    found = by_name(request)
    assert set(found) == {"web.requests", "web.duration", "queue.depth"}
    assert sorted(values(found["web.requests"]), key=lambda p: p[0]["route"]) == [
        ({"route": "/cart", "tier": "frontend"}, 7),
        ({"route": "/pay", "tier": "frontend"}, 3),
    ]
    histograms = {labels_of(p)["route"]: p for p in found["web.duration"].histogram.data_points}
    assert set(histograms) == {"/cart"} | {"/pay"}
    cart = histograms["/cart"]
    assert (cart.count, cart.sum, cart.min, cart.max) == (7, 5 * 12.0 + 2 * 80.0, 12.0, 80.0)
    assert sum(cart.bucket_counts) == 7
    assert labels_of(cart) == {"route": "/cart", "tier": "frontend"}
    assert values(found["queue.depth"]) == [({"queue": "orders"}, 7.0)]
