"""The page's server: the static assets, the JSON API and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import Field

from collector.core.auth import (
    AuthConfig,
    ServerAuthenticator,
    Unauthenticated,
    server_authenticator,
)
from collector.core.component import Host, Settings
from collector.core.config_types import ComponentConfig, Duration, ListenEndpoint
from collector.core.http_server import HttpServer
from collector.core.live_view import LiveView
from collector.core.tls import TLSServerConfig

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {
    "/": ("index.html", "text/html"),
    "/app.js": ("app.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:13180"
    """host:port to serve the page on. Default 127.0.0.1:13180 (local only); port 0 picks a
    free port."""
    tls: TLSServerConfig | None = None
    """Serve over TLS (default none: plaintext)."""
    auth: AuthConfig | None = None
    """Requests authenticated by an extension, as `{authenticator: basicauth}` (browsers ask
    for the password); others get 401 (default none)."""
    refresh: Duration = Field(1.0, gt=0)
    """How often the event stream sends the summary (default 1s)."""


class ColdtailUI:
    """After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger
        self.view = settings.shared.get(LiveView)
        self.registry: CollectorRegistry = settings.telemetry.registry
        self.endpoint: str | None = None
        self._host: Host | None = None
        self._auth: ServerAuthenticator | None = None
        self._server: HttpServer | None = None
        self._closing = asyncio.Event()

    async def start(self, host: Host) -> None:
        self._host = host
        self._auth = server_authenticator(host, self.config.auth)
        app = web.Application(middlewares=[self._authenticate])
        for path, (name, content_type) in _ASSETS.items():
            app.router.add_get(path, self._asset(name, content_type))
        app.router.add_get("/api/summary", self._summary)
        app.router.add_get("/api/traces", self._traces)
        app.router.add_get("/api/pipelines", self._pipelines)
        app.router.add_get("/api/events", self._events)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls)
        self.endpoint = await self._server.start()
        self.log.info("coldtail_ui served", extra={"kv": {"url": f"http://{self.endpoint}/"}})
        if not self.view.recording:
            self.log.warning(
                "no coldtail_ui exporter in any pipeline: the page shows pipelines only; add "
                "exporters: [coldtail_ui] to a traces pipeline"
            )

    async def shutdown(self) -> None:
        self._closing.set()  # ends the event streams, so that the server stops at once
        server, self._server = self._server, None
        if server is not None:
            await server.stop()

    # --- requests -----------------------------------------------------------------------------

    @web.middleware
    async def _authenticate(self, request: web.Request, handler):
        if self._auth is not None:
            try:
                self._auth.authenticate({k.lower(): v for k, v in request.headers.items()})
            except Unauthenticated as e:
                return web.Response(
                    status=401, text=str(e), headers={"WWW-Authenticate": 'Basic realm="coldtail"'}
                )
        return await handler(request)

    def _asset(self, name: str, content_type: str):
        async def serve(_request: web.Request) -> web.Response:
            body = (STATIC / name).read_bytes()
            return web.Response(
                body=body,
                content_type=content_type,
                charset="utf-8",
                headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
            )

        return serve

    async def _summary(self, _request: web.Request) -> web.Response:
        return web.json_response(self.view.summary())

    async def _traces(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "20")), self.view.max_traces))
        except ValueError:
            return web.json_response({"error": "limit: expected an integer"}, status=400)
        return web.json_response({"traces": self.view.traces(limit)})

    async def _pipelines(self, _request: web.Request) -> web.Response:
        assert self._host is not None, "request before start"
        layout = self._host.layout()
        pipelines = [{"id": name, **parts} for name, parts in sorted(layout["pipelines"].items())]
        return web.json_response(
            {"pipelines": pipelines, "components": component_counters(self.registry)}
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            while not self._closing.is_set():
                data = json.dumps(self.view.summary(), separators=(",", ":"))
                await response.write(f"event: summary\ndata: {data}\n\n".encode())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.refresh):
                        await self._closing.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the page went away
        return response


# The own metrics the pipelines table shows: metric name -> (kind, field).
_COUNTERS = {
    "otelcol_receiver_accepted": ("receiver", "accepted"),
    "otelcol_receiver_refused": ("receiver", "refused"),
    "otelcol_processor_incoming_items": ("processor", "incoming"),
    "otelcol_processor_outgoing_items": ("processor", "outgoing"),
    "otelcol_exporter_sent": ("exporter", "sent"),
    "otelcol_exporter_send_failed": ("exporter", "failed"),
    "otelcol_exporter_enqueue_failed": ("exporter", "enqueue_failed"),
    "otelcol_exporter_queue_size": ("exporter", "queue_size"),
    "otelcol_exporter_queue_capacity": ("exporter", "queue_capacity"),
}
_SIGNAL_WORDS = {"spans": "traces", "metric_points": "metrics", "log_records": "logs"}


def component_counters(registry: CollectorRegistry) -> list[dict]:
    """The pipelines' own counters, one entry per component (and signal or pipeline)."""
    entries: dict[tuple, dict] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name.removesuffix("_total")
            signal = ""
            for word, sig in _SIGNAL_WORDS.items():
                if name.endswith("_" + word):
                    name, signal = name.removesuffix("_" + word), sig
            known = _COUNTERS.get(name)
            if known is None:
                continue
            kind, field = known
            labels = sample.labels
            cid = labels.get(kind, "")
            signal = signal or labels.get("otel_signal") or labels.get("data_type", "")
            key = (kind, cid, labels.get("pipeline", ""), signal)
            entry = entries.setdefault(key, {"kind": kind, "id": cid, "signal": signal})
            if labels.get("pipeline"):
                entry["pipeline"] = labels["pipeline"]
            entry[field] = entry.get(field, 0) + sample.value
    return sorted(entries.values(), key=lambda e: (e["kind"], e["id"], e.get("pipeline", "")))
