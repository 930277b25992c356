"""What the scrapers share: their metric tables with upstream's default switches, the
per-metric `enabled` options, include/exclude filters, the host's file system under
`root_path`, and the reading each scrape writes its metrics into."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import psutil
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, ScopeMetrics
from pydantic import Field, PrivateAttr, field_validator, model_validator

from collector.core.config_types import ComponentConfig
from collector.core.pdata import Metrics, set_attr

LINUX = sys.platform.startswith("linux")
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
SCOPE_PREFIX = "coldtail/hostmetrics/"

Points = list[tuple[dict[str, Any], float | int]]


@dataclass(frozen=True)
class MetricSpec:
    """One metric as upstream's metadata defines it; `enabled` is its default."""

    unit: str
    description: str
    enabled: bool
    gauge: bool = False
    monotonic: bool = False
    integer: bool = True


def cumulative(unit: str, description: str, *, on: bool = True, double: bool = False):
    """A monotonic cumulative sum (a counter since boot or process start)."""
    return MetricSpec(unit, description, on, monotonic=True, integer=not double)


def updown(unit: str, description: str, *, on: bool = True) -> MetricSpec:
    """A non-monotonic cumulative integer sum (a current amount)."""
    return MetricSpec(unit, description, on)


def gauge(unit: str, description: str, *, on: bool = True, integer: bool = False) -> MetricSpec:
    return MetricSpec(unit, description, on, gauge=True, integer=integer)


def describe_switches(what: str, table: Mapping[str, MetricSpec | bool]) -> str:
    """The docs of a `metrics` or `resource_attributes` option, from its table."""

    def default(spec: MetricSpec | bool) -> bool:
        return spec.enabled if isinstance(spec, MetricSpec) else spec

    on = ", ".join(n for n, s in table.items() if default(s)) or "none"
    off = ", ".join(n for n, s in table.items() if not default(s)) or "none"
    return (
        f"Per-{what} switches, like `{next(iter(table))}: {{enabled: false}}`. "
        f"On by default: {on}. Off by default: {off}."
    )


class Switch(ComponentConfig):
    enabled: bool | None = None
    """On or off; unset keeps the default."""


def _check_switches(value: object, known: Mapping[str, Any], what: str, scraper: str) -> object:
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = sorted(str(name) for name in value if name not in known)
        if unknown:
            raise ValueError(
                f"unknown {what} {unknown[0]!r} for the {scraper} scraper; "
                f"it has: {', '.join(known)}"
            )
        # `name:` with nothing after it keeps the default, as an empty mapping does.
        return {name: {} if switch is None else switch for name, switch in value.items()}
    return value


class ScraperConfig(ComponentConfig):
    """Options every scraper has: its metrics' switches."""

    NAME: ClassVar[str] = ""
    METRICS: ClassVar[Mapping[str, MetricSpec]] = {}

    metrics: dict[str, Switch] = Field(default_factory=dict)

    @field_validator("metrics", mode="before")
    @classmethod
    def _known_metrics(cls, value: object) -> object:
        return _check_switches(value, cls.METRICS, "metric", cls.NAME)

    def enabled(self, name: str) -> bool:
        switch = self.metrics.get(name)
        if switch is not None and switch.enabled is not None:
            return switch.enabled
        return self.METRICS[name].enabled


def check_resource_attributes(value: object, known: Mapping[str, bool], scraper: str) -> object:
    return _check_switches(value, known, "resource attribute", scraper)


# --- include / exclude filters ---------------------------------------------------------------


class Match(ComponentConfig):
    """A list of values and how to compare with them (upstream's filterset): `strict` is
    equality, `regexp` finds the pattern anywhere in the value (anchor it with ^...$)."""

    ITEMS: ClassVar[str] = ""

    match_type: Literal["strict", "regexp"] | None = None
    """strict or regexp; required when values are listed."""

    _patterns: list[re.Pattern[str]] = PrivateAttr(default_factory=list)

    def values(self) -> list[str]:
        return getattr(self, self.ITEMS)

    @model_validator(mode="after")
    def _compile(self) -> Match:
        if self.values() and self.match_type is None:
            raise ValueError(f"match_type: required with {self.ITEMS}: strict or regexp")
        if self.match_type == "regexp":
            for pattern in self.values():
                try:
                    self._patterns.append(re.compile(pattern))
                except re.error as e:
                    raise ValueError(f"{self.ITEMS}: invalid regexp {pattern!r}: {e}") from None
        return self

    def matches(self, value: str) -> bool:
        if self.match_type == "regexp":
            return any(p.search(value) for p in self._patterns)
        return value in self.values()


class DeviceMatch(Match):
    ITEMS = "devices"
    devices: list[str] = Field(default_factory=list)
    """Device names, like sda or /dev/vda1."""


class FsTypeMatch(Match):
    ITEMS = "fs_types"
    fs_types: list[str] = Field(default_factory=list)
    """File system types, like ext4 or tmpfs."""


class MountPointMatch(Match):
    ITEMS = "mount_points"
    mount_points: list[str] = Field(default_factory=list)
    """Mount points, as the host sees them, like / or /boot."""


class InterfaceMatch(Match):
    ITEMS = "interfaces"
    interfaces: list[str] = Field(default_factory=list)
    """Network interface names, like eth0 or lo."""


class NameMatch(Match):
    ITEMS = "names"
    names: list[str] = Field(default_factory=list)
    """Process executable names (process.executable.name), like nginx."""


def included(value: str, include: Match, exclude: Match) -> bool:
    """Kept when it matches `include` (or include lists nothing) and does not match `exclude`."""
    if include.values() and not include.matches(value):
        return False
    return not (exclude.values() and exclude.matches(value))


# --- the host's files ------------------------------------------------------------------------

# psutil reads procfs under the process-wide psutil.PROCFS_PATH; a reading under a root_path
# swaps it for its duration, one reading at a time.
_PROCFS_SWAP = threading.Lock()


@dataclass(frozen=True)
class HostFS:
    """The host's file system: `root` is where its / is mounted ("" for this machine's own)."""

    root: str = ""

    @property
    def proc(self) -> str:
        return f"{self.root}/proc"

    def path(self, host_path: str) -> str:
        """A path of the host as this process reaches it."""
        return f"{self.root}{host_path}" if self.root else host_path

    def read_proc(self, name: str) -> str:
        with open(f"{self.proc}/{name}", encoding="utf-8", errors="replace") as f:
            return f.read()

    @contextmanager
    def psutil_procfs(self) -> Iterator[None]:
        """psutil reads this host's procfs within the block."""
        if not self.root:
            yield
            return
        with _PROCFS_SWAP:
            before = psutil.PROCFS_PATH
            psutil.PROCFS_PATH = self.proc
            try:
                yield
            finally:
                psutil.PROCFS_PATH = before


def meminfo(host: HostFS) -> dict[str, int]:
    """/proc/meminfo in bytes (page counts such as HugePages_Total as they are)."""
    values = {}
    for line in host.read_proc("meminfo").splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            scale = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
            values[key] = int(fields[0]) * scale
    return values


# --- the reading -----------------------------------------------------------------------------


@dataclass
class Problem:
    count: int
    example: str


@dataclass
class Reading:
    """One scrape of every scraper: the host's metrics in one resource, a scope per scraper;
    the process scraper adds a resource per process. `problems` collects what could not be
    read, by (scraper, kind)."""

    now_ns: int
    boot_ns: int
    batch: Metrics = field(default_factory=Metrics)
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._host = self.batch.resource_metrics.add()

    def scope(self, config: ScraperConfig) -> Output:
        """Where a scraper writes the host's metrics; sums start at boot."""
        return Output(self, config, self._host.scope_metrics.add(), self.boot_ns)

    def resource(self, config: ScraperConfig, attributes: dict[str, Any], start_ns: int) -> Output:
        """Metrics of their own resource, like one process; sums start at `start_ns`."""
        rm = self.batch.resource_metrics.add()
        for key, value in attributes.items():
            set_attr(rm.resource.attributes, key, value)
        return Output(self, config, rm.scope_metrics.add(), start_ns)

    def problem(self, scraper: str, kind: str, message: str) -> None:
        seen = self.problems.get((scraper, kind))
        if seen is None:
            self.problems[(scraper, kind)] = Problem(1, message)
        else:
            seen.count += 1

    def finish(self) -> Metrics:
        """The batch without the scopes and resources that stayed empty."""
        for rm in list(self.batch.resource_metrics):
            for sm in [sm for sm in rm.scope_metrics if not sm.metrics]:
                rm.scope_metrics.remove(sm)
        for rm in [rm for rm in self.batch.resource_metrics if not rm.scope_metrics]:
            self.batch.resource_metrics.remove(rm)
        return self.batch


class Output:
    """A scraper's view of the reading: emits the metrics its config has on."""

    def __init__(
        self, reading: Reading, config: ScraperConfig, scope: ScopeMetrics, start_ns: int
    ) -> None:
        self.reading, self.config, self.start_ns = reading, config, start_ns
        self._scope = scope
        scope.scope.name = SCOPE_PREFIX + config.NAME

    def on(self, name: str) -> bool:
        return self.config.enabled(name)

    def problem(self, kind: str, message: str) -> None:
        self.reading.problem(self.config.NAME, kind, message)

    def emit(self, name: str, points: Points) -> None:
        """`points` as the metric `name`, when it is on and has any."""
        if not points or not self.on(name):
            return
        spec = self.config.METRICS[name]
        metric = self._scope.metrics.add()
        metric.name, metric.unit, metric.description = name, spec.unit, spec.description
        if spec.gauge:
            data_points = metric.gauge.data_points
        else:
            metric.sum.aggregation_temporality = _CUMULATIVE
            metric.sum.is_monotonic = spec.monotonic
            data_points = metric.sum.data_points
        for attributes, value in points:
            point = data_points.add()
            point.start_time_unix_nano, point.time_unix_nano = self.start_ns, self.reading.now_ns
            if spec.integer:
                point.as_int = int(value)
            else:
                point.as_double = float(value)
            for key, attr in attributes.items():
                set_attr(point.attributes, key, attr)
