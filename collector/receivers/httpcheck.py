"""The `httpcheck` receiver: synthetic checks of HTTP endpoints every `collection_interval`, as
metrics under the OTel Collector's httpcheck.* names.

    httpcheck:
      collection_interval: 30s
      targets:
        - endpoint: http://127.0.0.1:8080/health
        - endpoints: [http://127.0.0.1:8081/a, http://127.0.0.1:8081/b]
          method: HEAD
          headers: {Authorization: Bearer token}

Per endpoint and check: `httpcheck.duration` (ms); `httpcheck.status`, one point per status
class (1xx to 5xx), 1 for the class of the response's status and 0 for the others; when the
request fails (refused, timed out, bad certificate) `httpcheck.error` = 1 with the error's
message instead. `httpcheck.response.size` (bytes) is off by default.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping

import aiohttp
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from pydantic import Field, field_validator, model_validator

from collector.core import tasks
from collector.core.component import Factory, Host, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration
from collector.core.consumer import Consumer
from collector.core.pdata import Metrics, count_items, set_attr
from collector.core.signals import Signal

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# Metric name -> enabled by default, as upstream.
_METRICS = {
    "httpcheck.duration": True,
    "httpcheck.status": True,
    "httpcheck.error": True,
    "httpcheck.response.size": False,
}


class MetricSwitch(ComponentConfig):
    enabled: bool
    """Whether the metric is reported."""


class TLSConfig(ComponentConfig):
    ca_file: str = ""
    """CA certificates (PEM) the endpoint's certificate must chain to (default: the system's)."""
    cert_file: str = ""
    """A client certificate (PEM), with key_file."""
    key_file: str = ""
    """The private key of cert_file."""
    insecure_skip_verify: bool = False
    """Accept any certificate (default false)."""


class Target(ComponentConfig):
    endpoint: str = ""
    """A URL to check."""
    endpoints: list[str] = Field(default_factory=list)
    """URLs to check; with or instead of `endpoint`."""
    method: str = "GET"
    """The HTTP method (default GET)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers sent with each check."""
    timeout: Duration = Field(10.0, gt=0)
    """How long a check may take before it counts as an error (default 10s)."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS for https endpoints."""

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _some_endpoint(self) -> Target:
        urls = self.urls()
        if not urls:
            raise ValueError("a target needs an endpoint or endpoints")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoint {url!r} must be an http:// or https:// URL")
        return self

    def urls(self) -> list[str]:
        return ([self.endpoint] if self.endpoint else []) + list(self.endpoints)


class Config(ComponentConfig):
    targets: list[Target] = Field(min_length=1)
    """The endpoints to check. Required."""
    collection_interval: Duration = Field(60.0, gt=0)
    """How often every endpoint is checked (default 1m)."""
    initial_delay: Duration = Field(1.0, ge=0)
    """Wait before the first checks (default 1s)."""
    metrics: dict[str, MetricSwitch] = Field(default_factory=dict)
    """Turn metrics on or off: `{httpcheck.response.size: {enabled: true}}`. On by default:
    httpcheck.duration, httpcheck.status, httpcheck.error; off: httpcheck.response.size."""

    @field_validator("metrics")
    @classmethod
    def _known(cls, value: dict[str, MetricSwitch]) -> dict[str, MetricSwitch]:
        for name in value:
            if name not in _METRICS:
                raise ValueError(f"unknown metric {name!r}; known: {', '.join(_METRICS)}")
        return value

    def enabled(self, name: str) -> bool:
        switch = self.metrics.get(name)
        return switch.enabled if switch is not None else _METRICS[name]


def _ssl(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class _Check:
    """One endpoint's result."""

    def __init__(self, url: str, method: str) -> None:
        self.url, self.method = url, method
        self.status = 0
        self.error = ""
        self.duration_ms = 0
        self.size = 0


class HttpCheckReceiver:
    def __init__(self, settings: Settings, config: Config, next: Mapping[Signal, Consumer]) -> None:
        self.config = config
        self.next = next[Signal.METRICS]
        self.log = settings.logger
        self._start_ns = time.time_ns()
        self._task: asyncio.Task | None = None
        self._sessions: list[tuple[Target, aiohttp.ClientSession]] = []
        self._accepted, self._refused = settings.telemetry.receiver_counters(
            Signal.METRICS, str(settings.id), "http"
        )

    async def start(self, host: Host) -> None:
        self._start_ns = time.time_ns()
        for target in self.config.targets:
            secure = any(url.startswith("https://") for url in target.urls())
            connector = aiohttp.TCPConnector(ssl=_ssl(target.tls) if secure else False)
            self._sessions.append((target, aiohttp.ClientSession(connector=connector)))
        self._task = asyncio.create_task(self._run(), name="httpcheck")

    async def shutdown(self) -> None:
        await tasks.cancel([self._task])
        self._task = None
        for _, session in self._sessions:
            await session.close()
        self._sessions.clear()

    async def _run(self) -> None:
        await asyncio.sleep(self.config.initial_delay)
        while True:
            started = time.monotonic()
            batch = await self.check()
            items = count_items(batch)
            try:
                await self.next.consume(batch)
                self._accepted.inc(items)
            except Exception as e:  # a refused reading must not stop the checks
                self._refused.inc(items)
                self.log.warning(f"httpcheck: reading not accepted by the pipeline: {e}")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.config.collection_interval - elapsed))

    async def check(self) -> Metrics:
        """Check every endpoint at once; one batch of their results."""
        jobs = [
            self._one(session, target, url)
            for target, session in self._sessions
            for url in target.urls()
        ]
        return self._batch(list(await asyncio.gather(*jobs)))

    async def _one(self, session: aiohttp.ClientSession, target: Target, url: str) -> _Check:
        result = _Check(url, target.method)
        started = time.monotonic()
        try:
            async with session.request(
                target.method,
                url,
                headers=target.headers,
                timeout=aiohttp.ClientTimeout(total=target.timeout),
                allow_redirects=True,
            ) as response:
                result.size = len(await response.read())
                result.status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            result.error = str(e) or type(e).__name__
        result.duration_ms = round((time.monotonic() - started) * 1000)
        return result

    def _batch(self, checks: list[_Check]) -> Metrics:
        now = time.time_ns()
        batch = Metrics()
        sm = batch.resource_metrics.add().scope_metrics.add()
        sm.scope.name = "coldtail/httpcheck"
        enabled = self.config.enabled

        def metric(name: str, unit: str, description: str):
            m = sm.metrics.add()
            m.name, m.unit, m.description = name, unit, description
            return m

        if enabled("httpcheck.duration"):
            m = metric("httpcheck.duration", "ms", "Measures the duration of the HTTP check.")
            for c in checks:
                _point(m.gauge.data_points.add(), now, None, c.duration_ms, {"http.url": c.url})
        answered = [c for c in checks if not c.error]
        if enabled("httpcheck.status") and answered:
            m = metric(
                "httpcheck.status",
                "1",
                "1 if the check resulted in status_code matching the status_class, otherwise 0.",
            )
            m.sum.aggregation_temporality, m.sum.is_monotonic = _CUMULATIVE, False
            for c in answered:
                actual = f"{c.status // 100}xx"
                for status_class in _CLASSES:
                    attrs = {
                        "http.url": c.url,
                        "http.status_code": c.status,
                        "http.method": c.method,
                        "http.status_class": status_class,
                    }
                    value = int(status_class == actual)
                    _point(m.sum.data_points.add(), now, self._start_ns, value, attrs)
        failed = [c for c in checks if c.error]
        if enabled("httpcheck.error") and failed:
            m = metric("httpcheck.error", "{error}", "Records errors occurring during HTTP check.")
            m.sum.aggregation_temporality, m.sum.is_monotonic = _CUMULATIVE, False
            for c in failed:
                attrs = {"http.url": c.url, "error.message": c.error}
                _point(m.sum.data_points.add(), now, self._start_ns, 1, attrs)
        if enabled("httpcheck.response.size") and answered:
            m = metric("httpcheck.response.size", "By", "Size of response body in bytes.")
            for c in answered:
                _point(m.gauge.data_points.add(), now, None, c.size, {"http.url": c.url})
        return batch


def _point(point, now: int, start: int | None, value: int, attrs: dict) -> None:
    point.time_unix_nano, point.as_int = now, value
    if start is not None:
        point.start_time_unix_nano = start
    for key, v in attrs.items():
        set_attr(point.attributes, key, v)


factory = Factory(
    kind=Kind.RECEIVER,
    type="httpcheck",
    aliases=("http_check",),
    config=Config,
    create=HttpCheckReceiver,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Checks HTTP endpoints on an interval: their status class, duration and errors.",
)
