"""A real Prometheus server for tests (the Debian package `prometheus`, /usr/bin/prometheus).

    if not prometheus_available():
        pytest.skip(PROMETHEUS_MISSING)
    async with PrometheusServer(scrape_target="127.0.0.1:8889") as prom:
        value = await prom.wait_for_value("sum(requests_total)", 6)

The server listens on a free 127.0.0.1 port with its data in a temporary directory that is
removed on stop. With `scrape_target` it scrapes that host:port's /metrics every
`scrape_interval` with `honor_labels: true`, or it runs the given `scrape_configs`; with
`remote_write_receiver` it accepts remote write at `remote_write_url`. Waits poll with
asyncio.sleep, so an exporter in the same event loop keeps serving scrapes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

from tests.support.process import free_port

PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMETHEUS_MISSING = (
    f"{PROMETHEUS_BIN} not found: install it with "
    "`apt-get install -y --no-install-recommends prometheus`"
)


def prometheus_available() -> bool:
    return os.access(PROMETHEUS_BIN, os.X_OK)


class PrometheusServer:
    def __init__(
        self,
        *,
        scrape_target: str | None = None,
        scrape_interval: str = "1s",
        remote_write_receiver: bool = False,
        scrape_configs: list[dict] | None = None,
    ) -> None:
        self.port = free_port()
        self.scrape_configs = scrape_configs
        self.scrape_target = scrape_target
        self.scrape_interval = scrape_interval
        self.remote_write_receiver = remote_write_receiver
        self._dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def remote_write_url(self) -> str:
        return f"{self.url}/api/v1/write"

    def _write_config(self, directory: Path) -> Path:
        config: dict = {"global": {"scrape_interval": self.scrape_interval}}
        if self.scrape_configs is not None:
            config["scrape_configs"] = self.scrape_configs
        elif self.scrape_target:
            config["scrape_configs"] = [
                {
                    "job_name": "coldtail",
                    "honor_labels": True,
                    "scrape_interval": self.scrape_interval,
                    "static_configs": [{"targets": [self.scrape_target]}],
                }
            ]
        path = directory / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def start(self, timeout: float = 30.0) -> PrometheusServer:
        self._dir = directory = Path(tempfile.mkdtemp(prefix="coldtail-prometheus-"))
        args = [
            PROMETHEUS_BIN,
            f"--config.file={self._write_config(directory)}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if self.remote_write_receiver:
            args.append("--web.enable-remote-write-receiver")
        with open(directory / "prometheus.log", "wb") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=log, cwd=directory)
        self._session = session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        deadline = time.monotonic() + timeout
        while not await self._ready(session):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                output = self.log
                await self.stop()
                raise RuntimeError(f"prometheus did not become ready:\n{output}")
            await asyncio.sleep(0.1)
        return self

    async def _ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.url}/-/ready") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    @property
    def log(self) -> str:
        """What the server logged so far."""
        path = self._dir / "prometheus.log" if self._dir else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    async def query(self, promql: str) -> list[dict]:
        """The result of an instant query: a list of {"metric": {...}, "value": [ts, "v"]}."""
        assert self._session is not None, "query before start"
        async with self._session.get(
            f"{self.url}/api/v1/query", params={"query": promql}
        ) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]["result"]

    async def api(self, path: str, **params) -> object:
        """The `data` of an HTTP API call, like api("targets") or api("series", match=...)."""
        assert self._session is not None, "api call before start"
        async with self._session.get(f"{self.url}/api/v1/{path}", params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} failed: {body}")
        return body["data"]

    async def wait_for_value(self, promql: str, expected: float, timeout: float = 15.0) -> float:
        """Poll `promql` until its single result equals `expected`; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            result = await self.query(promql)
            if len(result) == 1:
                last = float(result[0]["value"][1])
                if last == expected:
                    return last
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{promql!r} is {last}, expected {expected}:\n{self.log}")

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    async def __aenter__(self) -> PrometheusServer:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
