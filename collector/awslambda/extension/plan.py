"""Which addresses the front door serves, read from the raw (unvalidated) config tree.

The collector's receivers are not imported before init ends, so their defaults for the
addresses are repeated here (collector.receivers.otlp and collector.receivers.lambda_telemetry,
their Config classes; a test keeps them in step). What this cannot make sense of is left alone
for the collector's validation to report; what Lambda would refuse is a `PlanError` here,
because it would otherwise only show as a refused subscription.
"""

from __future__ import annotations

from typing import Any

from collector.awslambda.extension.front_door import OTLP, TELEMETRY

# Where the real receivers listen once the front door holds their configured addresses.
PRIVATE_ENDPOINT = "127.0.0.1:0"

OTLP_HTTP_DEFAULT_ENDPOINT = "127.0.0.1:4318"
OTLP_DEFAULT_PATHS = {
    "traces_url_path": "/v1/traces",
    "metrics_url_path": "/v1/metrics",
    "logs_url_path": "/v1/logs",
}
# Lambda delivers Telemetry API events to this name only: it is the execution environment.
SANDBOX_HOST = "sandbox.localdomain"
TELEMETRY_DEFAULT_ENDPOINT = f"{SANDBOX_HOST}:4325"
# Hosts on which a listener receives what Lambda sends to sandbox.localdomain.
_SANDBOX_LISTEN_HOSTS = frozenset({SANDBOX_HOST, "", "0.0.0.0", "::", "[::]"})
TELEMETRY_SCHEMA_VERSION = "2022-12-13"
# What Lambda Managed Instances require; backward compatible, but not what the receiver's event
# handling was written against, so only used there.
TELEMETRY_SCHEMA_VERSION_MANAGED = "2025-01-29"
TELEMETRY_DEFAULT_TYPES = ("platform", "function")
TELEMETRY_DEFAULT_BUFFERING = {"max_items": 1000, "max_bytes": 262144, "timeout_ms": 25}
# Lambda's limits: (least, most).
TELEMETRY_BUFFERING_LIMITS = {
    "max_items": (1000, 10000),
    "max_bytes": (262144, 1048576),
    "timeout_ms": (25, 30000),
}
_TELEMETRY_TYPES = frozenset({"platform", "function", "extension"})


class PlanError(ValueError):
    """A receiver's address or subscription that Lambda would refuse; the message starts with
    the key path, as the collector's config errors do."""


class Listener:
    """A receiver address the front door serves: `name` is the receiver's id."""

    __slots__ = ("bound", "endpoint", "kind", "name", "paths", "subscription")

    def __init__(
        self, name: str, kind: str, endpoint: str, paths: tuple[str, ...] = (), subscription=None
    ) -> None:
        self.name = name
        self.kind = kind
        self.endpoint = endpoint
        self.paths = paths
        self.subscription: dict | None = subscription  # Telemetry API subscription, sans URI
        self.bound = ""

    def destination(self) -> dict[str, str]:
        """The Telemetry API destination of this listener once bound."""
        port = self.bound.rpartition(":")[2]
        return {"protocol": "HTTP", "URI": f"http://{SANDBOX_HOST}:{port}"}


def plan(raw: dict) -> tuple[list[Listener], dict, list[PlanError]]:
    """The addresses of the receivers the pipelines use that the front door serves, the raw
    tree with those receivers moved to PRIVATE_ENDPOINT, and the errors of receivers left out
    (a `lambda_telemetry` receiver Lambda would refuse to deliver to)."""
    receivers = raw.get("receivers")
    if not isinstance(receivers, dict):
        return [], raw, []
    receivers = dict(receivers)
    listeners: list[Listener] = []
    errors: list[PlanError] = []
    for rid in _used_receivers(raw):
        type_ = rid.strip().partition("/")[0]
        config = receivers.get(rid, ...)
        if config is ... or type_ not in ("otlp", "lambda_telemetry"):
            continue
        config = {} if config is None else config
        if not isinstance(config, dict):
            continue
        if type_ == "otlp":
            listener, config = _otlp(rid, config)
        else:
            try:
                listener, config = _telemetry(rid, config)
            except PlanError as e:
                errors.append(e)
                continue
        if listener is not None:
            listeners.append(listener)
            receivers[rid] = config
    return listeners, {**raw, "receivers": receivers}, errors


def _otlp(rid: str, config: dict) -> tuple[Listener | None, dict]:
    protocols = config.get("protocols")
    if not isinstance(protocols, dict) or "http" not in protocols:
        return None, config
    http = protocols["http"]
    http = {} if http is None else http
    if not isinstance(http, dict):
        return None, config
    endpoint = str(http.get("endpoint", OTLP_HTTP_DEFAULT_ENDPOINT))
    paths = tuple(_url_path(http.get(k), d) for k, d in OTLP_DEFAULT_PATHS.items())
    http = {**http, "endpoint": PRIVATE_ENDPOINT}
    return Listener(rid, OTLP, endpoint, paths), {
        **config,
        "protocols": {**protocols, "http": http},
    }


def _telemetry(rid: str, config: dict) -> tuple[Listener, dict]:
    path = f"receivers::{rid}"
    endpoint = str(config.get("endpoint", TELEMETRY_DEFAULT_ENDPOINT))
    host = endpoint.rpartition(":")[0].strip("[]")
    if host not in _SANDBOX_LISTEN_HOSTS:
        raise PlanError(
            f"{path}::endpoint: {endpoint!r}: Lambda delivers Telemetry API events only to "
            f"http://{SANDBOX_HOST}:PORT, which a listener on {host!r} does not receive; "
            f"use {SANDBOX_HOST}:PORT"
        )
    types = config.get("types") or list(TELEMETRY_DEFAULT_TYPES)
    if not isinstance(types, list) or not set(map(str, types)) <= _TELEMETRY_TYPES:
        raise PlanError(f"{path}::types: {types!r}: Lambda accepts {sorted(_TELEMETRY_TYPES)}")
    buffering = {**TELEMETRY_DEFAULT_BUFFERING, **_map(config.get("buffering"))}
    for key, (least, most) in TELEMETRY_BUFFERING_LIMITS.items():
        value = buffering.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            raise PlanError(
                f"{path}::buffering::{key}: {value!r}: Lambda accepts {least} to {most}"
            )
    subscription = {
        "schemaVersion": TELEMETRY_SCHEMA_VERSION,
        "types": list(types),
        "buffering": {
            "maxItems": buffering["max_items"],
            "maxBytes": buffering["max_bytes"],
            "timeoutMs": buffering["timeout_ms"],
        },
    }
    listener = Listener(rid, TELEMETRY, endpoint, subscription=subscription)
    return listener, {**config, "endpoint": PRIVATE_ENDPOINT}


def _map(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _used_receivers(raw: dict) -> list[str]:
    used: list[str] = []
    for pipeline in _map(_map(raw.get("service")).get("pipelines")).values():
        receivers = _map(pipeline).get("receivers")
        for rid in receivers if isinstance(receivers, list) else []:
            if isinstance(rid, str) and rid not in used:
                used.append(rid)
    return used


def _url_path(value: Any, default: str) -> str:
    if not isinstance(value, str):
        return default
    return value if value.startswith("/") else "/" + value
