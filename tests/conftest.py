import pytest

from tests.support.aws import isolate, start_moto
from tests.support.backend import Backend


@pytest.fixture
async def backend():
    """A real OTLP backend (gRPC and HTTP) on loopback that records what it accepts."""
    async with Backend() as b:
        yield b


@pytest.fixture(scope="session")
def moto_server():
    """moto's AWS server on loopback, for the whole run; its URL."""
    server, url = start_moto()
    yield url
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch, tmp_path):
    """Fixed test credentials and region for AWS clients, and nothing else of AWS's."""
    isolate(monkeypatch, tmp_path)
