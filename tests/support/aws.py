"""AWS for tests: moto's server (X-Ray, CloudWatch Logs, STS, ...) on loopback, the
environment that points AWS clients at fixed credentials and nothing else, and botocore clients
for reading back what the collector stored."""

from __future__ import annotations

from pathlib import Path

import botocore.session
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret"}
# Variables that would bring other credentials, regions or endpoints in.
FOREIGN = (
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_REGION",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
)


def isolate(monkeypatch, tmp_path: Path, credentials: bool = True) -> None:
    """Fixed test credentials (or none) and region; no shared files, no instance metadata."""
    for name in FOREIGN + tuple(CREDENTIALS):
        monkeypatch.delenv(name, raising=False)
    if credentials:
        for name, value in CREDENTIALS.items():
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def start_moto() -> tuple[ThreadedMotoServer, str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def aws_client(service: str, endpoint: str):
    return botocore.session.Session().create_client(
        service, region_name=REGION, endpoint_url=endpoint
    )
