"""Consumer protocol and the error classes every component uses to classify failures.

A consumer takes one signal's batch (see collector.core.pdata). It raises PermanentError for data
that can never be accepted (never retried; a receiver answers 500 / INTERNAL, as the OTel
Collector does, or partial success when only some items were rejected) and RetryableError when
the same data may succeed later (503 / UNAVAILABLE with Retry-After). Data a receiver cannot
decode never reaches a consumer: it is answered 400 / INVALID_ARGUMENT there.
"""

from __future__ import annotations

from typing import Protocol


class Consumer(Protocol):
    # True when consume() changes the batch in place; fan-out then hands it a copy.
    mutates_data: bool

    async def consume(self, batch) -> None: ...


class ConsumerError(Exception):
    """Base for classified pipeline errors."""


class PermanentError(ConsumerError):
    """Bad data: retrying cannot help.

    `rejected` is how many items were refused, when fewer than the whole batch (the receiver
    then reports partial success); None means all of them.
    """

    def __init__(self, message: str, rejected: int | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected


class RetryableError(ConsumerError):
    """Temporarily refused (backend down, memory limit, queue full); `retry_after` in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
