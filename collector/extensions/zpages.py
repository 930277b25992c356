"""The `zpages` extension: the OTel Collector's live debugging pages, in HTML, at
`/debug/servicez` (build and process), `/debug/pipelinez` (pipelines and their components) and
`/debug/extensionz` (running extensions). `/debug/featurez` lists no feature gates (coldtail has
none) and `/debug/tracez` says that coldtail records no spans of its own; its own metrics are at
`service::telemetry::metrics`.
"""

from __future__ import annotations

import html
import importlib.metadata
import os
import platform
import time
from datetime import UTC, datetime

from aiohttp import web

from collector.core.component import Factory, Host, Kind, Settings
from collector.core.config_types import ComponentConfig, ListenEndpoint, format_duration
from collector.core.http_server import HttpServer
from collector.core.tls import TLSServerConfig


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:55679"
    """host:port to serve the pages on. Default 127.0.0.1:55679; port 0 picks a free port."""

    tls: TLSServerConfig | None = None
    """Serve over TLS (default none: plaintext)."""


def _page(title: str, body: str) -> web.Response:
    text = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}"
        "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.3em .6em;"
        "text-align:left;vertical-align:top}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html")


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class ZPages:
    """After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger
        self.endpoint: str | None = None
        self._host: Host | None = None
        self._server: HttpServer | None = None
        self._started_at = datetime.now(UTC)
        self._started_monotonic = time.monotonic()

    async def start(self, host: Host) -> None:
        self._host = host
        app = web.Application()
        for path, handler in {
            "/debug/servicez": self._servicez,
            "/debug/pipelinez": self._pipelinez,
            "/debug/extensionz": self._extensionz,
            "/debug/featurez": self._featurez,
            "/debug/tracez": self._tracez,
        }.items():
            app.router.add_get(path, handler)
        self._server = HttpServer(app, self.config.endpoint, self.config.tls)
        self.endpoint = await self._server.start()
        self.log.info("zpages served", extra={"kv": {"endpoint": self.endpoint}})

    def _layout(self) -> dict:
        assert self._host is not None, "request before start"
        return self._host.layout()

    async def _servicez(self, _request: web.Request) -> web.Response:
        assert self._host is not None
        try:
            version = importlib.metadata.version("coldtail")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        uptime = format_duration(round(time.monotonic() - self._started_monotonic, 3))
        rows = [
            ["Version", version],
            ["Python", f"{platform.python_implementation()} {platform.python_version()}"],
            ["Process id", str(os.getpid())],
            ["Started", self._started_at.isoformat().replace("+00:00", "Z")],
            ["Uptime", uptime],
            ["Status", self._host.status],
        ]
        return _page("Service", _table(["", ""], rows))

    async def _pipelinez(self, _request: web.Request) -> web.Response:
        pipelines = self._layout()["pipelines"]
        rows = [
            [
                name,
                ", ".join(p["receivers"]),
                " -> ".join(p["processors"]) or "(none)",
                ", ".join(p["exporters"]),
            ]
            for name, p in sorted(pipelines.items())
        ]
        return _page(
            "Pipelines", _table(["Pipeline", "Receivers", "Processors", "Exporters"], rows)
        )

    async def _extensionz(self, _request: web.Request) -> web.Response:
        rows = [[name] for name in self._layout()["extensions"]]
        return _page("Extensions", _table(["Extension"], rows))

    async def _featurez(self, _request: web.Request) -> web.Response:
        return _page("Feature gates", "<p>coldtail has no feature gates.</p>")

    async def _tracez(self, _request: web.Request) -> web.Response:
        return _page(
            "Traces",
            "<p>coldtail records no spans of its own. Its own metrics are served at "
            "<code>service::telemetry::metrics</code>.</p>",
        )

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


factory = Factory(
    kind=Kind.EXTENSION,
    type="zpages",
    config=Config,
    create=ZPages,
    signals={},
    description="Live debugging pages: service, pipelines, extensions.",
)
