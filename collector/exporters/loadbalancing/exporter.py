"""The `loadbalancing` exporter: each batch cut by routing key (routing.py), each key sent to
its owner among the resolved backends (ring.py, resolver.py), each backend over OTLP/gRPC
(member.py).

Queueing is the shared sender's (`sending_queue`); retries and time limits are done here, for
the parts of a batch that a backend did not take. Every retry routes those parts again over the
backends known then, and a change of the backends ends the wait at once. So data meant for a
backend that went away is delivered to the new owner of its key instead of being dropped or
waiting for the old one, and what other backends already took is never sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from collector.core.auth import ClientAuthenticator, client_authenticator
from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import format_duration
from collector.core.consumer import PermanentError, RetryableError
from collector.core.health import ExportFailures
from collector.core.pdata import Encoded, count_items
from collector.core.signals import ITEM_NAMES, Signal
from collector.exporters.loadbalancing.config import Config, routing_key_for
from collector.exporters.loadbalancing.member import Member
from collector.exporters.loadbalancing.resolver import (
    DNSResolver,
    Lookup,
    StaticResolver,
    system_lookup,
)
from collector.exporters.loadbalancing.ring import Ring
from collector.exporters.loadbalancing.routing import Router, router
from collector.exporters.sender import Backoff, Exporter, RetryConfig

# Once shutting down, retries wait at most this long: the shutdown timeout is the budget left.
_SHUTDOWN_RETRY_S = 0.5
_LATENCY_BUCKETS_MS = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class _Metrics:
    """The OTel Collector's own metrics of the load balancer, per exporter."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.resolutions = Counter(
            "otelcol_loadbalancer_num_resolutions",
            "Number of times the resolver has triggered new resolutions.",
            ["exporter", "resolver", "success"],
            registry=registry,
        )
        self.backends = Gauge(
            "otelcol_loadbalancer_num_backends",
            "Current number of backends in use.",
            ["exporter", "resolver"],
            registry=registry,
        )
        self.updates = Counter(
            "otelcol_loadbalancer_num_backend_updates",
            "Number of times the list of backends was updated.",
            ["exporter", "resolver"],
            registry=registry,
        )
        self.latency = Histogram(
            "otelcol_loadbalancer_backend_latency",
            "Response latency in ms for the backends.",
            ["exporter", "endpoint"],
            buckets=_LATENCY_BUCKETS_MS,
            registry=registry,
        )
        self.outcome = Counter(
            "otelcol_loadbalancer_backend_outcome",
            "Number of successes and failures for each endpoint.",
            ["exporter", "endpoint", "success"],
            registry=registry,
        )

    def forget(self, exporter: str, endpoint: str) -> None:
        """Drop a departed backend's series: the label sets stay bounded under churn."""
        for metric, values in (
            (self.latency, (exporter, endpoint)),
            (self.outcome, (exporter, endpoint, "true")),
            (self.outcome, (exporter, endpoint, "false")),
        ):
            with contextlib.suppress(KeyError):
                metric.remove(*values)


@dataclass
class _Outcome:
    """What one attempt left: parts to route again, and items given up on."""

    retry: list = field(default_factory=list)
    error: RetryableError | None = None  # why the last part to retry failed
    rejected: int = 0
    permanent: PermanentError | None = None


def _queue_only(config: Config) -> Config:
    """`config` as the shared sender takes it: only the queue; no retries or time limit, as
    those happen here, per backend."""
    no_retries = RetryConfig(enabled=False)
    return config.model_copy(update={"timeout": 0.0, "retry_on_failure": no_retries})


class LoadBalancingExporter(Exporter[Config]):
    """`resolver` (after start) is the running resolver; a static one takes new hostnames in
    process with `update`. `dns_lookup` resolves the dns resolver's name (the system's
    resolver unless replaced before start)."""

    def __init__(self, settings: Settings, config: Config, signal: Signal) -> None:
        super().__init__(settings, _queue_only(config), signal)
        self.config = config
        self.dns_lookup: Lookup = system_lookup
        self.resolver: StaticResolver | DNSResolver | None = None
        self._id = str(settings.id)
        self._items = ITEM_NAMES[signal].replace("_", " ")
        self._metrics = settings.telemetry.metric_set(_Metrics)
        self._failures = settings.shared.get(ExportFailures)
        self._router: Router | None = None
        self._auth: ClientAuthenticator | None = None
        self._tls: ssl.SSLContext | None = None
        self._ring = Ring()
        self._members: dict[str, Member] = {}
        self._leaving: set[Member] = set()
        self._changed = asyncio.Event()  # set (and replaced) when the backends change
        self._closing = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self, host) -> None:
        cfg = self.config
        self._router = router(
            self.signal, routing_key_for(cfg, self.signal), cfg.routing_attributes
        )
        self._auth = client_authenticator(host, cfg.protocol.otlp.auth)
        tls = cfg.protocol.otlp.tls
        self._tls = None if tls.insecure else tls.ssl_context()
        unused = {"sending_queue", "retry_on_failure"} & cfg.protocol.otlp.model_fields_set
        if unused:
            self.log.info(
                f"protocol::otlp::{' and '.join(sorted(unused))} not used: this exporter's own "
                "sending_queue and retry_on_failure apply, routing each retry again"
            )
        await super().start(host)

    async def connect(self) -> None:
        resolver_cfg = self.config.resolver
        if resolver_cfg.static is not None:
            self.resolver = StaticResolver(
                resolver_cfg.static.hostnames, self._update, self._resolved
            )
        else:
            assert resolver_cfg.dns is not None
            self.resolver = DNSResolver(
                resolver_cfg.dns, self._update, self._resolved, self.log, self.dns_lookup
            )
        await self.resolver.start()

    async def shutdown(self) -> None:
        self._closing.set()  # retries waiting in their backoff try again at once
        await super().shutdown()

    async def disconnect(self) -> None:
        if self.resolver is not None:
            await self.resolver.shutdown()
        members = [*self._members.values(), *self._leaving]
        self._members.clear()
        self._leaving.clear()
        for member in members:
            await member.close()

    # --- backends -------------------------------------------------------------------------

    def _resolved(self, success: bool) -> None:
        assert self.resolver is not None
        kind, result = self.resolver.kind, "true" if success else "false"
        self._metrics.resolutions.labels(self._id, kind, result).inc()

    def _update(self, endpoints: list[str]) -> None:
        """The resolver's latest list: start sending to new backends, let departed ones finish
        what they are sending, and wake the retries waiting to route again."""
        ring = Ring(endpoints)
        old = set(self._ring.members)
        added, removed = set(ring.members) - old, old - set(ring.members)
        if not added and not removed:
            return
        otlp = self.config.protocol.otlp
        for endpoint in added:
            self._members[endpoint] = Member(endpoint, otlp, self.signal, self._tls, self._auth)
        for endpoint in removed:
            member = self._members.pop(endpoint)
            member.retire()
            self._leaving.add(member)
            self._metrics.forget(self._id, endpoint)
        self._leaving = {m for m in self._leaving if not m.closed}
        self._ring = ring
        assert self.resolver is not None
        self._metrics.updates.labels(self._id, self.resolver.kind).inc()
        self._metrics.backends.labels(self._id, self.resolver.kind).set(len(ring))
        self.log.info(
            f"backends: {', '.join(ring.members) or 'none'}"
            + (f"; added {', '.join(sorted(added))}" if added else "")
            + (f"; removed {', '.join(sorted(removed))}" if removed else "")
        )
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # --- sending --------------------------------------------------------------------------

    async def push(self, batch) -> None:
        """Deliver `batch`, each key to its owner, retrying (and routing again) what was not
        taken. Raises RetryableError when nothing was delivered in the end, PermanentError
        (with `rejected`, when only some items were not) otherwise."""
        total = count_items(batch)
        retry = self.config.retry_on_failure
        backoff = Backoff(retry)
        deadline = time.monotonic() + retry.max_elapsed_time if retry.max_elapsed_time else None
        pending, rejected, permanent = [batch], 0, None
        while True:
            changed = self._changed
            outcome = await self._attempt(pending)
            rejected += outcome.rejected
            permanent = outcome.permanent or permanent
            pending = outcome.retry
            if not pending:
                break
            assert outcome.error is not None
            delay = max(backoff.next(), outcome.error.retry_after or 0.0)
            if not retry.enabled or (deadline is not None and time.monotonic() + delay > deadline):
                break
            if self._closing.is_set():
                delay = min(delay, _SHUTDOWN_RETRY_S)
            waiting = sum(count_items(part) for part in pending)
            self.log.info(
                f"{waiting} {self._items} not delivered, will route again in "
                f"{format_duration(round(delay, 3))} or when the backends change: "
                f"{outcome.error}"
            )
            await self._pause(delay, changed)
        undelivered = rejected + sum(count_items(part) for part in pending)
        if not undelivered:
            return
        reason = outcome.error if pending else permanent
        if undelivered == total and permanent is None:
            raise RetryableError(f"no more retries left: {reason}")
        raise PermanentError(
            f"{undelivered} of {total} {self._items} not delivered: {reason}",
            rejected=undelivered if undelivered < total else None,
        )

    async def _pause(self, delay: float, changed: asyncio.Event) -> None:
        """Wait `delay` seconds, or less when the backends change or shutdown begins."""
        waits = [asyncio.ensure_future(changed.wait())]
        if not self._closing.is_set():
            waits.append(asyncio.ensure_future(self._closing.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def _attempt(self, pending: list) -> _Outcome:
        """Route `pending` over the current backends and send each backend its share, all at
        once, within `timeout`."""
        ring, route = self._ring, self._router
        assert route is not None, "push before start"
        if not len(ring):
            return _Outcome(pending, RetryableError("no backends: the resolver found none"))
        shares: dict[str, list] = {}
        if len(ring) == 1:
            shares[ring.members[0]] = pending
        else:
            owner = ring.lookup()
            for batch in pending:
                message = batch.decode() if isinstance(batch, Encoded) else batch
                for endpoint, part in route(message, owner).items():
                    shares.setdefault(endpoint, []).append(part)
        sends = {
            asyncio.ensure_future(self._send(self._members[endpoint], parts)): parts
            for endpoint, parts in shares.items()
        }
        if not sends:
            return _Outcome()
        try:
            _, late = await asyncio.wait(sends, timeout=self.config.timeout or None)
        except asyncio.CancelledError:
            for send in sends:
                send.cancel()
            raise
        for send in late:
            send.cancel()
        if late:
            await asyncio.wait(late)
        outcome = _Outcome()
        for send, parts in sends.items():
            error = self._failure(send, late)
            if isinstance(error, RetryableError):
                outcome.retry.extend(parts)
                outcome.error = error
            elif isinstance(error, PermanentError):
                items = sum(count_items(part) for part in parts)
                outcome.rejected += items if error.rejected is None else error.rejected
                outcome.permanent = error
        return outcome

    def _failure(self, send: asyncio.Future, late: set) -> Exception | None:
        """Why a send failed (None when it did not), as a pipeline error."""
        if send in late:
            return RetryableError(
                f"send attempt timed out after {format_duration(self.config.timeout)}"
            )
        error = send.exception()
        if error is None or isinstance(error, RetryableError | PermanentError):
            return error
        self.log.error(f"exporting failed unexpectedly: {error!r}")
        return PermanentError(f"unexpected exporter error: {error!r}")

    async def _send(self, member: Member, parts: Sequence) -> None:
        started = time.monotonic()
        success = "false"
        try:
            await member.send(parts, self.run_blocking, self.log)
            success = "true"
        finally:
            # A backend that left is no failure: what it did not take is routed again. Its
            # series are gone, and stay gone.
            if not member.retired:
                if success == "false":
                    self._failures.record()
                elapsed_ms = (time.monotonic() - started) * 1000
                self._metrics.latency.labels(self._id, member.endpoint).observe(elapsed_ms)
                self._metrics.outcome.labels(self._id, member.endpoint, success).inc()


factory = Factory(
    kind=Kind.EXPORTER,
    type="loadbalancing",
    config=Config,
    create=LoadBalancingExporter,
    signals={
        Signal.TRACES: Stability.BETA,
        Signal.METRICS: Stability.DEVELOPMENT,
        Signal.LOGS: Stability.BETA,
    },
    aliases=("load_balancing",),  # upstream's newer name
    description=(
        "Sends each trace, service, metric stream or other key to one of several OTLP/gRPC "
        "backends (static list or DNS) by consistent hashing; when the backends change, "
        "retried data goes to the key's new owner."
    ),
)
