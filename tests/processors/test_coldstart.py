import random
import threading
import time
from datetime import UTC, datetime

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.awslambda.init_reports import InitReports
from collector.core.component import Kind, Shared
from collector.core.pdata import Traces, any_value_to_python, set_attr
from collector.core.signals import Signal
from collector.core.telemetry import Telemetry
from collector.processors.coldstart import (
    ColdStartProcessor,
    Config,
    factory,
)
from tests.processors import make_processor
from tests.support.builders import make_traces
from tests.support.components import make_settings
from tests.support.sinks import SinkConsumer

TAGS = (
    "coldtail.cold_start",
    "coldtail.cold_start.source",
    "faas.coldstart",
    "coldtail.init_type",
    "coldtail.init_duration_ms",
)


def test_config_defaults():
    config = Config()
    assert config.container.first_requests == 1
    assert config.max_environments == 100_000
    assert config.environment_ttl == 7200
    assert config.startup_grace == 10


# --- helpers ----------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


def lambda_resource(env: str = "2024/05/01/[$LATEST]0a1b", **extra) -> dict:
    return {
        "service.name": "orders",
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "faas.name": "orders",
        "faas.instance": env,
        **extra,
    }


def ecs_resource(task: str = "arn:aws:ecs:eu-west-1:1:task/c/1", **extra) -> dict:
    return {
        "service.name": "api",
        "cloud.provider": "aws",
        "cloud.platform": "aws_ecs",
        "aws.ecs.task.arn": task,
        **extra,
    }


def tags(span: Span) -> dict:
    """The attributes this processor owns, as Python values."""
    return {kv.key: any_value_to_python(kv.value) for kv in span.attributes if kv.key in TAGS}


def judge(processor, resource: dict, spans: int = 1, **kwargs) -> list[dict]:
    """Tags of `spans` entry spans sent in one batch from `resource`."""
    batch = processor.process(make_traces(spans, resource=resource, **kwargs))
    return [tags(s) for s in batch.resource_spans[0].scope_spans[0].spans]


def cold(source: str, lambda_: bool = True, **extra) -> dict:
    expected = {"coldtail.cold_start": True, "coldtail.cold_start.source": source, **extra}
    if lambda_:
        expected["faas.coldstart"] = True
    return expected


def warm(source: str = "inferred", lambda_: bool = True, **extra) -> dict:
    expected = {"coldtail.cold_start": False, "coldtail.cold_start.source": source, **extra}
    if lambda_:
        expected["faas.coldstart"] = False
    return expected


def cold_starts(processor, source: str) -> float:
    return processor.settings.telemetry.registry.get_sample_value(
        "otelcol_processor_coldstart_cold_starts_total",
        {"processor": "coldstart", "pipeline": "traces", "source": source},
    )


def evictions(processor, reason: str) -> float:
    return processor.settings.telemetry.registry.get_sample_value(
        "otelcol_processor_coldstart_evictions_total",
        {"processor": "coldstart", "pipeline": "traces", "reason": reason},
    )


def tracked(processor) -> float:
    return processor.settings.telemetry.registry.get_sample_value(
        "otelcol_processor_coldstart_environments",
        {"processor": "coldstart", "pipeline": "traces"},
    )


def new(config: dict | None = None, **kwargs) -> ColdStartProcessor:
    return make_processor(factory, config or {}, **kwargs)[0]


# --- inferred ---------------------------------------------------------------------------------


def test_first_entry_span_of_each_lambda_environment_is_cold():
    processor = new()
    assert judge(processor, lambda_resource("env-a")) == [cold("inferred")]
    assert judge(processor, lambda_resource("env-a"), 2) == [warm(), warm()]
    assert judge(processor, lambda_resource("env-b"), 2) == [cold("inferred"), warm()]
    assert judge(processor, lambda_resource("env-a")) == [warm()]
    assert cold_starts(processor, "inferred") == 2
    assert tracked(processor) == 2


@pytest.mark.parametrize(
    "resource",
    [
        {"service.name": "orders", "faas.instance": "env-1"},  # any faas.* attribute
        {"service.name": "orders", "cloud.platform": "aws_lambda", "service.instance.id": "i-1"},
        {"service.name": "orders", "cloud.platform": "aws_lambda", "host.id": "h-1"},
    ],
    ids=["faas_attribute", "service_instance_id", "host_id"],
)
def test_lambda_recognition_and_environment_keys(resource):
    processor = new()
    assert judge(processor, resource, 2) == [cold("inferred"), warm()]


def test_same_environment_id_in_two_services_is_two_environments():
    processor = new()
    assert judge(processor, lambda_resource("env-1")) == [cold("inferred")]
    other = lambda_resource("env-1", **{"service.name": "billing"})
    assert judge(processor, other) == [cold("inferred")]


def test_lambda_without_environment_id_is_judged_by_instrumentation_only():
    processor = new()
    resource = {"service.name": "orders", "cloud.platform": "aws_lambda"}
    assert judge(processor, resource, 2) == [{}, {}]
    flagged = judge(processor, resource, attributes={"faas.coldstart": True})
    assert flagged == [{"faas.coldstart": True, **cold("instrumentation", lambda_=False)}]


# --- instrumentation --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["faas.coldstart", "coldtail.cold_start"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), ("true", True), ("False", False), (" TRUE ", True)],
)
def test_instrumentation_flag_wins(key, value, expected):
    processor = new()
    # A first span said warm by instrumentation is warm; a later one said cold is cold.
    for _ in range(2):
        (got,) = judge(processor, lambda_resource(), attributes={key: value})
        assert got["coldtail.cold_start"] is expected
        assert got["coldtail.cold_start.source"] == "instrumentation"
        # An existing faas.coldstart is the instrumentation's and stays as sent.
        assert got["faas.coldstart"] == (value if key == "faas.coldstart" else expected)
    assert cold_starts(processor, "instrumentation") == (2 if expected else 0)
    assert judge(processor, lambda_resource()) == [warm()]


def test_unreadable_instrumentation_flag_is_ignored():
    processor = new()
    (got,) = judge(processor, lambda_resource(), attributes={"faas.coldstart": "maybe"})
    assert got == {
        "faas.coldstart": "maybe",
        "coldtail.cold_start": True,
        "coldtail.cold_start.source": "inferred",
    }


def test_instrumentation_on_ecs_span():
    processor = new({"container": {"first_requests": 2}})
    (got,) = judge(processor, ecs_resource(), attributes={"coldtail.cold_start": "false"})
    assert got == warm("instrumentation", lambda_=False)
    assert judge(processor, ecs_resource()) == [cold("inferred", lambda_=False)]


def test_span_judged_upstream_is_left_as_is():
    processor = new()
    upstream = {"coldtail.cold_start": True, "coldtail.cold_start.source": "telemetry_api"}
    batch = make_traces(resource=lambda_resource(), attributes=upstream)
    before = batch.SerializeToString()
    assert processor.process(batch).SerializeToString() == before
    # It still counts as the environment's first request.
    assert judge(processor, lambda_resource()) == [warm()]


# --- telemetry API ----------------------------------------------------------------------------


def test_init_report_tags_the_first_entry_span_of_its_environment():
    processor = new()
    reports = processor.settings.shared.get(InitReports)
    reports.record("env-a", 412.5, "on-demand")
    reports.record("env-b", 377.0)
    expected = cold(
        "telemetry_api", **{"coldtail.init_type": "on-demand", "coldtail.init_duration_ms": 412.5}
    )
    assert judge(processor, lambda_resource("env-a"), 2) == [expected, warm()]
    (got,) = judge(processor, lambda_resource("env-b"))
    assert got["coldtail.cold_start.source"] == "telemetry_api"
    assert got["coldtail.init_duration_ms"] == 377.0
    assert len(reports) == 0
    assert cold_starts(processor, "telemetry_api") == 2


def test_report_trusted_over_late_start_rule_and_below_instrumentation():
    processor = new()
    reports = processor.settings.shared.get(InitReports)
    reports.record("env-a", 100.0)
    # Created long before the collector started, yet the report says this init just happened.
    old = lambda_resource("env-a", **{"process.creation.time": "2001-01-01T00:00:00Z"})
    (got,) = judge(processor, old)
    assert got["coldtail.cold_start.source"] == "telemetry_api"

    reports.record("env-b", 250.0)
    flagged = {"faas.coldstart": False}
    (got,) = judge(processor, lambda_resource("env-b"), attributes=flagged)
    assert got == warm(
        "instrumentation",
        **{"coldtail.init_type": "on-demand", "coldtail.init_duration_ms": 250.0},
    )


def test_report_init_values_replace_those_of_a_span_judged_by_instrumentation():
    processor = new()
    processor.settings.shared.get(InitReports).record("env-a", 812.5, "on-demand")
    # What the function's instrumentation sends: its own judgement and its view of init.
    instrumented = {
        "faas.coldstart": True,
        "coldtail.cold_start": True,
        "coldtail.cold_start.source": "instrumentation",
        "coldtail.init_duration_ms": 95.0,
    }
    (got,) = judge(processor, lambda_resource("env-a"), attributes=instrumented)
    assert got["coldtail.cold_start.source"] == "instrumentation"
    assert got["coldtail.cold_start"] is True
    assert got["coldtail.init_duration_ms"] == 812.5
    assert got["coldtail.init_type"] == "on-demand"


def test_report_after_the_first_span_is_discarded():
    processor = new()
    reports = processor.settings.shared.get(InitReports)
    assert judge(processor, lambda_resource("env-a")) == [cold("inferred")]
    reports.record("env-a", 300.0)
    assert judge(processor, lambda_resource("env-a")) == [warm()]
    assert len(reports) == 0
    assert judge(processor, lambda_resource("env-a")) == [warm()]


def test_a_report_joins_the_first_invocation_after_it_when_the_span_names_no_environment():
    """A SnapStart runtime is not told its log stream, so its spans carry no faas.instance: the
    report goes to the invocation the Telemetry API started next."""
    processor = new()
    reports = processor.settings.shared.get(InitReports)
    reports.record("", 31.5, "snap-start")
    reports.first_invocation("req-1")
    reports.first_invocation("req-2")  # only the first after a report takes it
    anonymous = lambda_resource(None)
    instrumented = {
        "faas.invocation_id": "req-1",
        "coldtail.cold_start": False,
        "coldtail.cold_start.source": "instrumentation",
        "coldtail.init_duration_ms": 4000.0,  # the snapshot's init, long before
    }
    (got,) = judge(processor, anonymous, attributes=instrumented)
    assert got["coldtail.init_duration_ms"] == 31.5
    assert got["coldtail.init_type"] == "snap-start"
    assert got["coldtail.cold_start"] is False
    assert len(reports) == 0
    (later,) = judge(
        processor, anonymous, attributes={**instrumented, "faas.invocation_id": "req-2"}
    )
    assert later["coldtail.init_duration_ms"] == 4000.0


def test_init_reports_are_per_service_bounded_and_thread_safe():
    shared = Shared()
    assert shared.get(InitReports) is shared.get(InitReports)
    assert shared.get(InitReports) is not Shared().get(InitReports)

    reports = InitReports(max_pending=100)
    threads = [
        threading.Thread(target=lambda n=n: [reports.record(f"env-{n}-{i}", i) for i in range(500)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 100
    assert reports.take("env-0-0") is None  # oldest ones were dropped
    reports.record("env-x", 12, "SNAP_START")
    report = reports.take("env-x")
    assert (report.init_duration_ms, report.init_type) == (12.0, "snap-start")
    assert reports.take("env-x") is None


# --- provisioned concurrency and SnapStart ----------------------------------------------------


@pytest.mark.parametrize(
    "init_type",
    [
        "provisioned-concurrency",
        "PROVISIONED_CONCURRENCY",
        "snap-start",
        "SnapStart",
        "lambda-managed-instances",
    ],
)
def test_init_ahead_of_requests_from_resource_is_not_cold(init_type):
    processor = new()
    resource = lambda_resource(**{"coldtail.init_type": init_type})
    assert judge(processor, resource, 2) == [warm(), warm()]
    assert cold_starts(processor, "inferred") == 0


@pytest.mark.parametrize(
    "init_type", ["provisioned-concurrency", "snap-start", "lambda-managed-instances"]
)
def test_init_ahead_of_requests_from_span_is_not_cold(init_type):
    processor = new()
    attributes = {"coldtail.init_type": init_type}
    expected = warm(**attributes)
    assert judge(processor, lambda_resource(), attributes=attributes) == [expected]
    # Even instrumentation's cold flag is not a user-facing cold start here.
    attributes["faas.coldstart"] = True
    (got,) = judge(processor, lambda_resource("env-2"), attributes=attributes)
    assert got["coldtail.cold_start"] is False
    assert got["faas.coldstart"] is True


def test_provisioned_concurrency_from_report_is_not_cold():
    processor = new()
    processor.settings.shared.get(InitReports).record("env-a", 900.0, "provisioned-concurrency")
    extra = {"coldtail.init_type": "provisioned-concurrency", "coldtail.init_duration_ms": 900.0}
    assert judge(processor, lambda_resource("env-a")) == [warm("telemetry_api", **extra)]
    assert cold_starts(processor, "telemetry_api") == 0


# --- init spans -------------------------------------------------------------------------------


def _with_init_span(
    entry_first: bool,
    init_attributes: dict,
    name: str = "init",
    resource: dict | None = None,
    entry_attributes: dict | None = None,
) -> Traces:
    """An entry span and an 812 ms init span of the same trace, entry first or last."""
    batch = make_traces(
        resource=resource or lambda_resource(), attributes=entry_attributes, duration_ms=50
    )
    ss = batch.resource_spans[0].scope_spans[0]
    init = Span(
        trace_id=ss.spans[0].trace_id,
        span_id=b"\x01" * 8,
        name=name,
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=ss.spans[0].start_time_unix_nano - 812_000_000,
        end_time_unix_nano=ss.spans[0].start_time_unix_nano,
    )
    for key, value in init_attributes.items():
        set_attr(init.attributes, key, value)
    if entry_first:
        ss.spans.append(init)
    else:
        ss.spans.insert(0, init)
    return batch


@pytest.mark.parametrize("entry_first", [True, False])
def test_init_duration_from_init_span_of_the_same_trace(entry_first):
    processor = new()
    batch = processor.process(_with_init_span(entry_first, {}))
    spans = {s.name: s for s in batch.resource_spans[0].scope_spans[0].spans}
    assert tags(spans["init"]) == {}
    entry = tags(spans["GET /items/{id}"])
    assert entry == cold("inferred", **{"coldtail.init_duration_ms": 812.0})


@pytest.mark.parametrize(
    ("resource_type", "init_span_type", "span_type", "is_cold"),
    [
        ("provisioned-concurrency", "on-demand", None, True),
        ("provisioned-concurrency", None, None, False),
        (None, "snap-start", "on-demand", True),
        ("snap-start", "on-demand", "provisioned-concurrency", False),
    ],
)
def test_span_init_type_wins_over_init_span_which_wins_over_resource(
    resource_type, init_span_type, span_type, is_cold
):
    processor = new()
    resource = lambda_resource()
    if resource_type:
        resource["coldtail.init_type"] = resource_type
    batch = _with_init_span(
        True,
        {"coldtail.init_type": init_span_type} if init_span_type else {},
        resource=resource,
        entry_attributes={"coldtail.init_type": span_type} if span_type else {},
    )
    processor.process(batch)
    got = tags(batch.resource_spans[0].scope_spans[0].spans[0])
    assert got["coldtail.cold_start"] is is_cold
    assert got.get("coldtail.init_type") == (span_type or init_span_type)
    assert got["coldtail.init_duration_ms"] == 812.0


def test_root_span_with_init_type_is_an_init_span():
    processor = new()
    batch = processor.process(
        _with_init_span(False, {"coldtail.init_type": "snap-start"}, name="restore")
    )
    restore, entry = batch.resource_spans[0].scope_spans[0].spans
    assert tags(restore) == {"coldtail.init_type": "snap-start"}
    assert tags(entry) == warm(
        **{"coldtail.init_type": "snap-start", "coldtail.init_duration_ms": 812.0}
    )


def test_init_span_of_another_trace_gives_nothing():
    processor = new()
    batch = _with_init_span(True, {})
    batch.resource_spans[0].scope_spans[0].spans[1].trace_id = b"\x02" * 16
    processor.process(batch)
    entry = batch.resource_spans[0].scope_spans[0].spans[0]
    assert tags(entry) == cold("inferred")


# --- ECS / Fargate ----------------------------------------------------------------------------


@pytest.mark.parametrize("first_requests", [1, 3])
def test_first_requests_of_each_ecs_task_are_cold(first_requests):
    processor = new({"container": {"first_requests": first_requests}})
    expected = [cold("inferred", lambda_=False)] * first_requests + [warm(lambda_=False)] * 2
    # Spans of one batch count in batch order, across batches too.
    got = judge(processor, ecs_resource(), 2) + judge(processor, ecs_resource(), first_requests)
    assert got == expected
    assert judge(processor, ecs_resource("arn:task/2"))[0] == cold("inferred", lambda_=False)
    assert cold_starts(processor, "inferred") == first_requests + 1


@pytest.mark.parametrize(
    "resource",
    [
        {"service.name": "api", "aws.ecs.task.arn": "arn:task/9"},
        {"service.name": "api", "cloud.platform": "aws_ecs", "service.instance.id": "i-9"},
        {"service.name": "api", "cloud.platform": "aws_ecs", "container.id": "c-9"},
    ],
    ids=["ecs_attribute", "service_instance_id", "container_id"],
)
def test_ecs_recognition_and_environment_keys(resource):
    processor = new()
    assert judge(processor, resource, 2) == [cold("inferred", lambda_=False), warm(lambda_=False)]


def test_ecs_on_ec2_host_id_alone_is_no_environment():
    processor = new()
    resource = {"service.name": "api", "cloud.platform": "aws_ecs", "host.id": "i-0abc"}
    assert judge(processor, resource) == [{}]


def test_mixed_fleet_stream_matches_known_truth():
    rng = random.Random(7)
    processor = new({"container": {"first_requests": 3}})
    reports = processor.settings.shared.get(InitReports)
    lambdas = [f"lambda-{i}" for i in range(40)]
    provisioned = set(lambdas[:8])
    reported = set(lambdas[8:16])
    tasks = [f"arn:aws:ecs:eu-west-1:1:task/c/{i}" for i in range(10)]
    for env in reported:
        reports.record(env, 300.0)
    requests = [("lambda", env) for env in lambdas for _ in range(5)]
    requests += [("ecs", task) for task in tasks for _ in range(6)]
    rng.shuffle(requests)

    seen: dict[str, int] = {}
    for start in range(0, len(requests), 7):
        batch = Traces()
        expected = []
        for platform, env in requests[start : start + 7]:
            if platform == "lambda":
                extra = (
                    {"coldtail.init_type": "provisioned-concurrency"} if env in provisioned else {}
                )
                resource = lambda_resource(env, **extra)
            else:
                resource = ecs_resource(env)
            batch.resource_spans.extend(make_traces(resource=resource).resource_spans)
            position = seen.get(env, 0)
            seen[env] = position + 1
            first_requests = 1 if platform == "lambda" else 3
            is_cold = position < first_requests and env not in provisioned
            source = "telemetry_api" if env in reported and position == 0 else "inferred"
            expected.append((is_cold, source))
        processor.process(batch)
        got = [
            (t["coldtail.cold_start"], t["coldtail.cold_start.source"])
            for t in (tags(rs.scope_spans[0].spans[0]) for rs in batch.resource_spans)
        ]
        assert got == expected
    assert cold_starts(processor, "inferred") == 40 - 16 + 10 * 3
    assert cold_starts(processor, "telemetry_api") == 8


# --- untouched --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "parent"),
    [
        (Span.SPAN_KIND_INTERNAL, b"\x09" * 8),
        (Span.SPAN_KIND_CLIENT, b"\x09" * 8),
        (Span.SPAN_KIND_PRODUCER, b"\x09" * 8),
    ],
)
def test_non_entry_spans_are_untouched(kind, parent):
    processor = new()
    batch = make_traces(3, resource=lambda_resource(), kind=kind, parent_span_id=parent)
    before = batch.SerializeToString()
    assert processor.process(batch).SerializeToString() == before
    # They are not requests either: the next entry span is still the first.
    assert judge(processor, lambda_resource()) == [cold("inferred")]


@pytest.mark.parametrize("kind", [Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER])
def test_server_and_consumer_spans_with_remote_parent_are_entry_spans(kind):
    processor = new()
    got = judge(processor, lambda_resource(), kind=kind, parent_span_id=b"\x09" * 8)
    assert got == [cold("inferred")]


@pytest.mark.parametrize(
    "resource",
    [
        {"service.name": "checkout"},
        {"service.name": "vm", "cloud.platform": "aws_ec2", "host.id": "i-1"},
        {"service.name": "k8s", "cloud.platform": "aws_eks", "k8s.pod.uid": "p-1"},
        {"service.name": "run", "cloud.platform": "gcp_cloud_run", "service.instance.id": "x"},
    ],
)
def test_other_resources_are_untouched(resource):
    processor = new()
    batch = make_traces(3, resource=resource, attributes={"faas.coldstart": True})
    before = batch.SerializeToString()
    assert processor.process(batch).SerializeToString() == before
    assert tracked(processor) == 0


def test_mixed_batch_is_classified_per_resource():
    processor = new()
    batch = make_traces(resource={"service.name": "checkout"})
    batch.resource_spans.extend(make_traces(resource=lambda_resource()).resource_spans)
    batch.resource_spans.extend(make_traces(resource=ecs_resource()).resource_spans)
    processor.process(batch)
    got = [tags(rs.scope_spans[0].spans[0]) for rs in batch.resource_spans]
    assert got == [{}, cold("inferred"), cold("inferred", lambda_=False)]


# --- late collector start ---------------------------------------------------------------------


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _span_starting(processor, resource: dict, start_s: float) -> dict:
    batch = make_traces(resource=resource)
    span = batch.resource_spans[0].scope_spans[0].spans[0]
    span.start_time_unix_nano = _ns(start_s)
    span.end_time_unix_nano = _ns(start_s + 0.01)
    processor.process(batch)
    return tags(span)


def test_environment_older_than_the_collector_is_not_judged():
    clock = Clock(1_700_000_000.0)
    processor = new({"startup_grace": "10s"}, clock=clock)
    started = clock.now
    clock.now += 60
    # Its first request is unknown, the following ones are warm.
    assert _span_starting(processor, lambda_resource("old"), started - 600) == {}
    assert _span_starting(processor, lambda_resource("old"), started + 30) == warm()
    # Within the grace, and after the start, first requests are judged.
    assert _span_starting(processor, lambda_resource("sidecar"), started - 5) == cold("inferred")
    assert _span_starting(processor, lambda_resource("new"), started + 30) == cold("inferred")


def test_first_requests_window_of_old_container_is_not_judged():
    clock = Clock(1_700_000_000.0)
    processor = new({"container": {"first_requests": 2}}, clock=clock)
    old = ecs_resource()
    got = [_span_starting(processor, old, clock.now - 600 + i) for i in range(3)]
    assert got == [{}, {}, warm(lambda_=False)]


def test_process_creation_time_decides_over_span_start():
    clock = Clock(1_700_000_000.0)
    processor = new(clock=clock)
    clock.now += 3600
    recent_span = clock.now - 1
    created_before = lambda_resource("a", **{"process.creation.time": _iso(clock.now - 7200)})
    assert _span_starting(processor, created_before, recent_span) == {}
    created_after = lambda_resource("b", **{"process.creation.time": _iso(clock.now - 60)})
    assert _span_starting(processor, created_after, recent_span) == cold("inferred")
    unreadable = lambda_resource("c", **{"process.creation.time": "yesterday"})
    assert _span_starting(processor, unreadable, recent_span) == cold("inferred")


# --- bounded state ----------------------------------------------------------------------------


def test_ttl_forgets_idle_environments():
    clock = Clock(1_700_000_000.0)
    processor = new({"environment_ttl": "2h"}, clock=clock)
    judge(processor, lambda_resource("idle"))
    judge(processor, lambda_resource("busy"))
    clock.now += 3600
    assert judge(processor, lambda_resource("busy")) == [warm()]
    clock.now += 3601
    assert judge(processor, lambda_resource("busy")) == [warm()]
    assert evictions(processor, "ttl") == 1
    assert tracked(processor) == 1
    # A forgotten environment that comes back is new again.
    assert judge(processor, lambda_resource("idle")) == [cold("inferred")]


def test_zero_ttl_keeps_environments():
    clock = Clock(1_700_000_000.0)
    processor = new({"environment_ttl": "0s"}, clock=clock)
    judge(processor, lambda_resource("a"))
    clock.now += 10 * 86400
    assert judge(processor, lambda_resource("a")) == [warm()]
    assert evictions(processor, "ttl") == 0


@pytest.mark.slow
def test_state_stays_bounded_over_a_million_environments():
    cap, per_batch, total = 20_000, 2_000, 1_000_000
    processor = new({"max_environments": cap})
    # One resource with one entry span; serialized batches concatenate into one batch.
    one = make_traces(resource={"faas.instance": "env-XXXXXXX"})
    del one.resource_spans[0].scope_spans[0].spans[0].attributes[:]
    wire = one.SerializeToString()

    for first in range(0, total, per_batch):
        batch = Traces.FromString(
            b"".join(
                wire.replace(b"env-XXXXXXX", b"env-%07d" % n)
                for n in range(first, first + per_batch)
            )
        )
        processor.process(batch)
        assert len(processor.environments) <= cap
    assert tracked(processor) == cap
    assert evictions(processor, "lru") == total - cap
    assert cold_starts(processor, "inferred") == total
    assert judge(processor, {"faas.instance": "env-0999999"}) == [warm()]
    assert judge(processor, {"faas.instance": "env-0000000"}) == [cold("inferred")]


def test_least_recently_seen_environment_is_evicted_first():
    processor = new({"max_environments": 2})
    for env in ("a", "b", "a", "c"):
        judge(processor, lambda_resource(env))
    assert [key[1] for key in processor.environments] == ["a", "c"]
    assert judge(processor, lambda_resource("a")) == [warm()]
    assert judge(processor, lambda_resource("b")) == [cold("inferred")]
    assert evictions(processor, "lru") == 2


# --- as a component ---------------------------------------------------------------------------


def test_processors_of_several_pipelines_share_one_registry():
    telemetry = Telemetry()
    processors = [
        factory.create(
            make_settings(Kind.PROCESSOR, "coldstart", pipeline=name, telemetry=telemetry),
            Config(),
            Signal.TRACES,
            SinkConsumer(),
        )
        for name in ("traces", "traces/b")
    ]
    for processor in processors:
        processor.process(make_traces(resource=lambda_resource()))
    for pipeline in ("traces", "traces/b"):
        labels = {"processor": "coldstart", "pipeline": pipeline, "source": "inferred"}
        value = telemetry.registry.get_sample_value(
            "otelcol_processor_coldstart_cold_starts_total", labels
        )
        assert value == 1


async def test_consume_forwards_tagged_batch():
    processor, sink = make_processor(factory, {})
    await processor.start(None)
    await processor.consume(make_traces(2, resource=lambda_resource()))
    await processor.shutdown()
    spans = sink.batches[0].resource_spans[0].scope_spans[0].spans
    assert [tags(s) for s in spans] == [cold("inferred"), warm()]
