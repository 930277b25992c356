"""Background tasks stopped one way: cancelled, then waited for until they have ended."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable


async def cancel(tasks: Iterable[asyncio.Task | None]) -> None:
    """Cancel every task of `tasks` (None stands for none) and wait until each has ended; an
    error a task ended with other than its cancellation is raised."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
