"""awsemf: metrics as CloudWatch embedded metric format, written to moto's CloudWatch Logs and
read back with GetLogEvents, or printed to stdout as in Lambda."""

import json
import time

from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from collector.core.component import Kind
from collector.core.pdata import Metrics, set_attr
from collector.core.signals import Signal
from collector.exporters.awsemf import exporter as awsemf
from collector.exporters.awsemf.exporter import MAX_BYTES, MAX_EVENTS, _chunks
from tests.support.aws import aws_client
from tests.support.components import make_settings

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
ECS_RESOURCE = {
    "service.name": "checkout",
    "aws.ecs.cluster.arn": "arn:aws:ecs:us-east-1:111122223333:cluster/prod",
    "aws.ecs.task.arn": "arn:aws:ecs:us-east-1:111122223333:task/prod/0123abcd",
}


def metrics(requests: int, latency_count: int, latency_sum: float, at_s: int) -> Metrics:
    """A cumulative request counter, a memory gauge and a cumulative latency histogram of one
    route, at `at_s` seconds since the epoch."""
    batch = Metrics()
    rm = batch.resource_metrics.add()
    for key, value in ECS_RESOURCE.items():
        set_attr(rm.resource.attributes, key, value)
    sm = rm.scope_metrics.add()
    sm.scope.name = "checkout.http"
    now = at_s * 1_000_000_000
    counter = sm.metrics.add(name="http.requests", unit="1")
    counter.sum.is_monotonic, counter.sum.aggregation_temporality = True, CUMULATIVE
    point = counter.sum.data_points.add(time_unix_nano=now, as_int=requests)
    set_attr(point.attributes, "route", "/orders")
    gauge = sm.metrics.add(name="memory.used", unit="By")
    gauge.gauge.data_points.add(time_unix_nano=now, as_double=512.0)
    histogram = sm.metrics.add(name="http.duration", unit="ms")
    histogram.histogram.aggregation_temporality = CUMULATIVE
    bucketed = histogram.histogram.data_points.add(
        time_unix_nano=now, count=latency_count, sum=latency_sum, min=5.0, max=90.0
    )
    set_attr(bucketed.attributes, "route", "/orders")
    return batch


async def export(config: dict, *batches) -> None:
    settings = make_settings(Kind.EXPORTER, "awsemf")
    exporter = awsemf.factory.create(settings, awsemf.Config.model_validate(config), Signal.METRICS)
    await exporter.start(None)
    try:
        for batch in batches:
            await exporter.consume(batch)
    finally:
        await exporter.shutdown()


def by_metric(events: list[dict]) -> dict[str, dict]:
    out = {}
    for event in events:
        for directive in event["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                out[metric["Name"]] = {"event": event, "directive": directive, "metric": metric}
    return out


async def test_cloudwatch_logs_get_deltas_of_cumulative_metrics(moto_server, aws_credentials):
    group = "/aws/ecs/containerinsights/{ClusterName}/application/metrics"
    config = {
        "endpoint": moto_server,
        "namespace": "Checkout/{ClusterName}",
        "log_group_name": group,
        "log_stream_name": "{TaskId}",
        "sending_queue": {"enabled": False},
    }
    start = int(time.time())
    await export(config, metrics(10, 4, 100.0, start), metrics(15, 6, 160.0, start + 60))

    logs = aws_client("logs", moto_server)
    stored = logs.get_log_events(
        logGroupName="/aws/ecs/containerinsights/prod/application/metrics",
        logStreamName="0123abcd",
    )["events"]
    events = [json.loads(e["message"]) for e in stored]
    found = by_metric(events)
    # The first cumulative points only set the base: the counter and histogram appear once.
    assert sum("http.requests" in e for e in events) == 1
    requests = found["http.requests"]
    assert requests["event"]["http.requests"] == 5
    assert requests["event"]["route"] == "/orders"
    assert requests["event"]["OTelLib"] == "checkout.http"
    assert requests["event"]["_aws"]["Timestamp"] == (start + 60) * 1000
    assert requests["directive"]["Namespace"] == "Checkout/prod"
    assert requests["directive"]["Dimensions"] == [["OTelLib", "route"], ["OTelLib"]]
    assert requests["metric"] == {"Name": "http.requests", "Unit": "Count"}
    duration = found["http.duration"]
    assert duration["event"]["http.duration"] == {"Count": 2, "Sum": 60.0, "Min": 5.0, "Max": 90.0}
    assert duration["metric"]["Unit"] == "Milliseconds"
    assert sum("memory.used" in e for e in events) == 2  # a gauge at both times
    assert found["memory.used"]["metric"]["Unit"] == "Bytes"
    assert [e["timestamp"] for e in stored] == sorted(e["timestamp"] for e in stored)


async def test_stdout_prints_one_json_line_per_event_without_an_api_call(capsys):
    start = int(time.time())
    await export(
        {
            "output_destination": "stdout",
            "namespace": "Lambda",
            "sending_queue": {"enabled": False},
        },
        metrics(1, 1, 10.0, start),
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [list(by_metric([line])) for line in lines] == [["memory.used"]]
    assert lines[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Lambda"


DECLARED = {
    "output_destination": "stdout",
    "sending_queue": {"enabled": False},
    "retain_initial_value_of_delta_metric": True,
    "resource_to_telemetry_conversion": {"enabled": True},
    "dimension_rollup_option": "NoDimensionRollup",
    "metric_declarations": [
        {
            "dimensions": [["service.name", "route"], ["container.name"]],
            "metric_name_selectors": ["^http\\.requests$"],
        },
        {"metric_name_selectors": ["^http\\.duration$"]},  # no dimension set: logs only
    ],
}


async def test_declarations_select_metrics_and_their_dimension_sets(capsys):
    await export(DECLARED, metrics(7, 1, 10.0, int(time.time())))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    metric_events = [line for line in lines if "_aws" in line]
    [line] = [line for line in metric_events if "http.requests" in line]
    [directive] = line["_aws"]["CloudWatchMetrics"]
    # container.name is not a label of the point: that set is left out.
    assert directive["Dimensions"] == [["service.name", "route"]]
    assert directive["Metrics"] == [{"Name": "http.requests", "Unit": "Count"}]
    assert (line["http.requests"], line["service.name"]) == (7, "checkout")
    # Metrics no declaration gives a dimension set stay in the log events, as values only.
    assert set(by_metric(metric_events)) == {"http.requests"}
    values = {key for line in lines for key in line}
    assert {"memory.used", "http.duration"} <= values


async def test_declarations_add_the_rollup_sets_of_the_metrics_they_select(capsys):
    config = {**DECLARED, "dimension_rollup_option": "ZeroAndSingleDimensionRollup"}
    await export(config, metrics(7, 1, 10.0, int(time.time())))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    selected = by_metric([line for line in lines if "_aws" in line])
    assert set(selected) == {"http.requests", "http.duration"}
    dimensions = selected["http.requests"]["directive"]["Dimensions"]
    assert dimensions[0] == ["service.name", "route"]
    assert ["OTelLib"] in dimensions and ["OTelLib", "route"] in dimensions


async def test_without_rollup_only_all_labels_form_a_dimension_set(capsys):
    config = {
        "output_destination": "stdout",
        "dimension_rollup_option": "NoDimensionRollup",
        "retain_initial_value_of_delta_metric": True,
        "sending_queue": {"enabled": False},
    }
    await export(config, metrics(3, 1, 10.0, int(time.time())))
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert by_metric(lines)["http.requests"]["directive"]["Dimensions"] == [["OTelLib", "route"]]


def test_put_log_events_limits_split_the_events():
    small = [{"timestamp": 1, "message": "x"} for _ in range(MAX_EVENTS + 5)]
    assert [len(c) for c in _chunks(small)] == [MAX_EVENTS, 5]
    big = [{"timestamp": 1, "message": "y" * 400_000} for _ in range(5)]
    chunks = _chunks(big)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert all(sum(len(e["message"]) + 26 for e in c) <= MAX_BYTES for c in chunks)
