"""Fixtures that start the container tests' processes (tests/support/containers.py); every
process is killed when its test ends."""

from __future__ import annotations

import pytest

from tests.support.containers import MetadataEndpoint, Service, Sidecar


@pytest.fixture
def sidecar(tmp_path):
    sidecar = Sidecar(tmp_path)
    with sidecar.process:
        yield sidecar


@pytest.fixture
def metadata_endpoint():
    endpoints = []

    def start(fail: str | None = None) -> MetadataEndpoint:
        endpoints.append(MetadataEndpoint(fail))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.stop()


@pytest.fixture
def service(tmp_path, sidecar):
    """Start a command under coldtail-instrument exporting to the sidecar: `service(command,
    port, **env)`."""
    services = []

    def start(command: list[str], port: int, **env: str) -> Service:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.endpoint,
            "OTEL_SERVICE_NAME": "checkout",
            **env,
        }
        services.append(Service(command, port, env, tmp_path / f"service{len(services)}.log"))
        return services[-1]

    yield start
    for started in services:
        started.kill()
