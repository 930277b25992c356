"""The headers_setter extension: fixed and client-metadata headers on exporters' requests, and
a multi-tenant pipeline in a real collector process (include_metadata -> batch metadata_keys ->
otlp exporter with headers_setter) whose backend sees each tenant's data under its own
X-Scope-OrgID."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.core import client
from collector.core.client import ClientInfo
from collector.core.pdata import get_attr
from collector.core.signals import Signal
from collector.extensions import headers_setter
from tests.support.backend import Backend
from tests.support.process import CollectorProcess, free_port


def setter(headers: list[dict]) -> headers_setter.HeadersSetter:
    config = headers_setter.Config.model_validate({"headers": headers})
    return headers_setter.HeadersSetter(None, config)  # type: ignore[arg-type]


async def test_actions_and_sources():
    ext = setter(
        [
            {"key": "X-Scope-OrgID", "from_context": "x-tenant", "default_value": "anonymous"},
            {"key": "X-Fixed", "value": "1"},
            {"key": "X-Present", "value": "new", "action": "insert"},
            {"key": "X-Absent", "value": "new", "action": "update"},
            {"key": "X-Present-Too", "value": "new", "action": "update"},
            {"key": "Authorization", "action": "delete"},
            {"key": "X-Missing", "from_context": "x-nothing"},
        ]
    )
    sent = {"x-present": "old", "X-Present-Too": "old", "authorization": "Bearer t"}
    with client.using(ClientInfo.of("10.0.0.1:1", [("X-Tenant", "acme"), ("x-tenant", "b")])):
        out = await ext.authorize("POST", "/", sent, b"")
    assert out == {
        "X-Scope-OrgID": "acme",  # the first value of the metadata key
        "X-Fixed": "1",
        "X-Present-Too": "new",
        "Authorization": None,  # removed from the request
    }
    nobody = await ext.authorize("POST", "/", {}, b"")
    assert nobody["X-Scope-OrgID"] == "anonymous" and "X-Missing" not in nobody


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({"key": "a"}, "set exactly one of value and from_context"),
        ({"key": "a", "value": "1", "from_context": "b"}, "set exactly one of value and"),
        ({"key": "a", "value": "1", "default_value": "2"}, "default_value goes with from_context"),
        ({"key": "a", "action": "delete", "value": "1"}, "action delete takes no value"),
    ],
)
def test_bad_headers_are_config_errors(header, error):
    with pytest.raises(ValueError, match=error):
        headers_setter.Config.model_validate({"headers": [header]})


PIPELINE = """
receivers:
  otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:{http}", include_metadata: true}}}}}}
processors:
  batch: {{timeout: 50ms, metadata_keys: [x-scope-orgid]}}
exporters:
  otlp:
    endpoint: "{backend}"
    tls: {{insecure: true}}
    auth: {{authenticator: headers_setter}}
extensions:
  headers_setter:
    headers: [{{key: X-Scope-OrgID, from_context: x-scope-orgid, default_value: anonymous}}]
service:
  extensions: [headers_setter]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
"""


def tenant_spans(tenant: str, count: int):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": tenant}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    for i in range(count):
        provider.get_tracer("t").start_span(f"op {i}").end()
    return memory.get_finished_spans()


@pytest.mark.slow
async def test_each_tenant_reaches_the_backend_under_its_own_org_id(tmp_path):
    async with Backend() as backend:
        http = free_port()
        config = tmp_path / "config.yaml"
        config.write_text(PIPELINE.format(http=http, backend=backend.grpc_endpoint))
        with CollectorProcess(config):
            url = f"http://127.0.0.1:{http}/v1/traces"
            for tenant, count in (("team-a", 3), ("team-b", 2), ("", 1)):
                headers = {"X-Scope-OrgID": tenant} if tenant else {}
                exporter = OTLPSpanExporter(endpoint=url, headers=headers)
                spans = tenant_spans(tenant or "nobody", count)
                assert (await asyncio.to_thread(exporter.export, spans)).name == "SUCCESS"
                exporter.shutdown()
            await backend.wait_for(Signal.TRACES, 6)
    seen: dict[str, set] = {}
    for request in backend.requests:
        services = {
            get_attr(rs.resource.attributes, "service.name") for rs in request.batch.resource_spans
        }
        seen.setdefault(request.headers.get("x-scope-orgid", ""), set()).update(services)
    assert seen == {"team-a": {"team-a"}, "team-b": {"team-b"}, "anonymous": {"nobody"}}
