"""The AWS Distro for OpenTelemetry's own configs (tests/e2e/testdata/adot, with their sources)
run unchanged as a `coldtail run` subprocess, with the environment ECS or Lambda gives: only
the listening addresses are moved to loopback ports and X-Ray to moto's server. A span sent by
the OpenTelemetry SDK comes back from X-Ray with its resource's detected attributes."""

import asyncio
import json
from pathlib import Path

import pytest
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
