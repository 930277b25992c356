"""When the extension pushes what the pipelines hold into the backends (COLDTAIL_FLUSH).

Lambda bills an invocation until every extension asked for its next event, and freezes the
environment right after: a flush before that is paid for by the user on every invocation, and
one after it waits, frozen, for the next invocation or SHUTDOWN. The strategies:

- `background` (default): ask for the next event at once (the function's spans reach the front
  door before it responds, and wait there through a freeze); a background thread flushes once
  Lambda's report of the invocation has arrived (after its init report, so that cold starts are
  joined first). What is still held when the environment freezes goes out when it thaws, during
  the next invocation, or at SHUTDOWN.
- `end-of-invocation`: flush after every invocation before asking for the next event (each
  invocation's data leaves before the freeze; each invocation is billed for the export).
- `age:<duration>` (e.g. `age:30s`): flush before asking for the next event only when the
  oldest data received since the last flush is at least that old; otherwise leave it to the
  pipeline's own batching.
- `shutdown`: never flush at the end of an invocation: data leaves when the pipeline's own
  batching sends it while the environment is thawed, or at SHUTDOWN.

Whatever the strategy, a flush never waits past the invocation's deadline, and SHUTDOWN drains
everything within its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import NamedTuple

from collector.awslambda.extension.forwarder import Forwarder
from collector.awslambda.extension.front_door import FrontDoor
from collector.awslambda.extension.pipelines import Pipelines

BACKGROUND = "background"
END_OF_INVOCATION = "end-of-invocation"
AGE = "age"
SHUTDOWN = "shutdown"
# How long a background flush waits for Lambda's report of an invocation (seconds while the
# environment is thawed; a freeze in between makes the wait end early, which only makes the
# flush come sooner) and how long one flush may take.
_REPORT_WAIT_S = 30.0
_BACKGROUND_FLUSH_S = 10.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}

log = logging.getLogger("coldtail.lambda_extension")


class Strategy(NamedTuple):
    kind: str
    age_s: float = 0.0

    def __str__(self) -> str:
        return f"{AGE}:{self.age_s:g}s" if self.kind == AGE else self.kind


def parse_strategy(text: str) -> Strategy:
    """A COLDTAIL_FLUSH value; ValueError, saying what is accepted, otherwise."""
    text = text.strip()
    if text in ("", BACKGROUND):
        return Strategy(BACKGROUND)
    if text in (END_OF_INVOCATION, SHUTDOWN):
        return Strategy(text)
    kind, _, duration = text.partition(":")
    if kind == AGE:
        for unit, scale in sorted(_UNITS.items(), key=lambda item: -len(item[0])):
            number = duration.removesuffix(unit)
            if number != duration and number.replace(".", "", 1).isdigit():
                return Strategy(AGE, float(number) * scale)
    raise ValueError(
        f"COLDTAIL_FLUSH={text!r}: expected {BACKGROUND}, {END_OF_INVOCATION}, {SHUTDOWN} or "
        f"{AGE}:<duration> such as {AGE}:30s"
    )


class Flusher:
    """Carries out `strategy` after each invocation; owns the background flush thread."""

    def __init__(
        self,
        strategy: Strategy,
        front_door: FrontDoor,
        forwarder: Forwarder,
        pipelines: Pipelines,
        telemetry: bool,
    ) -> None:
        self.strategy = strategy
        self.front_door = front_door
        self.forwarder = forwarder
        self.pipelines = pipelines
        self.telemetry = telemetry
        self._cond = threading.Condition()
        self._pending: str | None = None  # request id of the newest invocation to flush after
        self._stopping = False
        self._thread: threading.Thread | None = None

    def after_invocation(self, request_id: str, deadline: float) -> None:
        """Flush after the invocation `request_id` as the strategy says, returning by
        `deadline` (time.monotonic()). The function hands its spans over before it responds,
        and the front door keeps them through a freeze: only a flush before the freeze needs
        to wait for them."""
        kind = self.strategy.kind
        if kind == BACKGROUND:
            self._schedule(request_id)
        elif kind == END_OF_INVOCATION or (
            kind == AGE and self.front_door.unflushed_age() >= self.strategy.age_s
        ):
            if not self._wait_over(request_id, deadline):
                log.warning(
                    "the invocation's spans did not arrive before its deadline",
                    extra={"kv": {"request_id": request_id}},
                )
            if not self.flush(deadline):
                log.warning("flush did not finish before the invocation's deadline")

    def _wait_over(self, request_id: str, deadline: float) -> bool:
        """Wait for Lambda's report of the invocation (after its init report, for the cold
        start join), else for the function's hand-over of its spans, else not at all."""
        remaining = deadline - time.monotonic()
        if self.telemetry:
            return self.front_door.wait_runtime_done(request_id, remaining)
        if self.front_door.hands_over:
            return self.front_door.wait_invocation_over(request_id, remaining)
        return True

    def flush(self, deadline: float) -> bool:
        """Hand the pipelines everything received so far and push it into the backends by
        `deadline`; False when time ran out or the pipelines do not run."""
        return self.drain(deadline) and self.pipelines.flush(deadline - time.monotonic())

    def drain(self, deadline: float) -> bool:
        """Hand the pipelines everything received so far, by `deadline`; False when time ran
        out or the pipelines do not run."""
        if not self.pipelines.wait(deadline - time.monotonic()):
            return False
        self.front_door.flushing()
        return self.forwarder.drain(deadline - time.monotonic())

    def stop(self) -> None:
        """End the background thread after the flush in hand, if any."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(1.0)

    def _schedule(self, request_id: str) -> None:
        with self._cond:
            self._pending = request_id
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="coldtail-flusher", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                request_id, self._pending = self._pending, None
            assert request_id is not None
            try:
                if self.telemetry:
                    self.front_door.wait_runtime_done(request_id, _REPORT_WAIT_S)
                if not self.flush(time.monotonic() + _BACKGROUND_FLUSH_S):
                    log.warning("a background flush did not finish in time")
            except Exception:
                log.exception("a background flush failed")
