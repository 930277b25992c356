"""resourcedetection processor: resource attributes of the place the collector runs, detected
once at start and added to every resource passing through, as the OTel Collector's
resourcedetection processor does.

Detectors run in the configured order within `timeout`; when several find the same attribute,
the first one's value is kept. A detector that fails or is still running at the timeout logs one
line and adds nothing; the collector starts all the same.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from collector.core.component import Factory, Kind, Settings, Stability
from collector.core.config_types import ComponentConfig, Duration, format_duration
from collector.core.consumer import Consumer
from collector.core.pdata import resources, set_attr
from collector.core.signals import Signal
from collector.processors.internal.base import Processor
from collector.processors.resourcedetection.detectors import DETECTORS, Attributes, DetectionError

# Attributes the system detector leaves out unless enabled, as upstream.
_SYSTEM_OFF_BY_DEFAULT = frozenset({"host.arch", "host.id", "os.description"})


class Toggle(ComponentConfig):
    enabled: bool
    """Whether the detector sets this attribute."""


class DetectorConfig(ComponentConfig):
    resource_attributes: dict[str, Toggle] = Field(default_factory=dict)
    """Attributes turned on or off, as `{faas.instance: {enabled: false}}` (default empty =
    every attribute the detector finds)."""

    def enabled(self, default_off: frozenset[str] = frozenset()):
        """Whether an attribute is set: as configured, else on unless in `default_off`."""
        toggles = {key: toggle.enabled for key, toggle in self.resource_attributes.items()}
        return lambda key: toggles.get(key, key not in default_off)


class SystemConfig(DetectorConfig):
    resource_attributes: dict[str, Toggle] = Field(default_factory=dict)
    """Attributes turned on or off, as `{host.arch: {enabled: true}}` (default empty =
    host.name and os.type; host.arch, host.id and os.description only when enabled)."""
    hostname_sources: list[Literal["dns", "os"]] = Field(["dns", "os"], min_length=1)
    """Where host.name comes from, first answer wins: `dns` (the fully qualified name) and
    `os` (the kernel's host name). Default [dns, os]."""


class Config(ComponentConfig):
    detectors: list[Literal["env", "system", "lambda", "ecs", "ec2", "docker"]] = ["env"]
    """Detectors in order: `env` (OTEL_RESOURCE_ATTRIBUTES), `system` (host.name, os.type),
    `lambda` (the function's cloud.*, faas.*, aws.log.*), `ecs` (the task and container from the
    ECS Task Metadata Endpoint v4), `ec2` (the instance from the instance metadata service,
    IMDSv2), `docker` (the Docker host's host.name and os.type, from its daemon at
    DOCKER_HOST). Default [env]."""
    override: bool = True
    """Whether detected attributes replace the ones a resource already has (default true);
    false keeps what the sender set."""
    timeout: Duration = Field(5.0, gt=0)
    """Time all detectors together may take at start (default 5s)."""
    system: SystemConfig = Field(default_factory=SystemConfig)
    """Options of the `system` detector."""
    lambda_: DetectorConfig = Field(default_factory=DetectorConfig, alias="lambda")
    """Options of the `lambda` detector."""
    ecs: DetectorConfig = Field(default_factory=DetectorConfig)
    """Options of the `ecs` detector."""
    ec2: DetectorConfig = Field(default_factory=DetectorConfig)
    """Options of the `ec2` detector (instance `tags` are not read: that needs the EC2 API)."""
    docker: DetectorConfig = Field(default_factory=DetectorConfig)
    """Options of the `docker` detector."""


class ResourceDetectionProcessor(Processor):
    mutates_data = True
    attributes_only = True

    def __init__(
        self,
        settings: Settings,
        config: Config,
        signal: Signal,
        next: Consumer,
        *,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        super().__init__(settings, config, signal, next)
        self.environ = environ
        self.detected: Attributes = {}

    async def start(self, host) -> None:
        self.detected = await detect(self.config, self.environ, self.log)
        kv = {"detectors": ",".join(self.config.detectors), "attributes": len(self.detected)}
        self.log.info("resource detected", extra={"kv": kv})

    def process(self, batch):
        detected, override = self.detected, self.config.override
        if not detected:
            return batch
        for res in resources(batch):
            attrs = res.resource.attributes
            present = set() if override else {kv.key for kv in attrs}
            for key, value in detected.items():
                if key not in present:
                    set_attr(attrs, key, value)
        return batch


async def detect(config: Config, environ: Mapping[str, str], log) -> Attributes:
    """Every configured detector's attributes, the first detector's value winning."""
    options = {
        "env": {"enabled": DetectorConfig().enabled()},
        "system": {
            "enabled": config.system.enabled(_SYSTEM_OFF_BY_DEFAULT),
            "hostname_sources": config.system.hostname_sources,
        },
        "lambda": {"enabled": config.lambda_.enabled()},
        "ecs": {"enabled": config.ecs.enabled()},
        "ec2": {"enabled": config.ec2.enabled()},
        "docker": {"enabled": config.docker.enabled()},
    }
    found: Attributes = {}
    deadline = asyncio.get_running_loop().time() + config.timeout
    for name in config.detectors:
        try:
            async with asyncio.timeout_at(deadline):
                attributes = await DETECTORS[name](environ, **options[name])
        except TimeoutError:
            log.warning(
                f"resource detection: {name} not done within {format_duration(config.timeout)}"
            )
            break
        except DetectionError as e:
            log.warning(f"resource detection: {name} failed: {e}")
            continue
        for key, value in attributes.items():
            found.setdefault(key, value)
    return found


factory = Factory(
    kind=Kind.PROCESSOR,
    type="resourcedetection",
    config=Config,
    create=ResourceDetectionProcessor,
    signals={s: Stability.BETA for s in Signal},
    aliases=("resource_detection",),
    description="Adds resource attributes of the environment, host, Lambda function or ECS task.",
)
