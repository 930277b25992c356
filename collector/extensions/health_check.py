"""The `health_check` extension: an HTTP endpoint for liveness and readiness probes.

Answers 200 while the service is ready and 503 otherwise, with the OTel Collector's JSON body.
Extensions start before the pipelines and stop after them, so the status is read from the host
on every request rather than cached. `upSince` is when the extension started: the host reports
a status, not when it changed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web
from pydantic import Field, field_validator

from collector.core.component import Factory, Host, Kind, Settings
from collector.core.config_types import ComponentConfig, Duration, ListenEndpoint
from collector.core.health import ExportFailures
from collector.core.http_server import HttpServer
from collector.core.telemetry import go_duration
from collector.core.tls import TLSServerConfig


class ResponseBody(ComponentConfig):
    healthy: str = ""
    """Body of the 200 response, sent as plain text. Default empty: an empty body."""

    unhealthy: str = ""
    """Body of the 503 response, sent as plain text. Default empty: an empty body."""


class CheckCollectorPipeline(ComponentConfig):
    enabled: bool = False
    """Report unhealthy while exporters fail (default false)."""
    interval: Duration = Field(300.0, gt=0)
    """The window failures are counted over (default 5m)."""
    exporter_failure_threshold: int = Field(5, ge=0)
    """Unhealthy when more send attempts than this failed within `interval`, across every
    exporter (default 5)."""


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:13133"
    """host:port to listen on. Default 127.0.0.1:13133; port 0 picks a free port."""

    tls: TLSServerConfig | None = None
    """Serve over TLS (default none: plaintext)."""

    path: str = "/"
    """URL path that answers health checks; other paths give 404. Default /."""

    response_body: ResponseBody | None = None
    """Fixed plain-text bodies instead of the JSON status. Absent (the default) means JSON."""

    check_collector_pipeline: CheckCollectorPipeline = Field(default_factory=CheckCollectorPipeline)
    """Also report unhealthy while exporters keep failing, as the Collector's option did."""

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        return path


class HealthCheck:
    """Serves GET (and HEAD) on `path`. After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger
        self.endpoint: str | None = None
        self._host: Host | None = None
        self._server: HttpServer | None = None
        self._started_at = datetime.now(UTC)
        self._started_monotonic = time.monotonic()
        self._failures = settings.shared.get(ExportFailures)

    async def start(self, host: Host) -> None:
        self._host = host
        self._started_at = datetime.now(UTC)
        self._started_monotonic = time.monotonic()
        app = web.Application()
        app.router.add_get(self.config.path, self._check)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls)
        self.endpoint = await self._server.start()
        self.log.info("health check served", extra={"kv": {"endpoint": self.endpoint}})

    async def _check(self, _request: web.Request) -> web.Response:
        healthy = self._host is not None and self._host.status == "ready"
        pipeline = self.config.check_collector_pipeline
        if healthy and pipeline.enabled:
            failures = self._failures.since(pipeline.interval)
            healthy = failures <= pipeline.exporter_failure_threshold
        status = 200 if healthy else 503
        fixed = self.config.response_body
        if fixed is not None:
            return web.Response(status=status, text=fixed.healthy if healthy else fixed.unhealthy)
        if not healthy:
            return web.json_response({"status": "Server not available"}, status=status)
        return web.json_response(
            {
                "status": "Server available",
                "upSince": self._started_at.isoformat().replace("+00:00", "Z"),
                "uptime": go_duration(time.monotonic() - self._started_monotonic),
            }
        )

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


factory = Factory(
    kind=Kind.EXTENSION,
    type="health_check",
    config=Config,
    create=HealthCheck,
    signals={},
    description="HTTP health endpoint: 200 while the collector is ready, 503 otherwise.",
)
