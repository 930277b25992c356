"""The `prometheus` receiver's configuration: the receiver's own options and, under `config`,
the part of a Prometheus configuration file that scraping uses (`global`, `scrape_configs`),
with Prometheus's names, defaults and rules."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from collector.core.config_types import ComponentConfig, parse_duration

_PROM_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_PROM_UNITS = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def prom_duration(value: object) -> float:
    """Prometheus durations also have days, weeks and years (`1d`, `2w`)."""
    if isinstance(value, str):
        text = value.strip()
        parts = _PROM_DURATION.findall(text)
        if parts and "".join(n + u for n, u in parts) == text and any(u in "dwy" for _, u in parts):
            return float(sum(int(n) * _PROM_UNITS[u] for n, u in parts))
    return parse_duration(value)


def parse_size(value: object) -> int:
    """Prometheus byte sizes: 0, 1024, `10MB`, `1GiB`... (powers of 1024, as Prometheus reads
    them)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    m = re.fullmatch(r"\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB|TB|TiB)?\s*", str(value))
    if not m:
        raise ValueError(f"invalid size {value!r}: expected a number of bytes or like 10MB")
    unit = (m.group(2) or "B").removesuffix("iB").removesuffix("B")
    return int(m.group(1)) * 1024 ** ("", "K", "M", "G", "T").index(unit)


# Seconds, written as a Prometheus duration (`30s`, `1m`, `1d`).
PromDuration = Annotated[float, BeforeValidator(prom_duration)]
# Bytes, written as a number or a Prometheus size (`10MB`).
ByteSize = Annotated[int, BeforeValidator(parse_size)]


RelabelAction = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]


class RelabelConfig(ComponentConfig):
    source_labels: list[str] = Field(default_factory=list)
    """Labels whose values, joined by `separator`, the regex is matched against."""
    separator: str = ";"
    """Joins the source label values (default `;`)."""
    target_label: str = ""
    """The label an action writes; may use `$1`, `${name}` in `replace`."""
    regex: str = "(.*)"
    """A regular expression, anchored at both ends (default `(.*)`)."""
    modulus: int = Field(0, ge=0)
    """For `hashmod`: the modulus of the hash of the source value."""
    replacement: str = "$1"
    """What `replace` writes, with `$1`, `${1}` or `$name` references to the regex's groups
    (default `$1`)."""
    action: RelabelAction = "replace"
    """replace (default), keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop,
    labelkeep, lowercase or uppercase, as Prometheus defines them."""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as e:
            raise ValueError(f"invalid regex {value!r}: {e}") from None
        return value

    @field_validator("source_labels")
    @classmethod
    def _label_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid label name")
        return value

    @model_validator(mode="after")
    def _action_fields(self) -> RelabelConfig:
        needs_target = ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")
        if self.action in needs_target and not self.target_label:
            raise ValueError(f"relabel action {self.action} needs a target_label")
        if self.action == "hashmod" and not self.modulus:
            raise ValueError("relabel action hashmod needs a modulus")
        if self.action in ("labeldrop", "labelkeep") and (
            self.source_labels or self.target_label or self.replacement != "$1"
        ):
            raise ValueError(
                f"relabel action {self.action} takes only a regex (no source_labels, "
                "target_label or replacement)"
            )
        if self.action in ("keepequal", "dropequal") and (
            self.regex != "(.*)" or self.replacement != "$1"
        ):
            raise ValueError(f"relabel action {self.action} takes no regex or replacement")
        return self


class StaticConfig(ComponentConfig):
    targets: list[str] = Field(default_factory=list)
    """host:port of each target."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels given to every target of the group."""


class FileSDConfig(ComponentConfig):
    files: list[str] = Field(min_length=1)
    """Files (globs allowed in the last path element) of target groups, JSON or YAML (.json,
    .yml, .yaml): a list of {targets, labels}. Each target gets `__meta_filepath`."""
    refresh_interval: PromDuration = Field(300.0, gt=0)
    """How often the files are read again (default 5m)."""


class HTTPSDConfig(ComponentConfig):
    url: str
    """An HTTP(S) URL answering a JSON list of {targets, labels} target groups. Each target gets
    `__meta_url`."""
    refresh_interval: PromDuration = Field(60.0, gt=0)
    """How often the URL is asked again (default 1m)."""


class BasicAuth(ComponentConfig):
    username: str = ""
    """The user name."""
    password: SecretStr = SecretStr("")
    """The password; or `password_file`."""
    password_file: str = ""
    """A file holding the password, read at every scrape."""


class Authorization(ComponentConfig):
    type: str = "Bearer"
    """The Authorization header's scheme (default Bearer)."""
    credentials: SecretStr = SecretStr("")
    """The credentials; or `credentials_file`."""
    credentials_file: str = ""
    """A file holding the credentials, read at every scrape."""


class TLSConfig(ComponentConfig):
    ca_file: str = ""
    """CA certificates (PEM) the target's certificate must chain to (default: the system's)."""
    cert_file: str = ""
    """A client certificate (PEM), with key_file, for targets that want one."""
    key_file: str = ""
    """The private key of cert_file (PEM)."""
    server_name: str = ""
    """The name the target's certificate must carry (default: the target's host)."""
    insecure_skip_verify: bool = False
    """Accept any certificate (default false)."""
    min_version: Literal["TLS12", "TLS13", ""] = ""
    """Lowest TLS version: TLS12 or TLS13 (default: Python's)."""


ScrapeProtocol = Literal[
    "OpenMetricsText1.0.0",
    "OpenMetricsText0.0.1",
    "PrometheusText1.0.0",
    "PrometheusText0.0.4",
    "PrometheusProto",
]
_READABLE: list[ScrapeProtocol] = [
    "OpenMetricsText1.0.0",
    "OpenMetricsText0.0.1",
    "PrometheusText1.0.0",
    "PrometheusText0.0.4",
]


class ScrapeConfig(ComponentConfig):
    job_name: str = Field(min_length=1)
    """The job: the `job` label and the resource's service.name. Unique. Required."""
    scrape_interval: PromDuration | None = Field(None, gt=0)
    """How often each target is scraped (default: global scrape_interval)."""
    scrape_timeout: PromDuration | None = Field(None, gt=0)
    """How long a scrape may take; at most scrape_interval (default: global scrape_timeout)."""
    metrics_path: str = "/metrics"
    """The path scraped (default /metrics)."""
    scheme: Literal["http", "https"] = "http"
    """http (default) or https."""
    params: dict[str, list[str]] = Field(default_factory=dict)
    """URL query parameters of every scrape."""
    honor_labels: bool = False
    """On a clash between a scraped label and a target label, keep the scraped one (default
    false: the scraped label is renamed exported_<name>)."""
    honor_timestamps: bool = True
    """Use the timestamps the target exposes (default true; false: the scrape's time)."""
    track_timestamps_staleness: bool = False
    """Accepted for compatibility (default false)."""
    static_configs: list[StaticConfig] = Field(default_factory=list)
    """Fixed target groups."""
    file_sd_configs: list[FileSDConfig] = Field(default_factory=list)
    """Target groups read from files (as written by ECS service discovery tools)."""
    http_sd_configs: list[HTTPSDConfig] = Field(default_factory=list)
    """Target groups asked from an HTTP endpoint."""
    relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    """Rules applied to each target's labels before it is scraped (a `drop` skips it)."""
    metric_relabel_configs: list[RelabelConfig] = Field(default_factory=list)
    """Rules applied to each scraped sample's labels, `__name__` included (a `drop` drops it)."""
    basic_auth: BasicAuth | None = None
    """Basic authentication on every scrape."""
    authorization: Authorization | None = None
    """An Authorization header on every scrape."""
    bearer_token: SecretStr = SecretStr("")
    """Older form of authorization: a bearer token."""
    bearer_token_file: str = ""
    """Older form of authorization: a file holding a bearer token."""
    tls_config: TLSConfig = Field(default_factory=TLSConfig)
    """TLS for https targets."""
    follow_redirects: bool = True
    """Follow HTTP redirects (default true)."""
    enable_http2: bool = True
    """Accepted for compatibility; scrapes use HTTP/1.1."""
    sample_limit: int = Field(0, ge=0)
    """A scrape with more samples than this after metric relabeling fails (default 0: no
    limit)."""
    label_limit: int = Field(0, ge=0)
    """A scrape with a sample of more labels fails (default 0: no limit)."""
    label_name_length_limit: int = Field(0, ge=0)
    """A scrape with a longer label name fails (default 0: no limit)."""
    label_value_length_limit: int = Field(0, ge=0)
    """A scrape with a longer label value fails (default 0: no limit)."""
    target_limit: int = Field(0, ge=0)
    """More targets than this after relabeling: none of the job's targets is scraped (default
    0: no limit)."""
    body_size_limit: ByteSize | None = None
    """Largest response body, like 10MB; larger fails the scrape (default: global, 0: no
    limit)."""
    scrape_protocols: list[ScrapeProtocol] = Field(default_factory=lambda: list(_READABLE))
    """Exposition formats asked for, in order of preference. The text formats are read;
    PrometheusProto is not, so it is skipped when asking."""
    fallback_scrape_protocol: ScrapeProtocol | None = None
    """The format assumed when a target's Content-Type is missing or unknown (default
    PrometheusText0.0.4)."""
    scrape_classic_histograms: bool = True
    """Accepted for compatibility: classic histograms are always read."""
    metric_name_validation_scheme: str = ""
    """Accepted for compatibility."""

    @model_validator(mode="before")
    @classmethod
    def _discovery(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key.endswith("_sd_configs") and key not in cls.model_fields:
                    raise ValueError(
                        f"{key}: not supported; list targets in static_configs, file_sd_configs "
                        "(which ECS discovery tools write) or http_sd_configs"
                    )
        return data

    @field_validator("scrape_protocols")
    @classmethod
    def _readable(cls, value: list[str]) -> list[str]:
        if value and all(p == "PrometheusProto" for p in value):
            raise ValueError("only PrometheusProto listed: coldtail reads the text formats only")
        return value

    @model_validator(mode="after")
    def _auth_once(self) -> ScrapeConfig:
        ways = [
            self.basic_auth is not None,
            self.authorization is not None,
            bool(self.bearer_token.get_secret_value() or self.bearer_token_file),
        ]
        if sum(ways) > 1:
            raise ValueError(
                "at most one of basic_auth, authorization and bearer_token(_file) may be set"
            )
        return self


class GlobalConfig(ComponentConfig):
    scrape_interval: PromDuration = Field(60.0, gt=0)
    """Default scrape interval of every job (default 1m)."""
    scrape_timeout: PromDuration = Field(10.0, gt=0)
    """Default scrape timeout of every job (default 10s)."""
    evaluation_interval: PromDuration = Field(60.0, gt=0)
    """Accepted for compatibility: rules are not evaluated."""
    external_labels: dict[str, str] = Field(default_factory=dict)
    """Accepted for compatibility: as in Prometheus, they label data leaving it, not scrapes."""
    scrape_protocols: list[ScrapeProtocol] | None = None
    """Default scrape_protocols of every job."""
    body_size_limit: ByteSize = 0
    """Default body_size_limit of every job (default 0: no limit)."""
    sample_limit: int = Field(0, ge=0)
    """Default sample_limit of every job (default 0: no limit)."""
    label_limit: int = Field(0, ge=0)
    """Default label_limit of every job (default 0: no limit)."""
    label_name_length_limit: int = Field(0, ge=0)
    """Default label_name_length_limit of every job (default 0: no limit)."""
    label_value_length_limit: int = Field(0, ge=0)
    """Default label_value_length_limit of every job (default 0: no limit)."""
    target_limit: int = Field(0, ge=0)
    """Default target_limit of every job (default 0: no limit)."""


_UNSUPPORTED = ("rule_files", "remote_write", "remote_read", "alerting")


class PrometheusConfig(ComponentConfig):
    global_: GlobalConfig = Field(default_factory=GlobalConfig, alias="global")
    """Defaults of every scrape config."""
    scrape_configs: list[ScrapeConfig] = Field(default_factory=list)
    """The jobs to scrape."""
    scrape_config_files: list[str] = Field(default_factory=list)
    """Not supported: write the scrape configs inline."""

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in _UNSUPPORTED:
                if key in data:
                    raise ValueError(f"{key}: not supported by the prometheus receiver")
        return data

    @model_validator(mode="after")
    def _jobs(self) -> PrometheusConfig:
        if self.scrape_config_files:
            raise ValueError("scrape_config_files: not supported; write the scrape configs inline")
        seen: set[str] = set()
        for job in self.scrape_configs:
            if job.job_name in seen:
                raise ValueError(f"job_name {job.job_name!r} is used twice")
            seen.add(job.job_name)
            interval = job.scrape_interval or self.global_.scrape_interval
            timeout = job.scrape_timeout or min(self.global_.scrape_timeout, interval)
            if timeout > interval:
                raise ValueError(
                    f"job {job.job_name!r}: scrape_timeout ({timeout:g}s) is greater than "
                    f"scrape_interval ({interval:g}s)"
                )
        return self


class TargetAllocator(ComponentConfig):
    endpoint: str = ""
    """The target allocator's URL."""


class Config(ComponentConfig):
    config: PrometheusConfig = Field(default_factory=PrometheusConfig)
    """The Prometheus configuration, as in a prometheus.yml: `global` and `scrape_configs`
    (static_configs, file_sd_configs, http_sd_configs, relabel_configs,
    metric_relabel_configs, auth, tls_config, limits). `$` must be written `$$`, as the
    collector's config reads `${...}` as a reference. Kubernetes and cloud service discovery,
    rules and remote write are not supported."""
    trim_metric_suffixes: bool = False
    """Remove the unit and `_total` suffixes from metric names (default false)."""
    use_start_time_metric: bool = False
    """Take the start time of every cumulative metric of a target from its
    `process_start_time_seconds` (default false)."""
    start_time_metric_regex: str = "^(.+_)*process_start_time_seconds$"
    """The metric use_start_time_metric reads (a regular expression)."""
    report_extra_scrape_metrics: bool = False
    """Also report scrape_timeout_seconds, scrape_sample_limit and scrape_body_size_bytes per
    target (default false)."""
    target_allocator: TargetAllocator | None = None
    """Not supported: the OpenTelemetry Operator's target allocator needs Kubernetes."""

    @model_validator(mode="after")
    def _no_allocator(self) -> Config:
        if self.target_allocator is not None:
            raise ValueError(
                "target_allocator: not supported (a Kubernetes operator feature); list targets "
                "in static_configs or file_sd_configs"
            )
        re.compile(self.start_time_metric_regex)
        return self
