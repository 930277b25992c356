"""The scrape loops: per job, discovery keeps the target set current; per target, a loop
scrapes on the job's interval (spread over it, as Prometheus spreads targets), translates the
exposition off the event loop and hands one batch per scrape to the pipeline, with the
scrape's own gauges (`up`, `scrape_duration_seconds`, ...)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
import time
import zlib
from collections.abc import Mapping, Sequence

import aiohttp

from collector.core import tasks
from collector.core.component import Host, Settings
from collector.core.consumer import Consumer
from collector.core.pdata import count_items
from collector.core.signals import Signal
from collector.receivers.prometheus.config import Config, ScrapeConfig
from collector.receivers.prometheus.relabel import compile_rules
from collector.receivers.prometheus.targets import (
    Group,
    ScrapeTarget,
    build_targets,
    file_stamp,
    parse_groups,
    read_file_groups,
)
from collector.receivers.prometheus.translate import (
    Limits,
    ScrapeError,
    Target,
    TargetState,
    add_gauges,
)

_ACCEPT = {
    "OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0",
    "OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
    "PrometheusText1.0.0": "text/plain;version=1.0.0",
    "PrometheusText0.0.4": "text/plain;version=0.0.4",
}
_FILE_CHECK = 5.0  # seconds between looks at file_sd files for changes


def accept_header(protocols: Sequence[str]) -> str:
    """The Accept header asking for `protocols` in order of preference."""
    readable = [_ACCEPT[p] for p in protocols if p in _ACCEPT]
    parts = [f"{media};q={max(0.2, 1 - 0.1 * i):.1f}" for i, media in enumerate(readable)]
    return ",".join([*parts, "*/*;q=0.1"])


class _Job:
    """One scrape config with its defaults resolved and its HTTP session."""

    def __init__(self, config: Config, job: ScrapeConfig) -> None:
        g = config.config.global_
        self.config = job
        self.interval = job.scrape_interval or g.scrape_interval
        self.timeout = job.scrape_timeout or min(g.scrape_timeout, self.interval)
        self.rules = compile_rules(job.relabel_configs)
        self.metric_rules = compile_rules(job.metric_relabel_configs)
        self.limits = Limits(
            job.sample_limit or g.sample_limit,
            job.label_limit or g.label_limit,
            job.label_name_length_limit or g.label_name_length_limit,
            job.label_value_length_limit or g.label_value_length_limit,
        )
        self.body_limit = job.body_size_limit if job.body_size_limit is not None else 0
        self.body_limit = self.body_limit or g.body_size_limit
        self.target_limit = job.target_limit or g.target_limit
        self.accept = accept_header(job.scrape_protocols or g.scrape_protocols or [])
        self.openmetrics_fallback = (job.fallback_scrape_protocol or "").startswith("OpenMetrics")
        self.session: aiohttp.ClientSession | None = None

    def open(self) -> aiohttp.ClientSession:
        tls = self.config.tls_config
        context: ssl.SSLContext | bool = False
        if self.config.scheme == "https" or tls.ca_file or tls.cert_file:
            context = ssl.create_default_context(cafile=tls.ca_file or None)
            if tls.cert_file:
                context.load_cert_chain(tls.cert_file, tls.key_file or None)
            if tls.insecure_skip_verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if tls.min_version:
                context.minimum_version = ssl.TLSVersion[
                    "TLSv1_2" if tls.min_version == "TLS12" else "TLSv1_3"
                ]
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            headers={"User-Agent": "coldtail", "Accept-Encoding": "gzip"},
        )
        return self.session

    def headers(self) -> dict[str, str]:
        """Per-scrape headers; secrets in files are read each time, so rotation needs no
        restart."""
        c = self.config
        headers = {
            "Accept": self.accept,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{self.timeout:g}",
        }
        if c.basic_auth is not None:
            password = c.basic_auth.password.get_secret_value() or _read(c.basic_auth.password_file)
            pair = f"{c.basic_auth.username}:{password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif c.authorization is not None:
            credentials = c.authorization.credentials.get_secret_value() or _read(
                c.authorization.credentials_file
            )
            headers["Authorization"] = f"{c.authorization.type} {credentials}"
        elif c.bearer_token.get_secret_value() or c.bearer_token_file:
            token = c.bearer_token.get_secret_value() or _read(c.bearer_token_file)
            headers["Authorization"] = f"Bearer {token}"
        return headers


def _read(path: str) -> str:
    if not path:
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class PrometheusReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self._jobs = [_Job(config, job) for job in config.config.scrape_configs]
        self._tasks: list[asyncio.Task] = []
        self._loops: dict[tuple[str, ScrapeTarget], asyncio.Task] = {}
        self._logged: set[tuple[str, str]] = set()
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), "http"
        )
        self._start_regex = (
            re.compile(config.start_time_metric_regex) if config.use_start_time_metric else None
        )

    async def start(self, host: Host) -> None:
        for job in self._jobs:
            job.open()
            self._tasks.append(
                asyncio.create_task(self._discover(job), name=f"prometheus {job.config.job_name}")
            )

    async def shutdown(self) -> None:
        await tasks.cancel([*self._tasks, *self._loops.values()])
        self._tasks.clear()
        self._loops.clear()
        for job in self._jobs:
            if job.session is not None:
                await job.session.close()

    # --- discovery -------------------------------------------------------------------------

    async def _discover(self, job: _Job) -> None:
        c = job.config
        static = [
            Group(tuple(s.targets), tuple(sorted(s.labels.items()))) for s in c.static_configs
        ]
        files: dict[int, list[Group]] = {}
        stamps: dict[int, tuple] = {}
        fetched: dict[int, list[Group]] = {}
        next_read: dict[tuple[str, int], float] = {}
        while True:
            now = time.monotonic()
            for i, sd in enumerate(c.file_sd_configs):
                stamp = await asyncio.to_thread(file_stamp, sd)
                if stamp != stamps.get(i) or now >= next_read.get(("file", i), 0):
                    groups, errors = await asyncio.to_thread(read_file_groups, sd)
                    for error in errors:
                        self._warn_once(c.job_name, f"file_sd_configs: {error}")
                    if not errors or i not in files:
                        files[i] = groups
                    stamps[i] = stamp
                    next_read[("file", i)] = now + sd.refresh_interval
            for i, http in enumerate(c.http_sd_configs):
                if now >= next_read.get(("http", i), 0):
                    try:
                        fetched[i] = await self._http_groups(job, http.url)
                    except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                        self._warn_once(c.job_name, f"http_sd_configs {http.url}: {e}")
                    next_read[("http", i)] = now + http.refresh_interval
            groups = static + [g for gs in files.values() for g in gs]
            groups += [g for gs in fetched.values() for g in gs]
            targets, errors = build_targets(c, job.interval, job.timeout, groups, job.rules)
            for error in errors:
                self._warn_once(c.job_name, error)
            if job.target_limit and len(targets) > job.target_limit:
                self._warn_once(
                    c.job_name,
                    f"target_limit exceeded: {len(targets)} targets > {job.target_limit}; "
                    "none of the job's targets is scraped",
                )
                targets = []
            await self._sync(job, targets)
            if not c.file_sd_configs and not c.http_sd_configs:
                return  # static targets never change
            intervals = [_FILE_CHECK] * bool(c.file_sd_configs)
            intervals += [h.refresh_interval for h in c.http_sd_configs]
            await asyncio.sleep(min(intervals))

    async def _http_groups(self, job: _Job, url: str) -> list[Group]:
        assert job.session is not None
        timeout = aiohttp.ClientTimeout(total=30)
        async with job.session.get(url, timeout=timeout) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            data = await response.json(content_type=None)
        return parse_groups(data, url, {"__meta_url": url})

    async def _sync(self, job: _Job, targets: list[ScrapeTarget]) -> None:
        name = job.config.job_name
        wanted = {(name, t) for t in targets}
        for key in [k for k in self._loops if k[0] == name and k not in wanted]:
            self._loops.pop(key).cancel()  # its loop marks its series stale as it ends
        for key in wanted:
            if key not in self._loops:
                self._loops[key] = asyncio.create_task(
                    self._scrape_loop(job, key[1]), name=f"scrape {key[1].url}"
                )

    # --- scraping --------------------------------------------------------------------------

    async def _scrape_loop(self, job: _Job, target: ScrapeTarget) -> None:
        state = TargetState()
        meta = Target(
            labels=dict(target.labels),
            scheme=target.url.split(":", 1)[0],
            honor_labels=job.config.honor_labels,
            honor_timestamps=job.config.honor_timestamps,
            metric_rules=job.metric_rules,
            limits=job.limits,
            trim_suffixes=self.config.trim_metric_suffixes,
            start_time_metric=self._start_regex,
        )
        # Targets are spread over the interval by a hash of their identity, so that many targets
        # are not all scraped at once, and a restart keeps each one's phase.
        key = f"{target.url}{target.labels}".encode()
        offset = zlib.crc32(key) / 2**32 * target.interval
        next_at = time.monotonic() + offset
        try:
            while True:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await self._scrape(job, target, meta, state)
                next_at += target.interval
                if next_at < time.monotonic():  # fell behind: skip missed ticks
                    skipped = (time.monotonic() - next_at) // target.interval + 1
                    next_at += skipped * target.interval
        except asyncio.CancelledError:
            if state.last_series:
                with contextlib.suppress(Exception):
                    await self._deliver(state.stale(meta, time.time_ns()), target)
            raise

    async def _scrape(self, job: _Job, target: ScrapeTarget, meta: Target, state) -> None:
        started = time.monotonic()
        now_ns = time.time_ns()
        extra = {}
        try:
            body, content_type = await self._fetch(job, target)
            openmetrics = content_type.startswith("application/openmetrics-text") or (
                not content_type.startswith("text/plain") and job.openmetrics_fallback
            )
            text = body.decode("utf-8")
            batch, stats = await asyncio.to_thread(state.translate, text, openmetrics, meta, now_ns)
            up, scraped, kept, added = 1.0, stats.scraped, stats.kept, stats.added
            extra = {"scrape_body_size_bytes": float(len(body))}
            if (target.url, "down") in self._logged:
                self._logged.discard((target.url, "down"))
                self.log.info(f"prometheus: {target.url} is up again")
        except (TimeoutError, ScrapeError, aiohttp.ClientError, UnicodeDecodeError) as e:
            reason = str(e) or type(e).__name__
            self._warn_once(
                target.url, "down", f"prometheus: scraping {target.url} failed: {reason}"
            )
            batch = state.stale(meta, now_ns)
            up, scraped, kept, added = 0.0, 0, 0, 0
        gauges = {
            "up": up,
            "scrape_duration_seconds": time.monotonic() - started,
            "scrape_samples_scraped": float(scraped),
            "scrape_samples_post_metric_relabeling": float(kept),
            "scrape_series_added": float(added),
        }
        if self.config.report_extra_scrape_metrics:
            gauges["scrape_timeout_seconds"] = target.timeout
            gauges["scrape_sample_limit"] = float(job.limits.sample_limit)
            gauges["scrape_body_size_bytes"] = extra.get("scrape_body_size_bytes", 0.0)
        attrs = {k: v for k, v in target.labels if k not in ("job", "instance")}
        add_gauges(batch, gauges, attrs, now_ns)
        await self._deliver(batch, target)

    async def _fetch(self, job: _Job, target: ScrapeTarget) -> tuple[bytes, str]:
        assert job.session is not None
        server_name = job.config.tls_config.server_name or None
        async with job.session.get(
            target.url,
            headers=job.headers(),
            timeout=aiohttp.ClientTimeout(total=target.timeout),
            allow_redirects=job.config.follow_redirects,
            server_hostname=server_name if target.url.startswith("https") else None,
        ) as response:
            if response.status != 200:
                raise ScrapeError(f"HTTP {response.status}")
            limit = job.body_limit
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if limit and len(body) > limit:
                    raise ScrapeError(f"body_size_limit exceeded: more than {limit} bytes")
            return bytes(body), response.headers.get("Content-Type", "")

    async def _deliver(self, batch, target: ScrapeTarget) -> None:
        items = count_items(batch)
        try:
            await self.next.consume(batch)
            self._accepted.inc(items)
            self._logged.discard((target.url, "refused"))
        except Exception as e:  # the pipeline refusing one scrape must not stop the loop
            self._refused.inc(items)
            self._warn_once(
                target.url, "refused", f"prometheus: the pipeline refused a scrape: {e}"
            )

    def _warn_once(self, scope: str, kind: str, message: str | None = None) -> None:
        """Log `message` once until the condition clears (a target down, a bad file)."""
        if message is None:
            message, kind = f"prometheus job {scope}: {kind}", kind
        if (scope, kind) not in self._logged:
            self._logged.add((scope, kind))
            self.log.warning(message)
