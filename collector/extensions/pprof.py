"""The `pprof` extension: profiles of the running collector over HTTP, the Python counterpart of
the OTel Collector's Go pprof endpoint.

- `GET /debug/pprof/profile?seconds=N` (default 30, at most 300): every thread's Python stack
  sampled `rate` times a second for N seconds, answered in the folded format (one line per
  distinct stack, `outer;...;inner count`) that flame graph tools (flamegraph.pl, speedscope,
  inferno) read. Threads waiting (in `select`, a lock) are sampled too, and show as such.
- `GET /debug/pprof/threads`: the current stack of every thread and every asyncio task, as text.
- With `save_to_file`, the whole run is sampled and written there, folded, at shutdown.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

from aiohttp import web
from pydantic import Field

from collector.core.component import Factory, Host, Kind, Settings
from collector.core.config_types import ComponentConfig, ListenEndpoint
from collector.core.http_server import HttpServer

_MAX_SECONDS = 300


class Config(ComponentConfig):
    endpoint: ListenEndpoint = "127.0.0.1:1777"
    """host:port to serve the profiles on. Default 127.0.0.1:1777; port 0 picks a free port."""
    rate: int = Field(100, ge=1, le=1000)
    """Stack samples per second while profiling (default 100)."""
    save_to_file: str = ""
    """Profile the whole run and write it, folded, to this file at shutdown (default empty:
    not)."""
    block_profile_fraction: int = 0
    """Accepted for compatibility with Collector configs: a Go runtime setting, no effect."""
    mutex_profile_fraction: int = 0
    """Accepted for compatibility with Collector configs: a Go runtime setting, no effect."""


def _stack(frame: FrameType | None) -> str:
    names = []
    while frame is not None:
        code = frame.f_code
        name = getattr(code, "co_qualname", code.co_name)
        names.append(f"{name} ({Path(code.co_filename).name}:{frame.f_lineno})")
        frame = frame.f_back
    return ";".join(reversed(names))


class _Sampler:
    """Samples every other thread's stack `rate` times a second on a thread of its own."""

    def __init__(self, rate: int) -> None:
        self.interval = 1.0 / rate
        self.counts: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pprof-sampler", daemon=True)

    def start(self) -> _Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        me = threading.get_ident()
        names: dict[int | None, str] = {}
        while not self._stop.wait(self.interval):
            frames = sys._current_frames()
            if len(names) != len(frames):
                names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in frames.items():
                if ident != me:
                    self.counts[f"{names.get(ident, ident)};{_stack(frame)}"] += 1

    def stop(self) -> str:
        self._stop.set()
        self._thread.join()
        return "".join(f"{stack} {count}\n" for stack, count in self.counts.most_common())


def _threads_and_tasks() -> str:
    out = []
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.append(f"thread {names.get(ident, ident)}:\n")
        out.extend(traceback.format_stack(frame))
    for task in asyncio.all_tasks():
        out.append(f"\ntask {task.get_name()}:\n")
        for frame in task.get_stack():
            out.extend(traceback.format_stack(frame, limit=1))
    return "".join(out)


class PProf:
    """After start, `endpoint` is the bound host:port."""

    def __init__(self, settings: Settings, config: Config) -> None:
        self.config = config
        self.log = settings.logger
        self.endpoint: str | None = None
        self._server: HttpServer | None = None
        self._whole_run: _Sampler | None = None

    async def start(self, host: Host) -> None:
        app = web.Application()
        app.router.add_get("/debug/pprof/profile", self._profile)
        app.router.add_get("/debug/pprof/threads", self._threads)
        self._server = HttpServer(app, self.config.endpoint, None)
        self.endpoint = await self._server.start()
        if self.config.save_to_file:
            self._whole_run = _Sampler(self.config.rate).start()
        self.log.info("pprof served", extra={"kv": {"endpoint": self.endpoint}})

    async def _profile(self, request: web.Request) -> web.Response:
        text = request.query.get("seconds", "30")
        if not text.isdigit() or not 0 < int(text) <= _MAX_SECONDS:
            raise web.HTTPBadRequest(text=f"seconds: a whole number from 1 to {_MAX_SECONDS}")
        sampler = _Sampler(self.config.rate).start()
        try:
            await asyncio.sleep(int(text))
        finally:
            folded = await asyncio.to_thread(sampler.stop)
        return web.Response(text=folded)

    async def _threads(self, _request: web.Request) -> web.Response:
        return web.Response(text=_threads_and_tasks())

    async def shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()
        if self._whole_run is not None:
            folded = await asyncio.to_thread(self._whole_run.stop)
            self._whole_run = None
            try:
                await asyncio.to_thread(Path(self.config.save_to_file).write_text, folded)
            except OSError as e:
                self.log.error(f"pprof: cannot write {self.config.save_to_file}: {e.strerror}")


factory = Factory(
    kind=Kind.EXTENSION,
    type="pprof",
    config=Config,
    create=PProf,
    signals={},
    description="Samples the collector's Python stacks over HTTP, as folded flame graph input.",
)
