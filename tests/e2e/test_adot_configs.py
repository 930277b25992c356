"""The AWS Distro for OpenTelemetry's own configs (tests/e2e/testdata/adot, with their sources)
run unchanged as a `coldtail run` subprocess, with the environment ECS or Lambda gives: only
the listening addresses are moved to loopback ports and X-Ray and CloudWatch Logs to moto's
server. A span sent by the OpenTelemetry SDK comes back from X-Ray with its resource's detected
attributes; segments sent by the X-Ray SDK come back as it wrote them; statsd counters arrive in
CloudWatch Logs as EMF."""

import asyncio
import json
import socket
from pathlib import Path

import pytest
from aws_xray_sdk.core import AWSXRayRecorder
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from emulator.ecs_metadata import EcsMetadataServer, EcsTask
from tests.support.aws import CREDENTIALS, REGION, aws_client
from tests.support.process import CollectorProcess, free_port

CONFIGS = Path(__file__).parent / "testdata" / "adot"
pytestmark = pytest.mark.usefixtures("aws_credentials")


def send_span(http_port: int, name: str) -> str:
    """One SERVER span through the OTLP/HTTP exporter of the SDK; its X-Ray trace id."""
    provider = TracerProvider(resource=Resource({"service.name": "checkout"}))
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("adot.test").start_as_current_span(name, kind=SpanKind.SERVER) as s:
        s.set_attribute("http.route", "/orders/{id}")
        trace = f"{s.get_span_context().trace_id:032x}"
    provider.shutdown()
    return f"1-{trace[:8]}-{trace[8:]}"


async def run(config: str, sets: list[str], env: dict, http_port: int) -> tuple[dict, str]:
    """Start the config, send a span, stop; the segment X-Ray stored and the collector's log."""
    collector = CollectorProcess(
        CONFIGS / config, *[arg for s in sets for arg in ("--set", s)], env=env
    )
    await asyncio.to_thread(collector.start)
    try:
        trace = await asyncio.to_thread(send_span, http_port, "GET /orders/{id}")
        assert await asyncio.to_thread(collector.stop) == 0, collector.log
    finally:
        collector.kill()
    xray = aws_client("xray", env["XRAY_ENDPOINT"])
    traces = xray.batch_get_traces(TraceIds=[trace])["Traces"]
    [segment] = [json.loads(s["Document"]) for t in traces for s in t["Segments"]]
    return segment, collector.log


def loopback(grpc_port: int, http_port: int) -> list[str]:
    return [
        f"receivers::otlp::protocols::grpc::endpoint=127.0.0.1:{grpc_port}",
        f"receivers::otlp::protocols::http::endpoint=127.0.0.1:{http_port}",
    ]


def aws_env(moto_server: str, **more: str) -> dict:
    return {
        **CREDENTIALS,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "XRAY_ENDPOINT": moto_server,
        **more,
    }


async def test_the_adot_lambda_config_sends_to_x_ray(moto_server):
    grpc_port, http_port = free_port(), free_port()
    sets = [
        *loopback(grpc_port, http_port),
        f"service::telemetry::metrics::address=127.0.0.1:{free_port()}",
        f"exporters::awsxray::endpoint={moto_server}",
    ]
    env = aws_env(moto_server, AWS_LAMBDA_FUNCTION_NAME="checkout")
    segment, _ = await run("lambda-collector.yaml", sets, env, http_port)
    assert segment["name"] == "checkout"
    assert "parent_id" not in segment and "type" not in segment  # a segment, not a subsegment
    assert segment["metadata"]["default"]["http.route"] == "/orders/{id}"


async def test_the_adot_ecs_config_detects_the_task_and_sends_to_x_ray(moto_server):
    grpc_port, http_port = free_port(), free_port()
    sets = [
        *loopback(grpc_port, http_port),
        f"extensions::health_check::endpoint=127.0.0.1:{free_port()}",
        f"exporters::awsxray::endpoint={moto_server}",
        "processors::batch/traces::timeout=10ms",
    ]
    task = EcsTask(family="checkout", container_name="aws-otel-collector")
    async with EcsMetadataServer(task) as metadata:
        env = aws_env(moto_server, ECS_CONTAINER_METADATA_URI_V4=metadata.uri)
        segment, log = await run("ecs-xray.yaml", sets, env, http_port)
    assert segment["origin"] == "AWS::ECS::Fargate"
    assert segment["aws"]["ecs"] == {
        "container": "aws-otel-collector",
        "container_id": task.container_id,
        "task_arn": task.task_arn,
        "task_family": "checkout",
        "cluster_arn": task.cluster_arn,
    }
    assert segment["aws"]["cloudwatch_logs"] == [{"log_group": task.log_group}]
    assert "resource detection" not in log  # every detector found or skipped quietly


def x_ray_sdk_request(daemon: str) -> str:
    """One request recorded by the X-Ray SDK for Python, sent to `daemon` as to the X-Ray
    daemon: a segment with an annotation and a failing database subsegment; its trace id."""
    xray = AWSXRayRecorder()
    xray.configure(
        daemon_address=daemon, sampling=False, context_missing="LOG_ERROR", service="legacy"
    )
    segment = xray.begin_segment("legacy-api")
    segment.put_annotation("tenant", "acme")
    segment.put_http_meta("method", "POST")
    segment.put_http_meta("status", 200)
    database = xray.begin_subsegment("orders-db", namespace="remote")
    database.add_exception(TimeoutError("the orders database did not answer"), [])
    xray.end_subsegment()
    xray.end_segment()
    return segment.trace_id


def statsd_lines(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"orders.placed:3|c|#tier:gold\norders.placed:2|c|#tier:gold", ("127.0.0.1", port))


async def test_the_adot_ecs_default_config_takes_x_ray_sdk_segments_and_statsd(moto_server):
    """X-Ray SDK segments through the awsxray receiver come back from X-Ray as the SDK wrote
    them, and statsd counters through awsemf land in CloudWatch Logs as EMF."""
    ports = {name: free_port() for name in ("grpc", "http", "xray", "proxy", "statsd", "health")}
    sets = [
        *loopback(ports["grpc"], ports["http"]),
        f"receivers::awsxray::endpoint=127.0.0.1:{ports['xray']}",
        f"receivers::awsxray::proxy_server::endpoint=127.0.0.1:{ports['proxy']}",
        f"receivers::statsd::endpoint=127.0.0.1:{ports['statsd']}",
        f"extensions::health_check::endpoint=127.0.0.1:{ports['health']}",
        f"exporters::awsxray::endpoint={moto_server}",
        f"exporters::awsemf::endpoint={moto_server}",
    ]
    args = [arg for s in sets for arg in ("--set", s)]
    collector = CollectorProcess(
        CONFIGS / "ecs-default-config.yaml", *args, env=aws_env(moto_server)
    )
    await asyncio.to_thread(collector.start)
    try:
        trace = await asyncio.to_thread(x_ray_sdk_request, f"127.0.0.1:{ports['xray']}")
        await asyncio.to_thread(statsd_lines, ports["statsd"])
        await asyncio.sleep(0.2)  # UDP: let the datagrams arrive before the stop
        # The stop flushes the statsd aggregation and both batch processors.
        assert await asyncio.to_thread(collector.stop) == 0, collector.log
    finally:
        collector.kill()
    xray = aws_client("xray", moto_server)
    [stored] = xray.batch_get_traces(TraceIds=[trace])["Traces"]
    documents = {d["name"]: d for d in (json.loads(s["Document"]) for s in stored["Segments"])}
    api, database = documents["legacy-api"], documents["orders-db"]
    assert api["annotations"] == {"tenant": "acme"}
    assert api["http"]["response"]["status"] == 200
    assert database["parent_id"] == api["id"] and database["namespace"] == "remote"
    assert database["fault"] is True
    assert database["cause"]["exceptions"][0]["message"] == "the orders database did not answer"

    logs = aws_client("logs", moto_server)
    group = "/aws/ecs/application/metrics"
    streams = logs.describe_log_streams(logGroupName=group)["logStreams"]
    events = [
        json.loads(e["message"])
        for stream in streams
        for e in logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"])[
            "events"
        ]
    ]
    [event] = [e for e in events if "orders.placed" in e]
    assert event["orders.placed"] == 5 and event["tier"] == "gold"
    [directive] = event["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "ECS/AWSOTel/Application"
