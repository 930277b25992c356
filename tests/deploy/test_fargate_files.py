"""Static checks of the Fargate Dockerfile and task definition (Docker cannot run here)."""

import json
import shlex
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from gunicorn.config import Config

ROOT = Path(__file__).resolve().parents[2]
FARGATE = ROOT / "deploy" / "fargate"
CONFIG_IN_IMAGE = "/etc/coldtail/config.yaml"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (FARGATE / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def only(keyword: str) -> str:
    found = [arguments for kw, arguments in dockerfile_instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def healthcheck_command() -> list[str]:
    arguments = only("HEALTHCHECK")
    _, cmd, exec_form = arguments.partition(" CMD ")
    assert cmd, arguments
    return json.loads(exec_form)


def task_definition() -> dict:
    return json.loads((FARGATE / "task-definition.json").read_text())


def containers() -> dict[str, dict]:
    return {c["name"]: c for c in task_definition()["containerDefinitions"]}


def environment(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def test_dockerfile_builds_a_small_non_root_image():
    assert dockerfile_instructions()[0] == ("FROM", "python:3.11-slim")
    assert only("USER") not in ("root", "0", "0:0")
    assert set(only("EXPOSE").split()) == {"4317", "4318"}


def test_dockerfile_runs_coldtail_on_the_sidecar_config():
    assert json.loads(only("ENTRYPOINT")) == ["coldtail", "run"]
    assert json.loads(only("CMD")) == ["--config", CONFIG_IN_IMAGE]
    copies = [shlex.split(args) for kw, args in dockerfile_instructions() if kw == "COPY"]
    assert ["config/sidecar.yaml", CONFIG_IN_IMAGE] in copies
    assert any(kw == "RUN" and "pip install ." in args for kw, args in dockerfile_instructions())


def test_every_copy_source_exists_in_the_repository():
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            *sources, _destination = [a for a in shlex.split(arguments) if not a.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY source {source} is missing"


def test_the_install_copies_what_pyproject_needs():
    sources = set()
    for keyword, arguments in dockerfile_instructions():
        if keyword == "COPY":
            sources.update(a.rstrip("/") for a in shlex.split(arguments)[:-1])
    assert {"pyproject.toml", "README.md", "collector", "instrumentation"} <= sources


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_health_check_command_tells_healthy_from_unhealthy(status, healthy, monkeypatch):
    monkeypatch.setattr(_Health, "status", status)
    # Any proxy in the environment must be ignored for the loopback request.
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        executable, flag, code = healthcheck_command()
        assert (executable, flag) == ("python", "-c")
        assert "http://127.0.0.1:13133/" in code
        # The same code, pointed at this test's server instead of the extension's port.
        code = code.replace("127.0.0.1:13133", f"127.0.0.1:{server.server_port}")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) == healthy, result.stderr


def test_task_definition_is_a_fargate_task_with_app_and_sidecar():
    task = task_definition()
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"
    assert {"family", "cpu", "memory", "executionRoleArn"} <= set(task)
    assert set(containers()) == {"app", "coldtail"}
    for container in containers().values():
        assert container["essential"] is True
        assert container["logConfiguration"]["logDriver"] == "awslogs"
        assert 0 < container["stopTimeout"] <= 120  # Fargate's maximum


def test_app_waits_for_a_healthy_sidecar_and_exports_to_it():
    app = containers()["app"]
    assert app["dependsOn"] == [{"containerName": "coldtail", "condition": "HEALTHY"}]
    env = environment(app)
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["OTEL_SERVICE_NAME"]
    assert env["OTEL_PYTHON_ENABLED_INSTRUMENTATIONS"]


def gunicorn_config(argv: list[str]) -> tuple[Config, list[str]]:
    """gunicorn's settings and positional arguments for `argv`, read by its own parser."""
    config = Config()
    parsed = config.parser().parse_args(argv)
    for name, value in vars(parsed).items():
        if value is not None and name != "args":
            config.set(name, value)
    return config, parsed.args


def test_app_is_started_through_coldtail_instrument():
    app = containers()["app"]
    # No entryPoint: the image's own would otherwise run first. command replaces its CMD.
    assert "entryPoint" not in app
    wrapper, *command = app["command"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert wrapper == "coldtail-instrument" and wrapper in scripts
    assert command[0] == "gunicorn"
    config, positional = gunicorn_config(command[1:])
    assert positional == ["app:app"]
    (port,) = [mapping["containerPort"] for mapping in app["portMappings"]]
    assert config.bind == [f"0.0.0.0:{port}"]
    # The workers' graceful stop, then the span flush, fit before ECS's SIGKILL.
    assert config.graceful_timeout < app["stopTimeout"]


def test_a_crashed_sidecar_is_restarted_without_stopping_the_task():
    sidecar = containers()["coldtail"]
    assert sidecar["essential"] is True  # a task that cannot start its sidecar stops
    policy = sidecar["restartPolicy"]
    assert policy["enabled"] is True
    assert 0 in policy["ignoredExitCodes"]  # a drained stop is not a crash
    assert 60 <= policy["restartAttemptPeriod"] <= 1800  # ECS's bounds


def cloudformation_names(value, key: str = ""):
    """A task definition in ECS's JSON as CloudFormation names it: each key with a capital
    first letter, but for the free-form keys of logConfiguration.options."""
    if isinstance(value, dict) and key != "options":
        return {k[0].upper() + k[1:]: cloudformation_names(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [cloudformation_names(v) for v in value]
    return value


def test_task_definition_is_valid_by_the_ecs_resource_schema(tmp_path):
    template = tmp_path / "task.json"
    template.write_text(
        json.dumps(
            {
                "AWSTemplateFormatVersion": "2010-09-09",
                "Resources": {
                    "Task": {
                        "Type": "AWS::ECS::TaskDefinition",
                        "Properties": cloudformation_names(task_definition()),
                    }
                },
            }
        )
    )
    result = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), "--format", "parseable", str(template)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sidecar_matches_the_image():
    sidecar = containers()["coldtail"]
    assert sidecar["command"] == ["--config", CONFIG_IN_IMAGE]
    assert "COLDTAIL_BACKEND_ENDPOINT" in environment(sidecar)
    health = sidecar["healthCheck"]
    assert health["command"] == ["CMD", *healthcheck_command()]
    assert 5 <= health["interval"] <= 300
    assert 2 <= health["timeout"] <= 60
    assert 1 <= health["retries"] <= 10
    assert 0 <= health["startPeriod"] <= 300


def test_the_sidecar_config_is_valid():
    result = subprocess.run(
        [sys.executable, "-m", "collector", "validate", "--config", "config/sidecar.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
