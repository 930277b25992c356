"""The options of the `loadbalancing` exporter, as the OTel Collector's loadbalancingexporter
names them: `routing_key`, `routing_attributes`, `protocol::otlp`, `resolver` (`static` or
`dns`) and the exporter-level `timeout`, `sending_queue` and `retry_on_failure`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from collector.core.auth import AuthConfig
from collector.core.config_types import ComponentConfig, Defaulted, Duration
from collector.core.signals import Signal
from collector.exporters.sender import QueueConfig, RetryConfig, SenderConfig, TLSClientConfig

DEFAULT_PORT = 4317

RoutingKey = Literal["traceID", "service", "resource", "metric", "streamID", "attributes"]

# The routing keys each signal supports, its default first (as upstream).
SIGNAL_KEYS: dict[Signal, tuple[str, ...]] = {
    Signal.TRACES: ("traceID", "service", "attributes"),
    Signal.METRICS: ("service", "resource", "metric", "streamID", "attributes"),
    Signal.LOGS: ("service", "traceID", "resource", "attributes"),
}


def routing_key_for(config: Config, signal: Signal) -> str:
    """The routing key `config` gives `signal`; ValueError when that signal cannot use it."""
    supported = SIGNAL_KEYS[signal]
    key = config.routing_key or supported[0]
    if key not in supported:
        raise ValueError(
            f"routing_key: {key} is not supported for {signal} (use one of {', '.join(supported)})"
        )
    return key


def check_host_port(value: str) -> str:
    """`value` as `host:port` (a host alone means port 4317); ValueError when it is not one.
    IPv6 addresses are written in brackets, like [::1]:4317."""
    text = value.strip()
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        host += bracket
        valid = bool(bracket) and (not rest or rest.startswith(":"))
        port = rest[1:]
    else:
        host, _, port = text.partition(":")
        valid = ":" not in port  # an IPv6 address needs brackets
    if not valid or host in ("", "[]"):
        raise ValueError(f"invalid endpoint {value!r}: expected host:port, like backend-1:4317")
    port = port or str(DEFAULT_PORT)
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"invalid endpoint {value!r}: the port must be 1 to 65535")
    return f"{host}:{int(port)}"


class TLSConfig(TLSClientConfig):
    insecure: bool = False
    """Connect to the backends in plain text, without TLS (default false)."""


class OTLPConfig(ComponentConfig):
    """The otlp exporter's options, used for every backend; its `endpoint` comes from the
    resolver."""

    endpoint: str = ""
    """Ignored: each backend's `host:port` comes from the resolver. Accepted so that configs
    written for the OTel Collector load."""
    tls: TLSConfig = Field(default_factory=TLSConfig)
    """TLS settings of the connections to the backends. Plain text needs `insecure: true`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Sent with every request as gRPC metadata, keys lowercased (default empty = none)."""
    auth: AuthConfig | None = None
    """Metadata added to each request by an extension, as `{authenticator:
    bearertokenauth}` (default none)."""
    compression: Literal["gzip", "none"] = "gzip"
    """Request compression: gzip (default) or none."""
    timeout: Duration = Field(5.0, ge=0)
    """Deadline of one export call to a backend, also sent to it as grpc-timeout (default 5s;
    0 = none)."""
    sending_queue: dict[str, Any] | None = None
    """Accepted for compatibility and not used: queueing happens once, in this exporter's own
    `sending_queue`, so that nothing waits in a backend's queue when that backend goes away."""
    retry_on_failure: dict[str, Any] | None = None
    """Accepted for compatibility and not used: retries follow this exporter's own
    `retry_on_failure`, and each retry routes again, so data meant for a backend that left
    goes to the key's new owner instead of waiting for the old one."""


class ProtocolConfig(ComponentConfig):
    # `otlp:` with nothing after it, as upstream's examples write it, means its defaults.
    otlp: Annotated[OTLPConfig, Defaulted] = Field(default_factory=OTLPConfig)
    """How data reaches each backend: OTLP over gRPC, with the otlp exporter's options."""


class StaticResolverConfig(ComponentConfig):
    hostnames: list[str] = Field(min_length=1)
    """The backends, as `host:port` (a host alone means port 4317). Required, at least one."""

    @field_validator("hostnames")
    @classmethod
    def _check_hostnames(cls, values: list[str]) -> list[str]:
        return [check_host_port(v) for v in values]


class DNSResolverConfig(ComponentConfig):
    hostname: str = Field(min_length=1)
    """The name whose addresses (A and AAAA records, or /etc/hosts) are the backends, like a
    Kubernetes headless service. Required."""
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    """The port to send to on every address (default 4317)."""
    interval: Duration = Field(5.0, gt=0)
    """How often the name is resolved again (default 5s)."""
    timeout: Duration = Field(1.0, gt=0)
    """Time limit of one resolution (default 1s); a failed or timed-out resolution keeps the
    backends found before."""

    @field_validator("port", mode="before")
    @classmethod
    def _port_text(cls, value: Any) -> Any:
        # Upstream's port is a string; "4317" and 4317 both work.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value


class ResolverConfig(ComponentConfig):
    static: StaticResolverConfig | None = None
    """A fixed list of backends."""
    dns: DNSResolverConfig | None = None
    """Backends from a DNS name, resolved again every `interval`."""
    k8s: dict[str, Any] | None = None
    """Not supported: use `dns` with the headless service's name."""
    aws_cloud_map: dict[str, Any] | None = None
    """Not supported: use `dns` with the Cloud Map namespace's DNS name."""

    @field_validator("k8s", "aws_cloud_map")
    @classmethod
    def _unsupported(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "not supported in coldtail: use the dns resolver with the service's DNS name"
            )
        return value

    @model_validator(mode="after")
    def _one(self) -> ResolverConfig:
        given = [name for name in ("static", "dns") if getattr(self, name) is not None]
        if not given:
            raise ValueError("no resolver specified: set static or dns")
        if len(given) > 1:
            raise ValueError("only one resolver should be specified: static or dns")
        return self


class Config(SenderConfig):
    timeout: Duration = Field(5.0, ge=0)
    """Time limit of one attempt to deliver a batch to its backends (default 5s; 0 = none).
    What is not delivered in time is routed again and retried."""
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    """In-memory queue between the pipeline and the routing; its consumers route and send
    batches concurrently."""
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)
    """Retries, with exponential backoff, of what a backend did not take. Each retry routes
    again over the current backends, and a change of the backends retries at once: data meant
    for a backend that left goes to the new owner of its key."""
    routing_key: RoutingKey | None = None
    """What decides the backend: `traceID` (traces and logs: all spans of a trace go to one
    backend), `service` (the resource's service.name), `resource` (all resource attributes;
    metrics and logs), `metric` (the metric name), `streamID` (one metric stream: resource,
    scope, metric and point attributes) or `attributes` (`routing_attributes`). Default:
    traceID for traces, service for metrics and logs."""
    routing_attributes: list[str] = Field(default_factory=list)
    """With `routing_key: attributes`, the attributes whose values make the key, looked up on
    the resource, then the scope, then the span, log record or data point; the pseudo
    attributes span.name, span.kind, log.severity and log.body name those fields. Required
    then, and only allowed then."""
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig)
    """How data is sent to each backend."""
    resolver: ResolverConfig
    """Where the list of backends comes from: `static` or `dns`. Required."""

    @model_validator(mode="after")
    def _check_attributes(self) -> Config:
        if self.routing_key == "attributes" and not self.routing_attributes:
            raise ValueError("routing_attributes must be specified when routing_key is attributes")
        if self.routing_key != "attributes" and self.routing_attributes:
            raise ValueError(
                "routing_attributes can only be used when routing_key is attributes; remove "
                "routing_attributes or set routing_key: attributes"
            )
        return self
