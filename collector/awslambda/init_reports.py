"""Lambda init reports, shared by the service's components: the Telemetry API receiver records
them, the coldstart processor joins them to the first entry span of their execution environment.
The service owns the one store (`settings.shared.get(InitReports)`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

ON_DEMAND = "on-demand"
PROVISIONED_CONCURRENCY = "provisioned-concurrency"
SNAP_START = "snap-start"
MANAGED_INSTANCES = "lambda-managed-instances"
# The init ran before any request arrived, so no user waited for it.
AHEAD_OF_REQUESTS = frozenset({PROVISIONED_CONCURRENCY, SNAP_START, MANAGED_INSTANCES})


def normalize_init_type(text: str) -> str:
    """`PROVISIONED_CONCURRENCY`, `SnapStart`, ... to the Telemetry API spelling
    (`provisioned-concurrency`, `snap-start`)."""
    value = text.strip().lower().replace("_", "-")
    return SNAP_START if value == "snapstart" else value


@dataclass(frozen=True, slots=True)
class InitReport:
    """What is known of one init, from a report or an init span."""

    init_duration_ms: float
    init_type: str | None  # None: an init span that does not say


UNNAMED = ""  # the environment of a reporter that cannot name it (see InitReports.record)


class InitReports:
    """Lambda init reports (Telemetry API `platform.initReport`) waiting for the first entry span
    of their execution environment.

    A receiver calls `record`; coldstart processors `take` a report when they judge an entry
    span of that environment. Safe to call from any thread and from the event loop (no call
    blocks for more than a dict operation). At most `max_pending` reports are held; the oldest
    is dropped first. A report is taken once: with coldstart processors in several pipelines,
    the first to see the environment joins it.
    """

    def __init__(self, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: OrderedDict[str, InitReport] = OrderedDict()
        self._by_invocation: OrderedDict[str, InitReport] = OrderedDict()
        self._latest: InitReport | None = None  # not yet followed by an invocation

    def record(self, environment: str, init_duration_ms: float, init_type: str = ON_DEMAND) -> None:
        """Report that `environment` (its id as on the resource: `faas.instance`, the log stream
        name, else `service.instance.id` or `host.id`) initialized in `init_duration_ms`
        milliseconds; `init_type` is the Telemetry API initializationType. `environment` ""
        (UNNAMED) means the one environment this collector serves, whose id the reporter does not
        know: a Lambda extension is not told its function's log stream name. The next new
        environment takes that report."""
        report = InitReport(float(init_duration_ms), normalize_init_type(init_type))
        with self._lock:
            _put_bounded(self._pending, environment, report, self.max_pending)
            self._latest = report

    def first_invocation(self, request_id: str) -> None:
        """The invocation `request_id` is the first since the last report: it also takes that
        report, for spans that do not name their environment (a SnapStart runtime is not told
        its log stream)."""
        with self._lock:
            if self._latest is not None:
                _put_bounded(self._by_invocation, request_id, self._latest, self.max_pending)
                self._latest = None

    def take(self, environment: str, invocation_id: str = "") -> InitReport | None:
        """Remove and return the report of `environment`, else of `invocation_id` (see
        `first_invocation`), else an UNNAMED report; without `environment`, only the
        invocation's."""
        with self._lock:
            by_invocation = self._by_invocation.pop(invocation_id, None) if invocation_id else None
            if by_invocation is not None and self._pending.get(UNNAMED) is by_invocation:
                del self._pending[UNNAMED]
            if not environment:
                return by_invocation
            report = self._pending.pop(environment, None) or by_invocation
            return report or self._pending.pop(UNNAMED, None)

    def __len__(self) -> int:
        return len(self._pending)


def _put_bounded(reports: OrderedDict, key: str, report: InitReport, most: int) -> None:
    reports[key] = report
    reports.move_to_end(key)
    if len(reports) > most:
        reports.popitem(last=False)
