"""What the `nats` exporter and the `nats` receiver share: the connection and stream options,
subject naming, partitioning, message ids and the JetStream stream they meet on.

Agents publish each signal's data to `<subject>.<signal>.<partition>`; gateways consume each
partition through one durable consumer. A trace's spans always land in the same partition (the
first 8 bytes of its trace id as a big-endian integer, modulo `partitions`), so one gateway
sees a whole trace, as tail sampling needs. Metrics and log records go by their resource (a
hash of its attributes), so that one source's series and records stay together, in order, on
one gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from pydantic import Field, SecretStr, field_validator

from collector.core.config_types import ComponentConfig, Duration
from collector.core.pdata import LEVELS, new_batch, resources, signal_of
from collector.core.signals import Signal

# Headers and protocol framing ride along with the payload: keep this much under max_payload.
HEADER_ROOM = 512
MSG_ID_HEADER = "Nats-Msg-Id"

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_URL_RE = re.compile(r"^(?:(?:nats|tls)://)?(?:[^@/\s]+@)?[^:/\s]+:\d{1,5}$")


class NatsStreamConfig(ComponentConfig):
    """The NATS server, the JetStream stream and the subjects agents and gateways share."""

    url: str | list[str] = "nats://127.0.0.1:4222"
    """The NATS server, `nats://host:port`, or a cluster's servers as a list or comma separated
    (default nats://127.0.0.1:4222). The client reconnects to any of them, and to servers the
    cluster announces."""
    user: str = ""
    """User name, with `password` (default empty: none)."""
    password: SecretStr = SecretStr("")
    """Password of `user` (default empty: none)."""
    token: SecretStr = SecretStr("")
    """Authentication token (default empty: none)."""
    connect_timeout: Duration = Field(2.0, gt=0)
    """Time limit of one connection attempt to one server (default 2s)."""
    stream: str = "COLDTAIL"
    """The JetStream stream (default COLDTAIL). Letters, digits, `-` and `_`."""
    subject: str = "coldtail"
    """Subject prefix: data goes to `<subject>.<signal>.<partition>`, like
    `coldtail.traces.17` (default coldtail)."""
    partitions: int = Field(64, ge=1, le=1024)
    """How many partitions each signal is cut into (default 64). Agents and gateways must agree;
    it bounds how many gateways share the work."""
    create_stream: bool = True
    """Create the stream when it is missing (default true), with file storage and the options
    below; an existing stream is used as it is."""
    replicas: int = Field(1, ge=1, le=5)
    """Copies of the stream kept by a cluster's servers when it is created (default 1; 3 for a
    3-node cluster that survives losing a node)."""
    max_age: Duration = Field(24 * 3600.0, ge=0)
    """Messages older than this are removed from a created stream (default 24h; 0 = never)."""
    max_bytes: int = Field(0, ge=0)
    """Largest size of a created stream, in bytes; the oldest messages go first (default 0 = no
    limit)."""
    duplicate_window: Duration = Field(300.0, gt=0)
    """How long the created stream remembers message ids to drop a resent copy (default 5m, the
    exporter's default `retry_on_failure.max_elapsed_time`)."""

    @field_validator("url")
    @classmethod
    def _check_urls(cls, value: str | list[str]) -> str | list[str]:
        urls = [value] if isinstance(value, str) else value
        if not urls:
            raise ValueError("at least one server is required")
        for url in urls:
            if not _URL_RE.match(url.strip()):
                raise ValueError(
                    f"invalid server {url!r}: expected nats://host:port (or tls://host:port)"
                )
        return value

    @field_validator("stream")
    @classmethod
    def _check_stream(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(f"invalid stream name {value!r}: use letters, digits, '-' and '_'")
        return value

    @field_validator("subject")
    @classmethod
    def _check_subject(cls, value: str) -> str:
        if not all(_TOKEN_RE.match(token) for token in value.split(".")):
            raise ValueError(
                f"invalid subject {value!r}: tokens of letters, digits, '-' and '_' separated "
                "by '.', without wildcards"
            )
        return value

    @property
    def servers(self) -> list[str]:
        # A string may list several, comma separated, as an environment variable would.
        urls = self.url.split(",") if isinstance(self.url, str) else self.url
        return [u.strip() if "://" in u else f"nats://{u.strip()}" for u in urls if u.strip()]


# --- subjects and partitions ---------------------------------------------------------------


def subject_of(prefix: str, signal: Signal, partition: int) -> str:
    """The subject of one signal's partition: `<prefix>.<signal>.<partition>`."""
    return f"{prefix}.{signal.value}.{partition}"


def trace_partition(trace_id: bytes, partitions: int) -> int:
    """The partition of a trace: its first 8 bytes, big-endian, modulo `partitions` (trace ids
    are random, so this spreads evenly and needs no hashing)."""
    return int.from_bytes(trace_id[:8], "big") % partitions


def resource_partition(resource, partitions: int) -> int:
    """The partition of a resource's metrics or logs: a SHA-256 of its attributes in key order
    (the same resource sent with its attributes in another order lands in the same place)."""
    digest = hashlib.sha256()
    for attr in sorted(resource.attributes, key=lambda kv: kv.key):
        digest.update(attr.key.encode())
        digest.update(b"\0")
        digest.update(attr.value.SerializeToString(deterministic=True))
        digest.update(b"\0")
    return int.from_bytes(digest.digest()[:8], "big") % partitions


def partition_batch(batch, partitions: int) -> list[tuple[int, Any]]:
    """`batch` regrouped by partition, as (partition, batch) in partition order. Each item keeps
    its resource and scope (repeated in every partition that holds items of them); spans go by
    trace id, metrics and log records by resource."""
    if partitions == 1:
        return [(0, batch)]
    signal = signal_of(batch)
    out: dict[int, Any] = {}
    if signal is not Signal.TRACES:
        for res in resources(batch):
            p = resource_partition(res.resource, partitions)
            resources(out.setdefault(p, new_batch(signal))).add().CopyFrom(res)
        return sorted(out.items())
    scopes_field, items_field = LEVELS[signal]
    for res in resources(batch):
        placed: dict[int, Any] = {}  # partition -> this resource's copy there
        for scope in getattr(res, scopes_field):
            by_partition: dict[int, list] = {}
            for span in getattr(scope, items_field):
                by_partition.setdefault(trace_partition(span.trace_id, partitions), []).append(span)
            for p, spans in by_partition.items():
                target = placed.get(p)
                if target is None:
                    target = placed[p] = resources(out.setdefault(p, new_batch(signal))).add()
                    target.resource.CopyFrom(res.resource)
                    target.schema_url = res.schema_url
                scope_out = getattr(target, scopes_field).add()
                scope_out.scope.CopyFrom(scope.scope)
                scope_out.schema_url = scope.schema_url
                getattr(scope_out, items_field).extend(spans)
    return sorted(out.items())


def message_id(subject: str, data: bytes) -> str:
    """The `Nats-Msg-Id` of a message: a SHA-256 of its subject and payload, so that the same
    data sent again (a retry) is dropped by the stream as a duplicate."""
    digest = hashlib.sha256(subject.encode())
    digest.update(b"\0")
    digest.update(data)
    return digest.hexdigest()


# --- connection and stream ---------------------------------------------------------------


def connect_options(cfg: NatsStreamConfig, name: str, log) -> dict[str, Any]:
    """nats.connect's keyword arguments for `cfg`: reconnect forever, log the connection's
    trouble on the component's logger (not its own closing)."""
    client: list[NatsClient] = []  # filled once connected

    def closed() -> bool:
        return bool(client) and client[0].is_closed

    async def on_error(error: Exception) -> None:
        if not closed():
            log.warning(f"NATS connection: {error!r}")

    async def on_disconnect() -> None:
        if not closed():
            log.warning("NATS connection lost; reconnecting")

    async def on_reconnect() -> None:
        log.info("NATS connection re-established")

    options: dict[str, Any] = dict(
        servers=cfg.servers,
        name=name,
        connect_timeout=cfg.connect_timeout,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        _client=client,
    )
    if cfg.user:
        options.update(user=cfg.user, password=cfg.password.get_secret_value())
    if cfg.token.get_secret_value():
        options["token"] = cfg.token.get_secret_value()
    return options


async def connect(cfg: NatsStreamConfig, name: str, log) -> NatsClient:
    """A connection to one of `cfg`'s servers; raises ConnectionError naming them when none
    answers."""
    options = connect_options(cfg, name, log)
    holder = options.pop("_client")
    try:
        client = await nats.connect(**options)
    except (OSError, nats.errors.Error, TimeoutError) as e:
        raise ConnectionError(
            f"cannot connect to NATS at {', '.join(cfg.servers)}: {e!r}"
        ) from None
    holder.append(client)
    return client


async def close(client: NatsClient, timeout: float = 5.0) -> None:
    """Close `client`, writing out what is buffered first, within `timeout`. A connection
    already lost (reconnecting) is closed without a fuss."""
    if client.is_closed:
        return
    try:
        async with asyncio.timeout(timeout):
            await client.close()
    except asyncio.CancelledError:
        # nats-py cancels its own waiters when closing a connection that is reconnecting;
        # only a cancellation of this task is passed on.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except (TimeoutError, OSError, nats.errors.Error):
        pass


def stream_definition(cfg: NatsStreamConfig) -> api.StreamConfig:
    """The stream `cfg` creates: file storage, every subject under the prefix."""
    return api.StreamConfig(
        name=cfg.stream,
        subjects=[f"{cfg.subject}.>"],
        storage=api.StorageType.FILE,
        num_replicas=cfg.replicas,
        retention=api.RetentionPolicy.LIMITS,
        discard=api.DiscardPolicy.OLD,
        max_age=cfg.max_age or None,
        max_bytes=cfg.max_bytes or None,
        duplicate_window=cfg.duplicate_window,
    )


async def ensure_stream(js: JetStreamContext, cfg: NatsStreamConfig, log) -> api.StreamInfo:
    """The stream's info, creating the stream first when it is missing and `create_stream`.
    Raises LookupError when it is missing otherwise, ValueError when it does not take the
    subjects."""
    try:
        info = await js.stream_info(cfg.stream)
    except nats.js.errors.NotFoundError:
        if not cfg.create_stream:
            raise LookupError(
                f"stream {cfg.stream} does not exist and create_stream is false"
            ) from None
        try:
            info = await js.add_stream(stream_definition(cfg))
            log.info(
                f"created stream {cfg.stream} (file storage, {cfg.replicas} replicas) for "
                f"{cfg.subject}.>"
            )
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(cfg.stream)  # another member created it meanwhile
    if not _covers(info.config.subjects or [], cfg.subject):
        raise ValueError(
            f"stream {cfg.stream} takes {info.config.subjects}, not {cfg.subject}.>: "
            "use another stream or subject"
        )
    return info


def _covers(stream_subjects: Iterable[str], prefix: str) -> bool:
    """Whether a stream with these subjects stores everything under `prefix`."""
    wanted = prefix.split(".")
    for subject in stream_subjects:
        *head, last = subject.split(".")
        if (
            last == ">"
            and len(head) <= len(wanted)
            and all(t in ("*", w) for t, w in zip(head, wanted, strict=False))
        ):
            return True
    return False


class Link:
    """A connection and its JetStream context, opened in the background and retried until it
    works, for components that must start while NATS is unreachable (an agent must not fail to
    start because the gateways' cluster is down). `ready` is set once the stream is there."""

    def __init__(self, cfg: NatsStreamConfig, name: str, log, max_pending: int = 4000) -> None:
        self._cfg = cfg
        self._name = name
        self._log = log
        self._max_pending = max_pending
        self.client: NatsClient | None = None
        self.js: JetStreamContext | None = None
        self.ready = asyncio.Event()
        self.error = "not connected yet"
        self._task: asyncio.Task | None = None

    def open(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._name} connect")

    async def _run(self) -> None:
        delay, warned = 0.2, False
        while True:
            try:
                if self.client is None:
                    self.client = await connect(self._cfg, self._name, self._log)
                js = self.client.jetstream(publish_async_max_pending=self._max_pending)
                await ensure_stream(js, self._cfg, self._log)
            except Exception as e:
                self.error = str(e) or repr(e)
                if not warned:
                    self._log.warning(f"NATS not ready, retrying in the background: {self.error}")
                    warned = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.js = js
            self.ready.set()
            if warned:
                self._log.info("NATS ready")
            return

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        client, self.client, self.js = self.client, None, None
        self.ready.clear()
        if client is not None:
            await close(client)
