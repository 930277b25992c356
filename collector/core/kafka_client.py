"""What the `kafka` exporter and the `kafka` receiver share: the client options of the OTel
Collector's Kafka components (`brokers`, `client_id`, `auth`, `tls`, `metadata`, ...), their
translation into librdkafka properties (confluent-kafka), the payload encodings and the bridge of
librdkafka's log lines and error callbacks into a component's logger.

confluent-kafka is imported only when a client is made, so that configs naming a Kafka
component validate where it is not installed (the Lambda layer goes without it).
"""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

from google.protobuf.message import DecodeError
from pydantic import Field, field_validator, model_validator

from collector.core import otlpjson
from collector.core.config_types import ComponentConfig, Defaulted, Duration
from collector.core.pdata import REQUEST_TYPES, Encoded, check_ids
from collector.core.signals import Signal

if TYPE_CHECKING:
    from confluent_kafka import KafkaError

DEFAULT_TOPICS = {
    Signal.TRACES: "otlp_spans",
    Signal.METRICS: "otlp_metrics",
    Signal.LOGS: "otlp_logs",
}
ENCODINGS = ("otlp_proto", "otlp_json")
# The OTel Collector's other built-in encodings, which coldtail does not read or write.
_UPSTREAM_ENCODINGS = frozenset(
    {
        "jaeger_proto",
        "jaeger_json",
        "zipkin_proto",
        "zipkin_json",
        "zipkin_thrift",
        "raw",
        "text",
        "json",
        "azure_resource_logs",
    }
)
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+(\.\d+)?$")


def check_encoding(value: str) -> str:
    """`value` if coldtail reads and writes it, else a ValueError saying what it can."""
    if value in ENCODINGS:
        return value
    if value in _UPSTREAM_ENCODINGS or value.startswith("text_"):
        raise ValueError(f"encoding {value!r} is not supported; use otlp_proto or otlp_json")
    raise ValueError(
        f"unknown encoding {value!r} (encoding extensions are not supported); "
        "use otlp_proto or otlp_json"
    )


def encode(batch, encoding: str) -> bytes:
    """A batch (message or pdata.Encoded) as a Kafka message value."""
    if encoding == "otlp_json":
        message = batch.decode() if isinstance(batch, Encoded) else batch
        return otlpjson.dumps(message).encode()
    return batch.data if isinstance(batch, Encoded) else batch.SerializeToString()


def decode(data: bytes | None, signal: Signal, encoding: str):
    """A Kafka message value as `signal`'s export request; ValueError saying why it is not one
    (including trace and span ids of the wrong length)."""
    if not data:
        raise ValueError("empty message")
    if encoding == "otlp_json":
        batch = otlpjson.parse(data, REQUEST_TYPES[signal])
        check_ids(batch)
        return batch
    try:
        batch = REQUEST_TYPES[signal].FromString(data)
    except DecodeError as e:
        raise ValueError(f"not an OTLP protobuf {signal.value} request: {e}") from None
    check_ids(batch, data)
    return batch


class TLSConfig(ComponentConfig):
    """Client TLS, as the Collector's `tls` block: present means TLS unless `insecure`."""

    insecure: bool = False
    """Connect in plain text after all (default false)."""
    ca_file: str = ""
    """PEM file of the CAs that verify the brokers (default empty = the system's trusted roots)."""
    ca_pem: str = ""
    """The same CAs as PEM text (default empty)."""
    cert_file: str = ""
    """Client certificate (PEM) for mutual TLS (default empty = none); needs `key_file`."""
    cert_pem: str = ""
    """The client certificate as PEM text (default empty); needs `key_pem`."""
    key_file: str = ""
    """Private key (PEM) of the client certificate (default empty)."""
    key_pem: str = ""
    """The private key as PEM text (default empty)."""
    insecure_skip_verify: bool = False
    """Accept any broker certificate without verifying it or its host name (default false)."""

    @model_validator(mode="after")
    def _check_pairs(self) -> TLSConfig:
        if bool(self.cert_file or self.cert_pem) != bool(self.key_file or self.key_pem):
            raise ValueError("a client certificate and its key must be set together")
        for a, b in (("ca_file", "ca_pem"), ("cert_file", "cert_pem"), ("key_file", "key_pem")):
            if getattr(self, a) and getattr(self, b):
                raise ValueError(f"set {a} or {b}, not both")
        return self


class SASLConfig(ComponentConfig):
    mechanism: str
    """PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Required."""
    username: str = ""
    """The SASL user name. Required."""
    password: str = ""
    """The SASL password. Required."""
    version: int = Field(0, ge=0, le=1)
    """The SASL handshake version, 0 or 1 (default 0); librdkafka negotiates it with the broker,
    so it is accepted for compatibility only."""
    aws_msk: dict[str, Any] | None = None
    """Not supported: the AWS_MSK_IAM_OAUTHBEARER mechanism it configures is refused."""

    @model_validator(mode="after")
    def _check(self) -> SASLConfig:
        if self.mechanism not in _SASL_MECHANISMS:
            raise ValueError(
                f"mechanism {self.mechanism!r} is not supported; use PLAIN, SCRAM-SHA-256 or "
                "SCRAM-SHA-512"
            )
        if not self.username:
            raise ValueError("username is required")
        if not self.password:
            raise ValueError("password is required")
        return self


class PlainTextConfig(ComponentConfig):
    username: str
    """The user name. Required."""
    password: str
    """The password. Required."""


class AuthConfig(ComponentConfig):
    sasl: SASLConfig | None = None
    """SASL authentication (default none)."""
    plain_text: PlainTextConfig | None = None
    """Deprecated upstream: SASL PLAIN with these credentials (default none)."""
    tls: Annotated[TLSConfig | None, Defaulted] = None
    """Deprecated upstream: the top-level `tls`, used when that is not set (default none)."""
    kerberos: dict[str, Any] | None = None
    """Not supported: Kerberos (GSSAPI) is refused with an error."""

    @model_validator(mode="after")
    def _check(self) -> AuthConfig:
        if self.kerberos is not None:
            raise ValueError("kerberos (GSSAPI) authentication is not supported; use sasl")
        if self.sasl is not None and self.plain_text is not None:
            raise ValueError("set sasl or plain_text, not both")
        return self


class MetadataRetryConfig(ComponentConfig):
    max: int = Field(3, ge=0)
    """Accepted for compatibility: librdkafka retries metadata requests on its own (default 3)."""
    backoff: Duration = Field(0.25, gt=0, le=300)
    """Wait before a failed request is retried (default 250ms)."""


class MetadataConfig(ComponentConfig):
    full: bool = True
    """Accepted for compatibility: metadata is fetched for the topics in use (default true)."""
    refresh_interval: Duration = Field(600.0, ge=0)
    """How often cluster metadata is refreshed (default 10m; 0 = only when needed)."""
    retry: MetadataRetryConfig = Field(default_factory=MetadataRetryConfig)
    """Retries of failed requests."""


class ClientConfig(ComponentConfig):
    """The options of every Kafka client, as the Collector's `configkafka.ClientConfig`."""

    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"], min_length=1)
    """Bootstrap brokers as host:port (default [localhost:9092]); a comma-separated string is
    read as a list."""
    client_id: str = "otel-collector"
    """The client id sent to the brokers, for their ACLs, quotas and logs (default
    otel-collector)."""
    protocol_version: str = ""
    """The Kafka version of the brokers, like 2.1.0 (default empty). librdkafka asks the brokers
    which protocol versions they speak; a version before 0.10 turns that off."""
    resolve_canonical_bootstrap_servers_only: bool = False
    """Resolve each broker name and use the canonical names of its addresses (default false);
    some SASL setups need it."""
    conn_idle_timeout: Duration = Field(540.0, ge=0)
    """Close connections idle this long (default 9m; 0 = never)."""
    rack_id: str = ""
    """This client's rack, for fetching from the closest replica (default empty)."""
    use_leader_epoch: bool = True
    """Accepted for compatibility: librdkafka always uses leader epochs where brokers have them
    (default true)."""
    auth: AuthConfig = Field(default_factory=AuthConfig)
    """Authentication: `sasl` (PLAIN or SCRAM) and the deprecated `plain_text` and `tls`."""
    tls: Annotated[TLSConfig | None, Defaulted] = None
    """Connect over TLS (default none: plain text). `tls:` with nothing under it turns TLS on
    with the system's trusted roots."""
    metadata: MetadataConfig = Field(default_factory=MetadataConfig)
    """Cluster metadata refreshes."""

    @field_validator("brokers", mode="before")
    @classmethod
    def _split_brokers(cls, value: object) -> object:
        if isinstance(value, str):
            return [b.strip() for b in value.split(",") if b.strip()]
        return value

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, value: list[str]) -> list[str]:
        for broker in value:
            host, sep, port = broker.rpartition(":")
            if not host or not sep or not port.isdigit() or not 0 < int(port) <= 65535:
                raise ValueError(f"invalid broker {broker!r}: expected host:port")
        return value

    @field_validator("protocol_version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if value and not _VERSION_RE.match(value):
            raise ValueError(f"invalid protocol version {value!r}: expected one like 2.1.0")
        return value


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def client_properties(config: ClientConfig) -> dict[str, Any]:
    """The librdkafka properties of `config`, common to producers and consumers."""
    props: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.brokers),
        "client.id": config.client_id,
        "connections.max.idle.ms": _ms(config.conn_idle_timeout),
        "topic.metadata.refresh.interval.ms": _ms(config.metadata.refresh_interval) or -1,
        "retry.backoff.ms": max(1, _ms(config.metadata.retry.backoff)),
        # Brokers close idle connections all the time: not worth a log line each.
        "log.connection.close": False,
    }
    if config.resolve_canonical_bootstrap_servers_only:
        props["client.dns.lookup"] = "resolve_canonical_bootstrap_servers_only"
    if config.rack_id:
        props["client.rack"] = config.rack_id
    if config.protocol_version:
        major_minor = tuple(int(part) for part in config.protocol_version.split(".")[:2])
        if major_minor < (0, 10):  # brokers this old cannot say which versions they speak
            props["api.version.request"] = False
            props["broker.version.fallback"] = config.protocol_version
    props.update(_security(config))
    return props


def _security(config: ClientConfig) -> dict[str, Any]:
    tls = config.tls if config.tls is not None else config.auth.tls
    use_tls = tls is not None and not tls.insecure
    props: dict[str, Any] = {}
    auth = config.auth
    if auth.sasl is not None:
        props.update(
            {
                "sasl.mechanism": auth.sasl.mechanism,
                "sasl.username": auth.sasl.username,
                "sasl.password": auth.sasl.password,
            }
        )
    elif auth.plain_text is not None:
        props.update(
            {
                "sasl.mechanism": "PLAIN",
                "sasl.username": auth.plain_text.username,
                "sasl.password": auth.plain_text.password,
            }
        )
    sasl = "SASL_" if props else ""
    props["security.protocol"] = sasl + ("SSL" if use_tls else "PLAINTEXT")
    if use_tls:
        assert tls is not None
        files = {
            "ssl.ca.location": tls.ca_file,
            "ssl.ca.pem": tls.ca_pem,
            "ssl.certificate.location": tls.cert_file,
            "ssl.certificate.pem": tls.cert_pem,
            "ssl.key.location": tls.key_file,
            "ssl.key.pem": tls.key_pem,
        }
        props.update({k: v for k, v in files.items() if v})
        if tls.insecure_skip_verify:
            props["enable.ssl.certificate.verification"] = False
            props["ssl.endpoint.identification.algorithm"] = "none"
    return props


class ClientLog:
    """librdkafka's log lines (the `logger` property) and global errors (`error_cb`) into a
    component's logger, each kind at most once per `interval` seconds with a count of the ones
    left out: a broker that is down is otherwise reported several times a second. Called from
    librdkafka's threads and the client's own; thread-safe."""

    def __init__(self, logger, interval: float = 30.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[tuple, tuple[float, int]] = {}  # kind -> (logged at, left out since)
        self._lock = threading.Lock()

    def _due(self, kind: tuple) -> int | None:
        """How many of `kind` were left out since it was last logged, or None to leave it out."""
        now = time.monotonic()
        with self._lock:
            last, skipped = self._last.get(kind, (float("-inf"), 0))
            if now - last < self._interval:
                self._last[kind] = (last, skipped + 1)
                return None
            self._last[kind] = (now, 0)
            return skipped

    def log(self, level: int, fmt: str, *args: object) -> None:
        """The `logging.Logger.log` that librdkafka calls: (syslog-like level as logging's,
        "%s [%s] %s", facility, client name, text)."""
        kind = (level, args[0] if args else fmt)
        skipped = self._due(kind)
        if skipped is None:
            return
        try:
            text = fmt % args
        except (TypeError, ValueError):
            text = " ".join(str(a) for a in (fmt, *args))
        suffix = f" ({skipped} more like it since)" if skipped else ""
        self._log.log(level, f"librdkafka: {text}{suffix}")

    def error(self, error: KafkaError) -> None:
        """The `error_cb`: errors of the client as a whole (all brokers down, authentication
        failed); librdkafka keeps retrying."""
        skipped = self._due(("error", error.code()))
        if skipped is None:
            return
        suffix = f" ({skipped} more since)" if skipped else ""
        self._log.warning(f"kafka client error: {error.str()}{suffix}")


def describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"
