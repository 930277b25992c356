"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, for tests of pages
the collector serves: open a URL, wait for a condition in the page, read the DOM, screenshot.

    async with Chromium() as browser:
        page = await browser.open("http://127.0.0.1:13180/", width=1280, height=1400)
        await page.wait_for("document.body.dataset.state === 'live'")
        html = await page.evaluate("document.documentElement.outerHTML")
        png = await page.screenshot()

Background networking is off: this machine allows loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import aiohttp

from tests.support.process import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result."""
        id_ = next(self._ids)
        await self._ws.send_json({"id": id_, "method": method, "params": params})
        async for message in self._ws:
            data = message.json()
            if data.get("id") == id_:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return data.get("result", {})
        raise RuntimeError(f"{method}: the browser closed the connection")

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> None:
        """Poll `expression` until it is true in the page; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while not await self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true after {timeout}s: {expression}")
            await asyncio.sleep(0.1)

    async def screenshot(self) -> bytes:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(result["data"])


class Chromium:
    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.port = free_port()

    async def start(self) -> Chromium:
        assert CHROMIUM is not None, "no chromium"
        self._profile = tempfile.TemporaryDirectory()
        self._proc = subprocess.Popen(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={self._profile.name}",
                f"--remote-debugging-port={self.port}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer and GPU processes are stopped with it
        )
        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            try:
                async with self._session.get(f"http://127.0.0.1:{self.port}/json/version"):
                    return self
            except aiohttp.ClientError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("chromium did not start") from None
                await asyncio.sleep(0.2)

    async def open(self, url: str, width: int = 1280, height: int = 900) -> Page:
        """A new tab showing `url`, once its load event fired."""
        assert self._session is not None
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json()
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._sockets.append(ws)
        page = Page(ws)
        await page.call("Page.enable")
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=width, height=height,
            deviceScaleFactor=1, mobile=width < 600,
        )  # fmt: skip
        await page.call("Page.navigate", url=url)
        await page.wait_for("document.readyState === 'complete'")
        return page

    async def stop(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None:
            # The whole group: a child left writing to the profile makes its removal fail.
            with contextlib.suppress(ProcessLookupError):  # all of it gone already
                os.killpg(self._proc.pid, signal.SIGKILL)
            await asyncio.to_thread(self._proc.wait)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.killpg(self._proc.pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.05)
        if self._profile is not None:
            self._profile.cleanup()

    async def __aenter__(self) -> Chromium:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()
