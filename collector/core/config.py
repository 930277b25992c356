"""Validate a raw config tree into a ServiceConfig, reporting every error with its key path.

Paths use the Collector's `::` separator: `processors::batch/fast::timeout: ...`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from collector.core.component import ComponentID, Factory, Kind, Registry
from collector.core.config_types import (
    ComponentConfig,
    Duration,
    ListenEndpoint,
    parse_listen_endpoint,
)
from collector.core.signals import Signal
from collector.core.telemetry_push import LogProcessor, PeriodicReader

SIGNALS = ", ".join(s.value for s in Signal)


class LogsConfig(ComponentConfig):
    level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    """Lowest level written to stderr. Default info."""
    encoding: Literal["console", "json"] = "console"
    """console: tab-separated text lines; json: one JSON object per line. Default console."""
    processors: list[LogProcessor] = Field(default_factory=list)
    """Also push the log lines over OTLP/HTTP: `[{batch: {exporter: {otlp: {protocol:
    http/protobuf, endpoint: ...}}}}]`, as the OTel Collector configures it (default none)."""


class PrometheusPullExporter(ComponentConfig):
    host: str = "127.0.0.1"
    """Interface /metrics listens on (default 127.0.0.1)."""
    port: int = Field(ge=0, le=65535)
    """Port /metrics listens on. Required."""
    without_units: bool = False
    """Accepted for compatibility: the own metrics' names are the Collector's, as listed
    under "Own telemetry"."""
    without_type_suffix: bool = False
    """Accepted for compatibility, as `without_units`."""
    without_scope_info: bool = False
    """Accepted for compatibility, as `without_units`."""


class PullExporter(ComponentConfig):
    prometheus: PrometheusPullExporter
    """Prometheus text at /metrics, scraped. Required."""


class PullReader(ComponentConfig):
    exporter: PullExporter
    """How the metrics are read. Required."""


class MetricReader(ComponentConfig):
    pull: PullReader | None = None
    """Serves the metrics to be scraped (Prometheus text at /metrics)."""
    periodic: PeriodicReader | None = None
    """Pushes the metrics over OTLP/HTTP every `interval` milliseconds."""

    @model_validator(mode="after")
    def _one_kind(self) -> MetricReader:
        if (self.pull is None) == (self.periodic is None):
            raise ValueError(
                "expected one of pull: {exporter: {prometheus: {host, port}}} and periodic: "
                "{exporter: {otlp: {endpoint}}}"
            )
        return self


class MetricsConfig(ComponentConfig):
    level: Literal["none", "basic", "normal", "detailed"] = "normal"
    """none turns the own-metrics endpoint off. Default normal."""
    address: ListenEndpoint = "127.0.0.1:8888"
    """Where /metrics serves the collector's own metrics in Prometheus text. Default
    127.0.0.1:8888."""
    readers: list[MetricReader] = Field(default_factory=list)
    """The OTel Collector's newer form (default none): at most one `pull` reader with a
    `prometheus` exporter's `host` and `port`, as the Collector's Helm chart writes it, which
    replaces `address`, and `periodic` readers pushing over OTLP/HTTP. With readers and no pull
    reader, /metrics is not served."""

    @model_validator(mode="after")
    def _address_from_reader(self) -> MetricsConfig:
        if not self.readers:
            return self
        if "address" in self.model_fields_set:
            raise ValueError("set either address or readers")
        pulls = [r.pull for r in self.readers if r.pull is not None]
        if len(pulls) > 1:
            raise ValueError("readers: at most one pull reader")
        if pulls:
            prometheus = pulls[0].exporter.prometheus
            host = f"[{prometheus.host}]" if ":" in prometheus.host else prometheus.host
            self.address = parse_listen_endpoint(f"{host}:{prometheus.port}")
        return self

    @property
    def served(self) -> bool:
        """Whether /metrics is served: unless readers are given without a pull one."""
        return self.level != "none" and (
            not self.readers or any(r.pull is not None for r in self.readers)
        )

    @property
    def periodic(self) -> list[PeriodicReader]:
        return [r.periodic for r in self.readers if r.periodic is not None]


class TelemetryConfig(ComponentConfig):
    logs: LogsConfig = Field(default_factory=LogsConfig)
    """The collector's own logs."""
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    """The collector's own metrics."""
    resource: dict[str, str | None] = Field(default_factory=dict)
    """Attributes of the collector's own telemetry, each a label of every own metric (dots as
    underscores): service.name (default coldtail), service.instance.id (default a new UUID at
    every start) and service.version (default coldtail's version) unless given here; a null
    value leaves one out."""


class PipelineModel(ComponentConfig):
    receivers: list[str] = Field(default_factory=list)
    """Receivers (or connectors) feeding this pipeline. At least one."""
    processors: list[str] = Field(default_factory=list)
    """Processors, applied in order. Each pipeline gets its own instances."""
    exporters: list[str] = Field(default_factory=list)
    """Exporters (or connectors) the pipeline fans out to. At least one."""


class ServiceModel(ComponentConfig):
    extensions: list[str] = Field(default_factory=list)
    """Extensions to run, started before and stopped after the pipelines."""
    pipelines: dict[str, PipelineModel | None] = Field(default_factory=dict)
    """Pipelines by id: `traces`, `metrics`, `logs`, or `<signal>/<name>`."""
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    """The collector's own logs and metrics."""
    shutdown_timeout: Duration = 10.0
    """How long a clean stop may take to drain processors and sending queues. Default 10s."""


@dataclass(frozen=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Every error found in a config, each naming its key path."""

    def __init__(self, errors: list[ConfigIssue]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


@dataclass
class Pipeline:
    id: str
    signal: Signal
    receivers: list[ComponentID]
    processors: list[ComponentID]
    exporters: list[ComponentID]


@dataclass
class ServiceConfig:
    # kind -> id -> (factory, validated config model)
    components: dict[Kind, dict[ComponentID, tuple[Factory, BaseModel]]]
    pipelines: list[Pipeline]
    extensions: list[ComponentID]
    telemetry: TelemetryConfig
    shutdown_timeout: float
    warnings: list[ConfigIssue] = field(default_factory=list)

    def component(self, kind: Kind, id: ComponentID) -> tuple[Factory, BaseModel]:
        return self.components[kind][id]


def _model_or_tags(annotation: Any) -> type[BaseModel] | dict[str, type[BaseModel]] | None:
    """What a field holds, for following an error location: a model, or for a discriminated
    union of models a map from tag value to member model (the location then names the tag)."""
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is typing.Annotated:
        inner, *meta = typing.get_args(annotation)
        discriminator = next(
            (m.discriminator for m in meta if isinstance(getattr(m, "discriminator", None), str)),
            None,
        )
        if discriminator:
            return {
                tag: member
                for member in _union_members(inner)
                for tag in typing.get_args(member.model_fields[discriminator].annotation)
            }
        return _model_or_tags(inner)
    if origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found = _model_or_tags(arg)
            if found:
                return found
    return None


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """The models of a union, flattening nested (annotated) unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Annotated:
        args = args[:1]
    return [m for arg in args for m in _union_members(arg)]


def _field(model: type[BaseModel], key: str):
    """The field a config key names (its name or its alias)."""
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info
    return None


def _follow(model: type[BaseModel], loc: tuple) -> tuple[list, type[BaseModel] | None]:
    """The location without discriminator tags, and the model holding its last element."""
    path: list = []
    current: Any = model
    holder: type[BaseModel] | None = model
    for part in loc:
        if isinstance(current, dict) and part in current:
            current = current[part]  # a union tag: not a key the user wrote
            continue
        path.append(part)
        if isinstance(part, int):
            continue
        holder = current if isinstance(current, type) else None
        field = _field(holder, part) if holder else None
        current = _model_or_tags(field.annotation) if field else None
    return path, holder


def _pydantic_issues(
    error: ValidationError, model: type[BaseModel], prefix: str
) -> list[ConfigIssue]:
    issues = []
    for err in error.errors():
        loc, holder = _follow(model, err["loc"])
        path = "::".join([prefix, *map(str, loc)])
        if err["type"] == "extra_forbidden":
            allowed = (
                sorted(f.alias or n for n, f in holder.model_fields.items()) if holder else None
            )
            message = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            message = "required key missing"
        else:
            message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            if err["type"] in ("model_type", "dict_type") and err.get("input") is not None:
                # The type, not the value: a misplaced value may be a secret.
                message = f"expected a map, got {_kind_of(err['input'])}"
        issues.append(ConfigIssue(path, message))
    return issues


def _kind_of(value: object) -> str:
    kinds = {str: "a string", bool: "a boolean", int: "a number", float: "a number", list: "a list"}
    return kinds.get(type(value), type(value).__name__)


M = TypeVar("M", bound=BaseModel)


def _validate_model(model: type[M], raw: Any, prefix: str, errors: list[ConfigIssue]) -> M | None:
    try:
        return model.model_validate({} if raw is None else raw)
    except ValidationError as e:
        errors.extend(_pydantic_issues(e, model, prefix))
        return None


def _validate_service(raw: Any, errors: list[ConfigIssue]) -> ServiceModel | None:
    """The service block; when part of it is invalid, the rest is still validated (without the
    failing keys) so pipeline errors are reported in the same run."""
    found: list[ConfigIssue] = []
    service = _validate_model(ServiceModel, raw, "service", found)
    errors.extend(found)
    if service is None and isinstance(raw, dict):
        failed = {e.path.split("::")[1] for e in found if e.path.count("::") >= 1}
        service = _validate_model(
            ServiceModel, {k: v for k, v in raw.items() if k not in failed}, "service", []
        )
    return service


# The OTel Collector's profiles signal is experimental (behind a feature gate); configs made for
# it still run, without those pipelines.
_PROFILES_SKIPPED = "profiles pipelines are not supported; this pipeline is skipped"


def _parse_pipeline_id(name: str) -> Signal | None:
    signal, _, _ = name.partition("/")
    try:
        return Signal(signal)
    except ValueError:
        return None


Components = dict[Kind, dict[ComponentID, tuple[Factory, BaseModel]]]
IdsByKind = dict[Kind, set[ComponentID]]


def validate(raw: dict, registry: Registry) -> ServiceConfig:
    """Build a ServiceConfig from a raw tree; raises ConfigError listing every problem."""
    errors: list[ConfigIssue] = []
    _check_sections(raw, errors)
    components, declared = _validate_components(raw, registry, errors)
    service = _validate_service(raw.get("service"), errors)
    if service is None:
        raise ConfigError(errors)

    used: IdsByKind = {k: set() for k in Kind}
    extensions = []
    for i, text in enumerate(service.extensions):
        ref = _resolve(text, [Kind.EXTENSION], declared, f"service::extensions::{i}", errors)
        if ref:
            extensions.append(ref[1])
            used[Kind.EXTENSION].add(ref[1])

    if not service.pipelines:
        errors.append(ConfigIssue("service::pipelines", "at least one pipeline is required"))
    skipped = [
        ConfigIssue(f"service::pipelines::{name}", _PROFILES_SKIPPED)
        for name in service.pipelines
        if name.partition("/")[0] == "profiles"
    ]
    pipelines = [
        pipeline
        for name, body in service.pipelines.items()
        if name.partition("/")[0] != "profiles"
        and (pipeline := _pipeline(name, body, components, declared, used, errors)) is not None
    ]
    _check_connectors(pipelines, components, errors)
    if errors:
        raise ConfigError(errors)
    return ServiceConfig(
        components,
        pipelines,
        extensions,
        service.telemetry,
        service.shutdown_timeout,
        skipped + _unused(declared, used) + _deprecated(components),
    )


def _check_sections(raw: dict, errors: list[ConfigIssue]) -> None:
    known_sections = {k.section for k in Kind} | {"service"}
    for key in raw:
        if key not in known_sections:
            errors.append(
                ConfigIssue(
                    str(key),
                    "unknown top-level key; allowed keys: " + ", ".join(sorted(known_sections)),
                )
            )


def _validate_components(
    raw: dict, registry: Registry, errors: list[ConfigIssue]
) -> tuple[Components, IdsByKind]:
    """Each component's validated config, and every declared id (valid config or not, so that
    references to it are not reported again)."""
    components: Components = {k: {} for k in Kind}
    declared: IdsByKind = {k: set() for k in Kind}
    for kind in Kind:
        section = raw.get(kind.section) or {}
        if not isinstance(section, dict):
            errors.append(ConfigIssue(kind.section, f"expected a map of {kind.value} ids"))
            continue
        for key, body in section.items():
            path = f"{kind.section}::{key}"
            try:
                cid = ComponentID.parse(key)
            except ValueError as e:
                errors.append(ConfigIssue(path, str(e)))
                continue
            declared[kind].add(cid)
            factory = registry.get(kind, cid.type)
            if factory is None:
                missing = registry.missing(kind, cid.type)
                errors.append(
                    ConfigIssue(
                        path,
                        f"unknown type {cid.type!r}"
                        + (f" ({missing})" if missing else "")
                        + f"; known {kind.value} types: "
                        + (", ".join(registry.types(kind)) or "none"),
                    )
                )
                continue
            model = _validate_model(factory.config, body, path, errors)
            if model is not None:
                components[kind][cid] = (factory, model)
    return components, declared


def _pipeline(
    name: str,
    body: PipelineModel | None,
    components: Components,
    declared: IdsByKind,
    used: IdsByKind,
    errors: list[ConfigIssue],
) -> Pipeline | None:
    """The pipeline `name` with its references resolved (and added to `used`)."""
    path = f"service::pipelines::{name}"
    signal = _parse_pipeline_id(name)
    if signal is None:
        errors.append(
            ConfigIssue(
                path,
                f"unknown signal in pipeline id {name!r}; expected "
                f"{SIGNALS}, optionally followed by /name",
            )
        )
        return None
    body = body or PipelineModel()
    refs: dict[str, list[ComponentID]] = {}
    for role, kinds in (
        ("receivers", [Kind.RECEIVER, Kind.CONNECTOR]),
        ("processors", [Kind.PROCESSOR]),
        ("exporters", [Kind.EXPORTER, Kind.CONNECTOR]),
    ):
        ids = refs[role] = []
        for i, text in enumerate(getattr(body, role)):
            ref = _resolve(text, kinds, declared, f"{path}::{role}::{i}", errors)
            if ref is None:
                continue
            kind, cid = ref
            if cid in ids:
                errors.append(
                    ConfigIssue(f"{path}::{role}", f"references {kind.value} {cid} more than once")
                )
                continue
            ids.append(cid)
            used[kind].add(cid)
            _check_signal(kind, cid, role, signal, components, f"{path}::{role}", errors)
        if role != "processors" and not ids and not getattr(body, role):
            errors.append(ConfigIssue(path, f"must have at least one {role[:-1]}"))
    return Pipeline(name, signal, refs["receivers"], refs["processors"], refs["exporters"])


def _deprecated(components: Components) -> list[ConfigIssue]:
    """Warnings for components of a deprecated type."""
    return [
        ConfigIssue(f"{kind.section}::{cid}", factory.deprecated)
        for kind in Kind
        for cid, (factory, _) in sorted(components[kind].items())
        if factory.deprecated
    ]


def _unused(declared: IdsByKind, used: IdsByKind) -> list[ConfigIssue]:
    """Warnings for components declared but never referenced."""
    warnings = []
    for kind in Kind:
        for cid in sorted(declared[kind] - used[kind]):
            where = "service::extensions" if kind is Kind.EXTENSION else "any pipeline"
            warnings.append(
                ConfigIssue(f"{kind.section}::{cid}", f"configured but not used in {where}")
            )
    return warnings


def _resolve(
    text: Any, kinds: list[Kind], declared, path: str, errors: list[ConfigIssue]
) -> tuple[Kind, ComponentID] | None:
    try:
        cid = ComponentID.parse(text)
    except ValueError as e:
        errors.append(ConfigIssue(path, str(e)))
        return None
    for kind in kinds:
        if cid in declared[kind]:
            return kind, cid
    names = " or ".join(k.value for k in kinds)
    sections = " or ".join(k.section for k in kinds)
    errors.append(
        ConfigIssue(path, f"references {names} {cid!s} which is not configured under {sections}")
    )
    return None


def _check_signal(kind, cid, role, signal, components, path, errors) -> None:
    entry = components[kind].get(cid)
    if entry is None:  # its own config error is already reported
        return
    factory = entry[0]
    if kind is Kind.CONNECTOR:
        # As an exporter it consumes `signal`; as a receiver it emits `signal`.
        ok = (
            signal in factory.signals
            if role == "exporters"
            else any(signal in outs for outs in factory.signals.values())
        )
        if not ok:
            errors.append(
                ConfigIssue(
                    path,
                    f"connector {cid} does not support {signal} as "
                    f"{'input' if role == 'exporters' else 'output'}",
                )
            )
    elif not factory.supports(signal):
        supported = ", ".join(s.value for s in factory.signals) or "no signal"
        errors.append(
            ConfigIssue(
                path, f"{kind.value} {cid} does not support {signal} (supports {supported})"
            )
        )


def _check_connectors(pipelines: list[Pipeline], components, errors) -> None:
    for cid, (factory, _) in components[Kind.CONNECTOR].items():
        ins = {p.signal for p in pipelines if cid in p.exporters}
        outs = {p.signal for p in pipelines if cid in p.receivers}
        if not ins and not outs:
            continue
        if not ins or not outs:
            missing = "an exporter" if not ins else "a receiver"
            errors.append(
                ConfigIssue(
                    f"connectors::{cid}",
                    f"must be used as both an exporter "
                    f"and a receiver; it is never used as {missing}",
                )
            )
            continue
        if not any(factory.connects(i, o) for i in ins for o in outs):
            errors.append(
                ConfigIssue(
                    f"connectors::{cid}",
                    "connects no pipeline pair it "
                    "supports: "
                    + ", ".join(f"{i}->{o}" for i, outs_ in factory.signals.items() for o in outs_),
                )
            )
