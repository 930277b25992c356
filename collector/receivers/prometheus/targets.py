"""Scrape targets: target groups from static_configs, file_sd_configs and http_sd_configs, each
target's labels populated and relabeled as Prometheus does, and the URL scraped."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import yaml

from collector.receivers.prometheus.config import FileSDConfig, ScrapeConfig, prom_duration
from collector.receivers.prometheus.relabel import Rule, relabel


@dataclass(frozen=True)
class Group:
    """Targets sharing labels (discovery's `__meta_*` labels included)."""

    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint to scrape, as its job's configuration and relabeling made it."""

    job: str
    url: str
    labels: tuple[tuple[str, str], ...]  # public labels: job, instance and the others
    interval: float
    timeout: float
    params: tuple[tuple[str, str], ...]

    @property
    def instance(self) -> str:
        return dict(self.labels).get("instance", "")


def parse_groups(data: Any, where: str, meta: dict[str, str]) -> list[Group]:
    """Target groups from a discovery file's or endpoint's decoded content: a list of
    {targets: [...], labels: {...}}; ValueError naming `where` when it is not that."""
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list of target groups")
    groups = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("targets", []), list):
            raise ValueError(f"{where}[{i}]: expected {{targets: [...], labels: {{...}}}}")
        labels = item.get("labels") or {}
        if not isinstance(labels, dict):
            raise ValueError(f"{where}[{i}]::labels: expected a map")
        targets = tuple(str(t) for t in item.get("targets") or [])
        merged = {**{str(k): str(v) for k, v in labels.items()}, **meta}
        groups.append(Group(targets, tuple(sorted(merged.items()))))
    return groups


def read_file_groups(config: FileSDConfig) -> tuple[list[Group], list[str]]:
    """The target groups of every file `config` matches, and an error per file that could not
    be read (its groups are then missing: the caller keeps the last good ones)."""
    groups: list[Group] = []
    errors: list[str] = []
    for path in file_paths(config):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
            groups += parse_groups(data or [], path, {"__meta_filepath": path})
        except (OSError, ValueError, yaml.YAMLError) as e:
            errors.append(f"{path}: {e}")
    return groups, errors


def file_paths(config: FileSDConfig) -> list[str]:
    paths: list[str] = []
    for pattern in config.files:
        paths += sorted(glob.glob(pattern))
    return paths


def file_stamp(config: FileSDConfig) -> tuple:
    """What changes when a file of `config` is added, removed or rewritten."""
    stamp = []
    for path in file_paths(config):
        try:
            st = os.stat(path)
            stamp.append((path, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((path, 0, 0))
    return tuple(stamp)


def build_targets(
    job: ScrapeConfig,
    interval: float,
    timeout: float,
    groups: list[Group],
    rules: list[Rule],
) -> tuple[list[ScrapeTarget], list[str]]:
    """The job's targets after relabeling (deduplicated), and an error per target dropped for a
    reason other than a relabel rule."""
    targets: dict[tuple, ScrapeTarget] = {}
    errors: list[str] = []
    for group in groups:
        for address in group.targets:
            labels = {**dict(group.labels), "__address__": address}
            for name, value in _defaults(job, interval, timeout).items():
                labels.setdefault(name, value)
            for name, values in job.params.items():
                if values:
                    labels.setdefault(f"__param_{name}", values[0])
            try:
                target = _target(job, relabel(labels, rules), interval, timeout)
            except ValueError as e:
                errors.append(f"target {address!r}: {e}")
                continue
            if target is not None:
                targets[(target.url, target.labels)] = target
    return list(targets.values()), errors


def _defaults(job: ScrapeConfig, interval: float, timeout: float) -> dict[str, str]:
    return {
        "job": job.job_name,
        "__scheme__": job.scheme,
        "__metrics_path__": job.metrics_path,
        "__scrape_interval__": _seconds(interval),
        "__scrape_timeout__": _seconds(timeout),
    }


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if value < 1 else f"{value:g}s"


def _target(
    job: ScrapeConfig, labels: dict[str, str] | None, interval: float, timeout: float
) -> ScrapeTarget | None:
    if labels is None:
        return None  # dropped by a relabel rule
    address = labels.get("__address__", "")
    if not address:
        raise ValueError("no __address__ label after relabeling")
    if "/" in address:
        raise ValueError(f"__address__ {address!r} must be host:port, without a path")
    scheme = labels.get("__scheme__", job.scheme)
    if scheme not in ("http", "https"):
        raise ValueError(f"__scheme__ {scheme!r} must be http or https")
    if "__scrape_interval__" in labels:
        interval = prom_duration(labels["__scrape_interval__"])
    if "__scrape_timeout__" in labels:
        timeout = prom_duration(labels["__scrape_timeout__"])
    if not 0 < timeout <= interval:
        raise ValueError(f"scrape timeout {timeout:g}s must be within the interval {interval:g}s")
    params = {name: values[0] for name, values in job.params.items() if values}
    params.update(
        {
            name.removeprefix("__param_"): value
            for name, value in labels.items()
            if name.startswith("__param_")
        }
    )
    path = labels.get("__metrics_path__", job.metrics_path)
    query = urlencode(sorted(params.items()))
    public = {k: v for k, v in labels.items() if not k.startswith("__")}
    public.setdefault("instance", address)
    return ScrapeTarget(
        job=job.job_name,
        url=f"{scheme}://{address}{path}" + (f"?{query}" if query else ""),
        labels=tuple(sorted(public.items())),
        interval=interval,
        timeout=timeout,
        params=tuple(sorted(params.items())),
    )
