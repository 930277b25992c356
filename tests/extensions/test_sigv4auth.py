"""sigv4auth: the HTTP exporters' requests signed with SigV4, checked by an endpoint that
recomputes every signature from what arrived, with credentials from the environment, from a
container credentials endpoint served here, and from STS AssumeRole (moto's STS server)."""

import gzip
import json

import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer
from moto.sts.models import sts_backends

from collector.core.component import ComponentID, Kind
from collector.core.endpoints import bound_port
from collector.core.signals import Signal
from collector.exporters import otlphttp, prometheusremotewrite
from collector.extensions import sigv4auth
from collector.extensions.sigv4auth import Config, signing_scope
from tests.support.aws import isolate
from tests.support.builders import make_metrics, make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sigv4 import SigV4Endpoint

KEY, SECRET, TOKEN = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token"
SCOPE = {"service": "xray", "region": "eu-west-1"}


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """No AWS credentials anywhere but where a test puts them; no instance metadata lookups."""
    isolate(monkeypatch, tmp_path, credentials=False)
    monkeypatch.delenv("AWS_REGION")
    return monkeypatch


def signed(endpoint: str) -> dict:
    """An HTTP exporter's config: `endpoint`, sigv4auth, sending inline."""
    return {
        "endpoint": endpoint,
        "auth": {"authenticator": "sigv4auth"},
        "sending_queue": {"enabled": False},
    }


async def started_extension(config: dict) -> sigv4auth.SigV4Auth:
    extension = sigv4auth.factory.create(
        make_settings(Kind.EXTENSION, "sigv4auth"), Config.model_validate(config)
    )
    await extension.start(None)
    return extension


async def export_through(extension, factory, config: dict, batch, signal) -> None:
    settings = make_settings(Kind.EXPORTER, factory.type)
    exporter = factory.create(settings, factory.config.model_validate(config), signal)
    host = StaticHost(extensions={ComponentID.parse("sigv4auth"): extension})
    await exporter.start(host)
    try:
        await exporter.consume(batch)
        await exporter.flush()
    finally:
        await exporter.shutdown()


def test_service_and_region_come_from_aws_host_names():
    assert signing_scope("https://xray.us-east-1.amazonaws.com/v1/traces", Config(), None) == (
        "xray",
        "us-east-1",
    )
    aps = "https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/remote_write"
    assert signing_scope(aps, Config(), None) == ("aps", "eu-west-1")
    assert signing_scope("http://127.0.0.1:1/", Config(**SCOPE), None) == ("xray", "eu-west-1")
    with pytest.raises(ValueError, match="set service and region"):
        signing_scope("http://127.0.0.1:1/", Config(), "us-east-1")


async def test_otlphttp_requests_carry_a_valid_signature_with_environment_credentials(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    aws_env.setenv("AWS_SESSION_TOKEN", TOKEN)
    extension = await started_extension(SCOPE)
    async with SigV4Endpoint({KEY: (SECRET, TOKEN)}) as endpoint:
        config = signed(endpoint.url)
        batch = make_traces(3)
        await export_through(extension, otlphttp.factory, config, batch, Signal.TRACES)
    assert endpoint.refused == []
    [(method, path, headers, body)] = endpoint.accepted
    assert (method, path) == ("POST", "/v1/traces")
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == batch.SerializeToString()
    assert endpoint.scopes == [("xray", "eu-west-1")]


async def test_remote_write_is_signed_with_container_credentials(aws_env):
    served = []

    async def credentials(request: web.Request) -> web.Response:
        served.append(request.headers.get("Authorization"))
        document = {
            "AccessKeyId": "ASIACONTAINER",
            "SecretAccessKey": "container-secret",
            "Token": "container-token",
            "Expiration": "2099-01-01T00:00:00Z",
        }
        return web.Response(text=json.dumps(document), content_type="application/json")

    app = web.Application()
    app.router.add_get("/credentials", credentials)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = bound_port(site)
        aws_env.setenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", f"http://127.0.0.1:{port}/credentials")
        aws_env.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "task-secret")
        extension = await started_extension({"service": "aps", "region": "us-east-1"})
        async with SigV4Endpoint({"ASIACONTAINER": ("container-secret", "container-token")}) as ep:
            config = signed(f"{ep.url}/api/v1/remote_write")
            metrics = make_metrics(2)
            await export_through(
                extension, prometheusremotewrite.factory, config, metrics, Signal.METRICS
            )
    finally:
        await runner.cleanup()
    assert served and served[0] == "task-secret"
    assert ep.refused == []
    assert [(m, p) for m, p, _, _ in ep.accepted] == [("POST", "/api/v1/remote_write")]
    assert ep.scopes == [("aps", "us-east-1")]


async def test_assume_role_signs_with_the_roles_credentials_from_sts(aws_env):
    sts = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    sts.start()
    try:
        host, port = sts.get_host_and_port()
        aws_env.setenv("AWS_ENDPOINT_URL_STS", f"http://{host}:{port}")
        aws_env.setenv("AWS_ACCESS_KEY_ID", "AKIDBASE")
        aws_env.setenv("AWS_SECRET_ACCESS_KEY", "base-secret")
        role = "arn:aws:iam::123456789012:role/coldtail-writer"
        extension = await started_extension(
            {**SCOPE, "assume_role": {"arn": role, "session_name": "sidecar"}}
        )
        async with SigV4Endpoint(assumed_role_key) as endpoint:
            config = signed(endpoint.url)
            batch = make_traces(1)
            await export_through(extension, otlphttp.factory, config, batch, Signal.TRACES)
    finally:
        sts.stop()
    assert endpoint.refused == []
    [(_, _, headers, _)] = endpoint.accepted
    assert "AKIDBASE" not in headers["Authorization"]
    assert headers["X-Amz-Security-Token"]


def assumed_role_key(access_key_id: str) -> tuple[str, str | None] | None:
    """The secret and token moto's STS issued with `access_key_id`."""
    for account in sts_backends.values():
        for backend in account.values():
            for role in backend.assumed_roles:
                if role.access_key_id == access_key_id:
                    return role.secret_access_key, role.session_token
    return None


async def test_the_endpoint_refuses_a_signature_by_other_credentials(aws_env):
    aws_env.setenv("AWS_ACCESS_KEY_ID", KEY)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    extension = await started_extension(SCOPE)
    async with SigV4Endpoint({KEY: (SECRET, None)}) as endpoint:
        config = {**signed(endpoint.url), "retry_on_failure": {"enabled": False}}
        batch = make_traces(1)
        with pytest.raises(Exception, match="403"):
            await export_through(extension, otlphttp.factory, config, batch, Signal.TRACES)
    assert endpoint.refused == ["the request signature does not match"]


async def test_without_credentials_the_extension_does_not_start(aws_env):
    with pytest.raises(ValueError, match="no AWS credentials"):
        await started_extension(SCOPE)


async def test_an_exporter_naming_a_missing_authenticator_does_not_start():
    settings = make_settings(Kind.EXPORTER, "otlphttp")
    config = otlphttp.Config.model_validate(
        {"endpoint": "http://127.0.0.1:1", "auth": {"authenticator": "sigv4auth/missing"}}
    )
    exporter = otlphttp.factory.create(settings, config, Signal.TRACES)
    with pytest.raises(ValueError, match="'sigv4auth/missing' is not a client authenticator"):
        await exporter.start(StaticHost())
    await exporter.shutdown()
