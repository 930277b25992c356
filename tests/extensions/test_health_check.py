import asyncio
import json
import socket
from datetime import datetime

import aiohttp
import pytest

from collector.core.component import Kind, Shared
from collector.core.consumer import PermanentError
from collector.core.signals import Signal
from collector.exporters.sender import Sender, SenderConfig
from collector.extensions import health_check
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings


def make_extension(**config) -> health_check.HealthCheck:
    config.setdefault("endpoint", "127.0.0.1:0")
    settings = make_settings(Kind.EXTENSION, "health_check")
    return health_check.HealthCheck(settings, health_check.Config.model_validate(config))


async def get(extension, path: str = "/") -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{extension.endpoint}{path}") as response,
    ):
        return response.status, response.content_type, await response.text()


async def test_status_follows_the_host():
    host = StaticHost(status="starting")
    extension = make_extension()
    await extension.start(host)
    try:
        assert extension.endpoint.startswith("127.0.0.1:")
        assert not extension.endpoint.endswith(":0")

        status, content_type, body = await get(extension)
        assert (status, content_type) == (503, "application/json")
        assert json.loads(body) == {"status": "Server not available"}

        host.status = "ready"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{extension.endpoint}/") as response,
        ):
            assert response.status == 200
            body = await response.json()
        assert body["status"] == "Server available"
        assert datetime.fromisoformat(body["upSince"]).tzinfo is not None
        assert body["upSince"].endswith("Z")
        assert body["uptime"].endswith("s")

        for stopping in ("stopping", "stopped"):
            host.status = stopping
            assert (await get(extension))[0] == 503
    finally:
        await extension.shutdown()


async def test_custom_path_and_bodies():
    host = StaticHost(status="ready")
    extension = make_extension(
        path="/health/status", response_body={"healthy": "I'm OK", "unhealthy": "not well"}
    )
    await extension.start(host)
    try:
        assert await get(extension, "/health/status") == (200, "text/plain", "I'm OK")
        assert (await get(extension, "/"))[0] == 404
        host.status = "stopping"
        assert await get(extension, "/health/status") == (503, "text/plain", "not well")
    finally:
        await extension.shutdown()


async def test_empty_bodies_when_response_body_is_given_empty():
    extension = make_extension(response_body={})
    await extension.start(StaticHost(status="ready"))
    try:
        assert (await get(extension))[::2] == (200, "")
    finally:
        await extension.shutdown()


async def test_shutdown_frees_the_port_and_is_idempotent():
    extension = make_extension()
    await extension.shutdown()
    await extension.start(StaticHost())
    port = int(extension.endpoint.rpartition(":")[2])
    await extension.shutdown()
    await extension.shutdown()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


async def test_start_fails_when_the_port_is_taken():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        extension = make_extension(endpoint=f"127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(OSError):
            await extension.start(StaticHost())
        await extension.shutdown()


def test_factory():
    assert health_check.factory.type == "health_check"
    assert health_check.factory.kind is Kind.EXTENSION
    assert health_check.factory.create is health_check.HealthCheck


def test_defaults():
    config = health_check.Config()
    assert (config.endpoint, config.path, config.response_body) == ("127.0.0.1:13133", "/", None)


async def test_check_collector_pipeline_reports_exporters_that_keep_failing():
    """A sender whose backend refuses shares the service's failure record with the extension:
    past the threshold of failed attempts within the interval, the check answers 503; once the
    failures age out of the interval, 200 again."""
    shared = Shared()
    settings = make_settings(Kind.EXTENSION, "health_check", shared=shared)
    config = health_check.Config.model_validate(
        {
            "endpoint": "127.0.0.1:0",
            "check_collector_pipeline": {
                "enabled": True,
                "interval": "500ms",
                "exporter_failure_threshold": 2,
            },
        }
    )
    extension = health_check.HealthCheck(settings, config)

    async def refuse(batch) -> None:
        raise PermanentError("backend says no")

    sender = Sender(
        make_settings(Kind.EXPORTER, "otlp", shared=shared),
        Signal.TRACES,
        refuse,
        SenderConfig.model_validate({"sending_queue": {"enabled": False}}),
    )
    await extension.start(StaticHost(status="ready"))
    try:
        for attempt in range(3):
            assert (await get(extension))[0] == 200, attempt
            with pytest.raises(PermanentError):
                await sender.send(make_traces(1))
        assert (await get(extension))[0] == 503  # 3 failures > 2
        await asyncio.sleep(0.6)
        assert (await get(extension))[0] == 200
    finally:
        await extension.shutdown()
