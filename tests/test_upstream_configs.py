"""OpenTelemetry Collector configs published by other projects (tests/testdata/upstream_configs,
each naming its source on line 1) load as coldtail config: `validate` accepts each one with the
environment it expects, and `coldtail run` starts from it, reports ready (and healthy, where
it has the health_check extension) and stops cleanly on SIGTERM.

For the run, every address is moved to loopback with `--set`: listeners to free 127.0.0.1
ports, exporters and scrape targets to unused 127.0.0.1 ports, files to a temporary directory.
The collector's sockets are then checked: all on loopback, every moved listener bound."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import pytest
import yaml

from collector.core.config import ConfigError, ServiceConfig, validate
from collector.core.confmap import load
from collector.registry import registry
from emulator.ecs_metadata import EcsMetadataServer
from tests.support.process import CollectorProcess, free_port

CONFIGS = Path(__file__).parent / "testdata" / "upstream_configs"
# Configs built around components coldtail does not have on purpose: `validate` refuses them,
# naming each one and, for the common ones, what to use instead (upstream_components.yaml).
REFUSED = {
    "opentelemetry-demo-otelcol-config.yaml": [
        "receivers::nginx: unknown type 'nginx' (the OTel Collector's nginx receiver is not in "
        "coldtail: not planned: scrape nginx-prometheus-exporter with the prometheus receiver)",
        "receivers::docker_stats: unknown type 'docker_stats' (the OTel Collector's docker_stats "
        "receiver is not in coldtail: not planned: on ECS and Fargate use "
        "awsecscontainermetrics; elsewhere scrape cAdvisor with the prometheus receiver)",
        "receivers::redis: unknown type 'redis' (the OTel Collector's redis receiver is not in "
        "coldtail: not planned: scrape redis_exporter with the prometheus receiver)",
        "receivers::postgresql: unknown type 'postgresql' (the OTel Collector's postgresql "
        "receiver is not in coldtail: not planned: scrape postgres_exporter with the prometheus "
        "receiver)",
        "processors::gen_ai_normalizer: unknown type 'gen_ai_normalizer'",
        "processors::transform/sanitize_spans::trace_statements::0::statements::0: unknown "
        "function 'set_semconv_span_name' at column 1",
    ],
    "uptrace-docker-otel-collector.yaml": [
        "receivers::postgresql: unknown type 'postgresql' (the OTel Collector's postgresql "
        "receiver is not in coldtail: not planned: scrape postgres_exporter with the prometheus "
        "receiver)",
    ],
}
FILES = sorted(CONFIGS.glob("*.yaml"))
NAMES = [f.name for f in FILES]
RUNNABLE = [name for name in NAMES if name not in REFUSED]
SOURCE = re.compile(r"# Source: https://github\.com/[\w.-]+/[\w.-]+/blob/[0-9a-f]{40}/\S+\n")
REFERENCE = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")

# What the files' own deployments put in the environment: a Kubernetes pod (the Helm chart's
# downward API variables), the OpenTelemetry demo's .env, an ECS task with Amazon Managed
# Prometheus, a Honeycomb account.
ENV = {
    "MY_POD_IP": "10.42.0.17",
    "OTEL_K8S_NAMESPACE": "observability",
    "OTEL_K8S_NODE_NAME": "ip-10-0-1-23.ec2.internal",
    "OTEL_K8S_NODE_IP": "10.0.1.23",
    "OTEL_K8S_POD_NAME": "example-opentelemetry-collector-7d9c8b6f5-x2k4q",
    "OTEL_K8S_POD_IP": "10.42.0.17",
    "OTEL_COLLECTOR_HOST": "otel-collector",
    "OTEL_COLLECTOR_PORT_GRPC": "4317",
    "OTEL_COLLECTOR_PORT_HTTP": "4318",
    "FRONTEND_PROXY_ADDR": "frontend-proxy:8080",
    "IMAGE_PROVIDER_HOST": "image-provider",
    "IMAGE_PROVIDER_PORT": "8081",
    "POSTGRES_HOST": "astronomy-db",
    "POSTGRES_PORT": "5432",
    "POSTGRES_MONITORING_PASSWORD": "monitoring_password",
    "AD_PROMETHEUS_PORT": "9465",
    "AWS_REGION": "us-east-1",
    "AWS_PROMETHEUS_ENDPOINT": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/"
    "ws-5c1f4e7a-0d2b-4b7e-9a61-3f8e2c9d0a11/api/v1/remote_write",
    "AWS_PROMETHEUS_SCRAPING_ENDPOINT": "localhost:9464",
    "HONEYCOMB_API_KEY": "hcaik_01j2x3y4z5a6b7c8d9e0f1g2h3j4k5m6n7p8q9r0s1t2v3w4x5y6z7",
}

# Only for the run: test credentials, no instance metadata, no proxy between the collector
# and loopback.
RUN_ENV = {
    **ENV,
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
    **{name: "" for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    **{name: "" for name in ("http_proxy", "https_proxy", "all_proxy")},
}

# Component types that listen on `endpoint` (receivers with `protocols` listen on each one's).
LISTENING_RECEIVERS = {"zipkin", "statsd", "awsxray", "opencensus"}
PROTOCOL_RECEIVERS = {"otlp", "jaeger"}
LISTENING_EXTENSIONS = {"health_check", "pprof", "zpages", "awsproxy"}
CLIENT_KEYS = {"endpoint", "traces_endpoint", "metrics_endpoint", "logs_endpoint"}
AWS_EXPORTERS = {"awsxray", "awsemf"}
PARALLEL = 3  # collectors starting at once: a 2-core machine stays responsive


def kind_of(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def unused() -> int:
    """A loopback port nothing listens on: connections to it are refused."""
    return free_port()


def client_address(value: Any) -> Any:
    """`value` (host:port, or a URL) pointing at an unused loopback port instead."""
    if not isinstance(value, str) or value.startswith("unix:"):
        return value
    if "://" in value:
        parts = urlsplit(value)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{unused()}"))
    return f"127.0.0.1:{unused()}"


def clients_to_loopback(node: Any) -> Any:
    """A copy of `node` with every client endpoint key pointing at loopback."""
    if isinstance(node, dict):
        return {
            k: client_address(v) if k in CLIENT_KEYS else clients_to_loopback(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [clients_to_loopback(v) for v in node]
    return node


@dataclass
class Plan:
    """The `--set` overrides for one file, and the listeners they set, by component."""

    sets: list[str] = field(default_factory=list)
    listeners: dict[str, str] = field(default_factory=dict)
    health: str | None = None  # the URL of an enabled health_check extension
    needs_ecs: bool = False

    def listen(self, owner: str) -> str:
        address = f"127.0.0.1:{free_port()}"
        self.listeners[f"{owner} {len(self.listeners)}"] = address
        return address


def relocated(tree: dict, plan: Plan, tmp: Path) -> dict:
    """A copy of the loaded config with every address on loopback, recording listeners."""
    new = copy.deepcopy(tree)
    used = used_components(tree)

    for rid, config in (new.get("receivers") or {}).items():
        config = new["receivers"][rid] = dict(config or {})
        kind, owner = kind_of(rid), f"receivers::{rid}" if rid in used else "unused"
        if kind in PROTOCOL_RECEIVERS:
            protocols = config["protocols"] = dict(config.get("protocols") or {})
            for name, protocol in protocols.items():
                protocols[name] = {**(protocol or {}), "endpoint": plan.listen(owner)}
        elif kind in LISTENING_RECEIVERS:
            config["endpoint"] = plan.listen(owner)
            if kind == "awsxray" and config.get("proxy_server", {}) is not None:
                config["proxy_server"] = {
                    **(config.get("proxy_server") or {}),
                    "endpoint": plan.listen(owner),
                    "aws_endpoint": f"http://127.0.0.1:{unused()}",
                }
        elif kind == "prometheus":
            for job in (config.get("config") or {}).get("scrape_configs") or []:
                for static in job.get("static_configs") or []:
                    targets = static.get("targets") or []
                    static["targets"] = [f"127.0.0.1:{unused()}" for _ in targets]
        else:
            new["receivers"][rid] = config = clients_to_loopback(config)
        if kind == "hostmetrics" and "root_path" in config:
            config["root_path"] = "/"  # where a DaemonSet mounts the host's root
        if kind == "awsecscontainermetrics":
            plan.needs_ecs = True

    for xid, config in (new.get("extensions") or {}).items():
        config = new["extensions"][xid] = dict(config or {})
        kind, owner = kind_of(xid), f"extensions::{xid}" if xid in used else "unused"
        if kind in LISTENING_EXTENSIONS:
            config["endpoint"] = plan.listen(owner)
            if kind == "awsproxy":
                config["aws_endpoint"] = f"http://127.0.0.1:{unused()}"
            if kind == "health_check" and xid in used:
                plan.health = f"http://{config['endpoint']}{config.get('path', '/')}"
        elif kind == "file_storage":
            directory = tmp / xid.replace("/", "-")
            directory.mkdir()
            config["directory"] = str(directory)
        else:
            new["extensions"][xid] = clients_to_loopback(config)

    for eid, config in (new.get("exporters") or {}).items():
        config = new["exporters"][eid] = dict(config or {})
        kind, owner = kind_of(eid), f"exporters::{eid}" if eid in used else "unused"
        if kind == "prometheus":
            config["endpoint"] = plan.listen(owner)
        elif kind in AWS_EXPORTERS:
            config["endpoint"] = f"http://127.0.0.1:{unused()}"
        elif kind == "file":
            config["path"] = str(tmp / f"{eid.replace('/', '-')}.jsonl")
        else:
            new["exporters"][eid] = clients_to_loopback(config)

    for pid, config in (new.get("processors") or {}).items():
        if kind_of(pid) in {"resourcedetection", "resource_detection"}:
            plan.needs_ecs |= "ecs" in ((config or {}).get("detectors") or [])

    service = new.setdefault("service", {})
    telemetry = service["telemetry"] = clients_to_loopback(service.get("telemetry") or {})
    metrics = telemetry["metrics"] = dict(telemetry.get("metrics") or {})
    if metrics.get("level") != "none":
        readers = [r for r in metrics.get("readers") or [] if "pull" in (r or {})]
        if readers:
            for reader in readers:
                prometheus = reader["pull"]["exporter"]["prometheus"]
                prometheus["host"], port = plan.listen("telemetry").split(":")
                prometheus["port"] = int(port)
        elif not metrics.get("readers"):
            metrics["address"] = plan.listen("telemetry")
    return new


def used_components(tree: dict) -> set[str]:
    """Ids of the receivers and exporters in a pipeline and of the enabled extensions."""
    service = tree.get("service") or {}
    used = set(service.get("extensions") or [])
    for pipeline in (service.get("pipelines") or {}).values():
        used.update((pipeline or {}).get("receivers") or [])
        used.update((pipeline or {}).get("exporters") or [])
    return used


def differences(old: Any, new: Any, path: list[str]) -> list[str]:
    """`--set` assignments turning `old` into `new`: maps merge, anything else replaces."""
    if isinstance(new, dict) and isinstance(old, dict | None):
        old = old or {}
        out = []
        for key, value in new.items():
            if key not in old or old[key] != value:
                out += differences(old.get(key), value, [*path, str(key)])
        return out
    return [f"{'::'.join(path)}={json.dumps(new)}"]


def plan_for(config: Path, tmp: Path) -> Plan:
    plan = Plan()
    tree = load([str(config)], env=ENV)
    plan.sets = differences(tree, relocated(tree, plan, tmp), [])
    return plan


# --- the files ---------------------------------------------------------------------------


def test_the_collection_names_a_source_for_every_file():
    assert len(FILES) >= 18
    for config in FILES:
        first = config.read_text().splitlines(keepends=True)[0]
        assert SOURCE.fullmatch(first), f"{config.name}: line 1 is {first!r}"


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_validate_names_the_components_coldtail_lacks(name):
    with pytest.raises(ConfigError) as raised:
        validate(load([str(CONFIGS / name)], env=ENV), registry())
    # Each error up to the list of known types, which follows the unknown ones.
    errors = [str(error).split("; known ")[0] for error in raised.value.errors]
    assert errors == REFUSED[name]


@pytest.mark.parametrize("name", RUNNABLE)
def test_validate_accepts_the_config(name):
    config = CONFIGS / name
    raw = yaml.safe_load(config.read_text())
    wanted = {
        m.group(1)
        for m in REFERENCE.finditer(json.dumps(raw))
        if m.group(2) is None  # ${X:-default} needs no value
    }
    assert wanted <= ENV.keys(), f"no test value for {sorted(wanted - ENV.keys())}"
    service, errors = None, []
    try:
        service = validate(load([str(config)], env=ENV), registry())
    except ConfigError as e:
        errors = [str(error) for error in e.errors]
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
    assert isinstance(service, ServiceConfig)
    assert service.pipelines, "no pipeline"
    # Every pipeline the file declares is built, with the components it lists.
    # (Profiles pipelines, experimental upstream, are skipped with a warning.)
    declared = {
        name: body
        for name, body in raw["service"]["pipelines"].items()
        if name.partition("/")[0] != "profiles"
    }
    assert {str(p.id) for p in service.pipelines} == set(declared)
    for pipeline in service.pipelines:
        assert [str(r) for r in pipeline.receivers] == declared[str(pipeline.id)]["receivers"]
        assert [str(e) for e in pipeline.exporters] == declared[str(pipeline.id)]["exporters"]


# --- running them ------------------------------------------------------------------------


@dataclass
class Run:
    plan: Plan
    error: str | None = None
    exit_code: int | None = None
    log: str = ""
    listening: set[str] = field(default_factory=set)
    remote: set[str] = field(default_factory=set)
    health: int | None = None


def sockets(pid: int) -> tuple[set[str], set[str]]:
    """The addresses the process listens on (TCP) or is bound to (UDP), and those it is
    connected to."""
    bound, remote = set(), set()
    for conn in psutil.Process(pid).net_connections(kind="inet"):
        # gRPC listens on an IPv6 socket: 127.0.0.1 shows as ::ffff:127.0.0.1 there.
        if conn.raddr:
            remote.add(f"{conn.raddr.ip.removeprefix('::ffff:')}:{conn.raddr.port}")
        elif conn.status == psutil.CONN_LISTEN or conn.type == socket.SOCK_DGRAM:
            bound.add(f"{conn.laddr.ip.removeprefix('::ffff:')}:{conn.laddr.port}")
    return bound, remote


def health(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def run(config: Path, tmp: Path, ecs_uri: str) -> Run:
    """One run of `config`; again with new ports when a port picked free was taken before the
    collector bound it (by another process: files run a few at a time)."""
    result = run_once(config, tmp, ecs_uri)
    if "(address in use)" in result.log:
        result = run_once(config, tmp, ecs_uri)
    return result


def run_once(config: Path, tmp: Path, ecs_uri: str) -> Run:
    try:
        plan = plan_for(config, tmp)
    except Exception as e:
        return Run(Plan(), error=f"cannot plan the overrides: {e!r}")
    env = {**RUN_ENV, "ECS_CONTAINER_METADATA_URI_V4": ecs_uri} if plan.needs_ecs else RUN_ENV
    args = [arg for s in plan.sets for arg in ("--set", s)]
    collector = CollectorProcess(config, *args, env=env)
    result = Run(plan)
    try:
        collector.start(timeout=30)
        assert collector.proc
        result.listening, result.remote = sockets(collector.proc.pid)
        if plan.health:
            result.health = health(plan.health)
        result.exit_code = collector.stop(timeout=20)
    except Exception as e:
        result.error = str(e)
    finally:
        collector.kill()
        result.log = collector.log
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Run]:
    """Every file run once, a few at a time, with an ECS task metadata endpoint on loopback
    for the configs that read one."""

    async def run_all() -> dict[str, Run]:
        async with EcsMetadataServer() as metadata:
            with ThreadPoolExecutor(PARALLEL) as pool:
                loop = asyncio.get_running_loop()
                futures = [
                    loop.run_in_executor(
                        pool, run, config, tmp_path_factory.mktemp(config.stem), metadata.uri
                    )
                    for config in FILES
                    if config.name in RUNNABLE
                ]
                return dict(zip(RUNNABLE, await asyncio.gather(*futures), strict=True))

    return asyncio.run(run_all())


def held_undeliverable_data(log: str, timed_out: str) -> bool:
    """Whether the component a "shutdown timed out" line names is an exporter that was still
    retrying a send to its (refused) loopback endpoint: it spends the shutdown budget on that
    data by design. Whether any reached it before the stop, as the prometheus receiver's `up`
    series do once a scrape has failed, depends on timing."""
    label = json.loads(timed_out.split("\t")[-1])["component"]
    kind, name = label.split()[:2]
    return kind == "exporter" and any(
        "exporting failed, will retry" in line and f'"name": "{name}"' in line
        for line in log.splitlines()
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", RUNNABLE)
def test_the_collector_runs_the_config_on_loopback_and_stops(name, runs):
    result = runs[name]
    assert result.error is None, f"{result.error}\nsets: {result.plan.sets}"
    assert result.exit_code == 0, result.log
    assert "shutdown complete" in result.log
    assert not [
        line
        for line in result.log.splitlines()
        if "shutdown timed out" in line and not held_undeliverable_data(result.log, line)
    ]
    # Every socket is on loopback, and every listener a pipeline uses was moved there.
    assert all(address.startswith("127.0.0.1:") for address in result.listening), result.listening
    assert all(address.startswith("127.0.0.1:") for address in result.remote), result.remote
    moved = {a for owner, a in result.plan.listeners.items() if not owner.startswith("unused")}
    assert moved <= result.listening, f"not listening: {moved - result.listening}"
    if result.plan.health:
        assert result.health == 200, result.log
