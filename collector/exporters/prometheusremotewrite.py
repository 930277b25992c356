"""Exporter `prometheusremotewrite`: Prometheus remote write 1.0 through the shared sender chain.

Each batch becomes one or more snappy-compressed protobuf WriteRequests (split to stay under
`max_batch_size_bytes`), with series translated as collector.exporters.promnames describes.
Remote write carries cumulative values only: delta sums and histograms are left out with a
logged note and reported as rejected, as in the Collector; so are exponential histograms.
A point flagged "no recorded value" is sent as a staleness marker.

Responses: 2xx is success; 429 and 5xx are retried (honouring Retry-After), as are connection
errors; any other status is permanent. When a batch needs several requests and a later one
fails, the retry resends the earlier ones too; Prometheus accepts an identical sample twice.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp
import cramjam
from google.protobuf.message import Message
from pydantic import Field, field_validator, model_validator

from collector.core.auth import (
    AuthConfig,
    ClientAuthenticator,
    client_authenticator,
    with_auth_headers,
)
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig
from collector.core.consumer import PermanentError, RetryableError
from collector.core.signals import Signal
from collector.exporters import promnames, prompb
from collector.exporters.http_client import (
    TLSConfig,
    client_session,
    parse_retry_after,
    read_body,
)
from collector.exporters.prometheus import ResourceToTelemetryConfig
from collector.exporters.sender import Exporter, QueueConfig, SenderConfig

_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "User-Agent": "coldtail",
}
_DELTA_NOTE = "remote write carries cumulative values only; delta points are dropped"


class TargetInfoConfig(ComponentConfig):
    enabled: bool = True
    """Send one `target_info` series per resource with its attributes (default true)."""


class RemoteWriteQueueConfig(ComponentConfig):
    enabled: bool = True
    """Queue batches and send them in the background (default true)."""
    queue_size: int = Field(10_000, ge=1)
    """Most batches queued (default 10000)."""
    num_consumers: int = Field(5, ge=1)
    """Batches sent at once from the queue (default 5)."""


class ClientConfig(ComponentConfig):
    """The options of this exporter besides the sender blocks."""

    endpoint: str
    """URL of the remote-write receiver, like http://prometheus:9090/api/v1/write (required)."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS settings for https URLs."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every request (default empty = none); cannot replace the remote-write
    protocol headers."""
    auth: AuthConfig | None = None
    """Requests authorized by an extension, as `{authenticator: sigv4auth}` (default none)."""
    namespace: str = ""
    """Prefix of every metric name, joined with `_` (default empty = no prefix)."""
    external_labels: dict[str, str] = Field(default_factory=dict)
    """Labels added to every series that does not carry them already (default empty =
    none)."""
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(
        default_factory=ResourceToTelemetryConfig
    )
    """Resource attributes as labels on every series."""
    target_info: TargetInfoConfig = Field(default_factory=TargetInfoConfig)
    """The `target_info` series of each resource."""
    add_metric_suffixes: bool = True
    """Append unit suffixes (`_seconds`, `_bytes`, `_ratio`) and `_total` for counters to metric
    names (default true). When false, names are only sanitised."""
    max_batch_size_bytes: int = Field(3_000_000, ge=1)
    """Largest uncompressed WriteRequest, in bytes (default 3000000); a batch beyond it is sent
    as several requests. A single series larger than this is sent alone."""
    max_batch_request_parallelism: int = Field(5, ge=1)
    """How many of one batch's WriteRequests are sent at once (default 5)."""
    write_buffer_size: int = Field(512 * 1024, ge=0)
    """Accepted for compatibility with Collector configs: the HTTP client's buffers are its
    own (default 524288)."""
    remote_write_queue: RemoteWriteQueueConfig | None = None
    """The Collector's form of this exporter's queue; when set, it is the `sending_queue`
    (default none)."""

    @field_validator("endpoint")
    @classmethod
    def _check_url(cls, value: str) -> str:
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"invalid URL {value!r}: expected http(s)://host[:port]/path")
        return value

    _check_external_labels = field_validator("external_labels")(promnames.check_label_names)


# With the bases in this order, pydantic lists the sender blocks after the exporter's own options.
class Config(SenderConfig, ClientConfig):
    @model_validator(mode="after")
    def _remote_write_queue(self) -> Config:
        queue = self.remote_write_queue
        if queue is not None:
            if "sending_queue" in self.model_fields_set:
                raise ValueError("set either remote_write_queue or sending_queue")
            self.sending_queue = QueueConfig(
                enabled=queue.enabled,
                queue_size=queue.queue_size,
                num_consumers=queue.num_consumers,
            )
        return self


def write_requests(points: list[promnames.Point], max_bytes: int) -> list[Message]:
    """The cumulative points as WriteRequests of at most `max_bytes` (unless one series alone
    is larger). Samples of one series are merged into one TimeSeries in time order."""
    by_series: dict[tuple, list[tuple[int, float]]] = {}
    for point in points:
        timestamp_ms = point.time_ns // 1_000_000
        for name, labels, value in promnames.samples(point):
            key = (("__name__", name), *labels)
            by_series.setdefault(key, []).append((timestamp_ms, value))
    requests: list[Message] = []
    request, size = prompb.WriteRequest(), 0
    for key, samples in by_series.items():
        series = prompb.TimeSeries()
        for label, label_value in sorted(key):
            series.labels.add(name=label, value=label_value)
        for timestamp_ms, value in sorted(samples, key=lambda s: s[0]):
            series.samples.add(value=value, timestamp=timestamp_ms)
        # Each series costs its size plus a tag and length prefix of a few bytes.
        series_size = series.ByteSize() + 8
        if request.timeseries and size + series_size > max_bytes:
            requests.append(request)
            request, size = prompb.WriteRequest(), 0
        request.timeseries.append(series)
        size += series_size
    if request.timeseries:
        requests.append(request)
    return requests


class PrometheusRemoteWriteExporter(Exporter[Config]):
    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, config, signal)
        self._options = promnames.Options(
            namespace=config.namespace,
            add_metric_suffixes=config.add_metric_suffixes,
            resource_to_telemetry=config.resource_to_telemetry_conversion.enabled,
            extra_labels=config.external_labels,
            target_info=config.target_info.enabled,
        )
        self._headers = {**config.headers, **_HEADERS}
        self._auth: ClientAuthenticator | None = None
        self._session: aiohttp.ClientSession | None = None
        self._skip_log = promnames.SkipLog(self.log)

    async def start(self, host) -> None:
        self._auth = client_authenticator(host, self.config.auth)
        await super().start(host)

    async def connect(self) -> None:
        self._session = client_session(self.config.endpoint, self.config.tls)

    async def disconnect(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def push(self, batch) -> None:
        translation = promnames.translate(batch, self._options)
        points = []
        for point in translation.points:
            if point.delta:
                translation.skip(_DELTA_NOTE, point.name, 1)
            else:
                points.append(point)
        requests = write_requests(points, self.config.max_batch_size_bytes)
        # A series never spans two requests, so sending them at once keeps each in order.
        parallel = asyncio.Semaphore(self.config.max_batch_request_parallelism)

        async def send(request: Message) -> None:
            async with parallel:
                await self._post(bytes(cramjam.snappy.compress_raw(request.SerializeToString())))

        results = await asyncio.gather(*(send(r) for r in requests), return_exceptions=True)
        for result in results:  # a failed request fails the batch: retried or dropped whole
            if isinstance(result, BaseException):
                raise result
        if translation.skipped:
            self._skip_log(translation.skipped)
            raise PermanentError(
                "; ".join(f"{metric}: {reason}" for reason, metric in translation.skipped),
                rejected=translation.skipped_count,
            )

    async def _post(self, body: bytes) -> None:
        url = self.config.endpoint
        assert self._session is not None, "push before connect"
        headers = self._headers
        if self._auth is not None:
            extra = await self._auth.authorize("POST", url, headers, body)
            headers = with_auth_headers(headers, extra)
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                server_hostname=self.config.tls.server_name_override or None,
            ) as response:
                status = response.status
                text = (await read_body(response)).decode("utf-8", "replace").strip()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except (aiohttp.ClientError, OSError) as e:
            raise RetryableError(f"request to {url} failed: {e!r}") from None
        if 200 <= status < 300:
            return
        message = f"{url} responded with HTTP {status}: {text or 'no message'}"
        if status == 429 or status >= 500:
            raise RetryableError(message, retry_after=retry_after)
        raise PermanentError(message)


factory = Factory(
    kind=Kind.EXPORTER,
    type="prometheusremotewrite",
    config=Config,
    create=PrometheusRemoteWriteExporter,
    signals={Signal.METRICS: Stability.ALPHA},
    description="Sends metrics with the Prometheus remote-write 1.0 protocol.",
)
