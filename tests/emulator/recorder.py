"""What the emulator's tests share: the test functions and the recorder extension
(tests/emulator/lambda_extensions/recorder), reading what it recorded, and the environments an
emulator made."""

import asyncio
import time
from pathlib import Path

from emulator import EnvironmentHooks

FUNCTIONS = Path(__file__).parent / "lambda_functions"
RECORDER = Path(__file__).parent / "lambda_extensions" / "recorder"


class Environments(EnvironmentHooks):
    """Remembers every environment, the extensions registered when its init ended, and when
    each shutdown began."""

    def __init__(self) -> None:
        self.environments = []
        self.registered_at_init_end: list[list[str]] = []
        self.shutdowns: list[float] = []

    async def on_init_start(self, environment) -> None:
        self.environments.append(environment)

    async def on_init_end(self, environment, error) -> None:
        names = [e.name for e in environment.extensions.extensions.values()]
        self.registered_at_init_end.append(names)

    async def on_shutdown(self, environment, reason) -> None:
        self.shutdowns.append(time.time())


def telemetry(records) -> list[dict]:
    """Every Telemetry API event the recorder received, in order."""
    return [event for r in records("telemetry") for event in r["batch"]]


def of_type(events: list[dict], event_type: str) -> list[dict]:
    return [e["record"] for e in events if e["type"] == event_type]


async def eventually(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
