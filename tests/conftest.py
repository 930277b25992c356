import pytest

from tests.support.backend import Backend


@pytest.fixture
async def backend():
    """A real OTLP backend (gRPC and HTTP) on loopback that records what it accepts."""
    async with Backend() as b:
        yield b
