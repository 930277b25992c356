"""The per-process engine: one invocation span per call, cold start, init spans, the timeout
warning, and the flush before the function is frozen.

Design:

- Init span. The OTel Lambda conventions have no init span; coldtail puts one, named `init`
  (kind INTERNAL, `coldtail.init_type`), in the first invocation's trace as a child of the
  invocation span, starting before it: the init belongs to the request that waited for it (or,
  for provisioned concurrency and SnapStart, to the first request it served), and a child keeps
  the trace's root the request. Its `coldtail.import` children are the imports slower than
  COLDTAIL_IMPORT_THRESHOLD_MS (default 5), nested as they happened.
- Cold start. The first invocation in the process carries `faas.coldstart` and
  `coldtail.cold_start` true (false for provisioned-concurrency and snap-start inits, which ran
  before any request), with `coldtail.cold_start.source=instrumentation`; later ones false.
- Timeout warning. When the remaining time falls below COLDTAIL_TIMEOUT_WARNING_MS (default
  1500; 0 = off) while the handler runs, a timer thread exports a snapshot of the invocation
  span: same trace, parent, name, kind and attributes, its own span id, `coldtail.timeout=true`,
  status ERROR, and a link to the invocation span. So a timed-out invocation is never invisible,
  and a handler that finishes after all still exports its real span with no duplicate span id.
  A function whose whole budget is below the threshold gets the warning at half its budget
  rather than at once.
- Flush before freeze. The invocation's spans (with the init spans and the OTel SDK spans that
  ended meanwhile) are exported before the wrapper returns, within min(remaining time - 50 ms,
  COLDTAIL_EXPORT_TIMEOUT_MS default 1000). A failed export is logged in one line on the
  `coldtail` logger; if the failure may pass (connection refused, timeout, 429/502/503/504) the
  spans are kept, up to 1000 (the oldest are dropped first), and sent with the next export.

Everything here catches its own errors, logs and lets the user's handler run (house rule 6).
"""

from __future__ import annotations

import logging
import threading

from instrumentation import triggers
from instrumentation.imports import ImportRecorder
from instrumentation.otlp import encode_export_request
from instrumentation.spans import KIND_INTERNAL, STATUS_ERROR, Span

log = logging.getLogger("coldtail")

MAX_RETAINED_SPANS = 1000
_FREEZE_MARGIN_MS = 50
_AHEAD_OF_REQUESTS = frozenset({"provisioned-concurrency", "snap-start"})


class Settings:
    """Knobs from the environment; durations in milliseconds."""

    __slots__ = (
        "export_timeout_ms",
        "import_threshold_ms",
        "init_type",
        "propagators",
        "timeout_warning_ms",
    )

    def __init__(
        self,
        timeout_warning_ms: float = 1500,
        export_timeout_ms: float = 1000,
        import_threshold_ms: float = 5,
        propagators: tuple[str, ...] = ("tracecontext", "baggage"),
        init_type: str = "on-demand",
    ) -> None:
        self.timeout_warning_ms = timeout_warning_ms
        self.export_timeout_ms = export_timeout_ms
        self.import_threshold_ms = import_threshold_ms
        self.propagators = propagators
        self.init_type = init_type


class InitRecord:
    """What happened during init, kept until the first invocation can parent it."""

    __slots__ = ("end_ns", "recorder", "start_ns")

    def __init__(self, start_ns: int, end_ns: int, recorder: ImportRecorder | None) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.recorder = recorder


class Instrumentation:
    """Process-wide state. `invoke` may run on any thread, one invocation at a time (the Lambda
    model); the timeout timer runs on its own thread."""

    def __init__(self, settings: Settings, resource: dict, exporter, sdk=None) -> None:
        self.settings = settings
        self.resource = resource
        self.exporter = exporter
        self.sdk = sdk
        self.init: InitRecord | None = None
        self._first = True
        self._retained: list[Span] = []
        self._export_lock = threading.Lock()

    def invoke(self, handler, event, context):
        """Call `handler(event, context)` inside an invocation span; its result or exception
        passes through untouched."""
        invocation = None
        try:
            invocation = self._start(event, context)
        except Exception:
            log.warning("coldtail: could not start the invocation span", exc_info=True)
        if invocation is None:
            return handler(event, context)
        try:
            result = handler(event, context)
        except BaseException as exc:
            self._finish_safely(invocation, None, exc)
            raise
        self._finish_safely(invocation, result, None)
        return result

    def export_failed_init(self, exc: BaseException, start_ns: int) -> None:
        """Report an init whose user module failed to import: an `init` span with the error,
        in a trace of its own (no invocation will follow)."""
        span = Span("init", KIND_INTERNAL, start_ns=start_ns)
        span.set_attribute("coldtail.init_type", self.settings.init_type)
        span.record_exception(exc)
        span.end()
        self._export([span], self.settings.export_timeout_ms)

    # --- one invocation ------------------------------------------------------------------

    def _start(self, event, context) -> _Invocation:
        trigger = triggers.classify(event, context, self.settings.propagators)
        span = Span(trigger.name, trigger.kind, parent=trigger.parent)
        span.set_attributes(trigger.attributes)
        span.links.extend(trigger.links)
        invocation = _Invocation(span, trigger, context)
        if self._first:
            self._first = False
            self._start_first(invocation)
        else:
            self._mark_cold(span, False)
        if self.sdk is not None:
            invocation.sdk_token = self.sdk.attach(span)
        self._arm_timeout_warning(invocation)
        return invocation

    def _start_first(self, invocation: _Invocation) -> None:
        span = invocation.span
        init_type = self.settings.init_type
        self._mark_cold(span, init_type not in _AHEAD_OF_REQUESTS)
        span.set_attribute("coldtail.init_type", init_type)
        init, self.init = self.init, None
        if init is None:
            return
        span.set_attribute("coldtail.init_duration_ms", (init.end_ns - init.start_ns) / 1e6)
        invocation.init_spans = self._init_spans(init, span)

    @staticmethod
    def _mark_cold(span: Span, cold: bool) -> None:
        span.set_attribute("faas.coldstart", cold)
        span.set_attribute("coldtail.cold_start", cold)
        span.set_attribute("coldtail.cold_start.source", "instrumentation")

    def _init_spans(self, init: InitRecord, invocation_span: Span) -> list[Span]:
        init_span = Span("init", KIND_INTERNAL, parent=invocation_span.context)
        init_span.start_ns = init.start_ns
        init_span.set_attribute("coldtail.init_type", self.settings.init_type)
        init_span.end(init.end_ns)
        spans = [init_span]
        if init.recorder is None:
            return spans
        threshold_ns = int(self.settings.import_threshold_ms * 1e6)
        by_record = {}
        for record in init.recorder.slow(threshold_ns):
            parent = by_record.get(id(record.parent), init_span)
            span = Span("coldtail.import", KIND_INTERNAL, parent=parent.context)
            span.start_ns = record.start_ns
            span.set_attribute("coldtail.import.module", record.module)
            span.end(record.end_ns)
            by_record[id(record)] = span
            spans.append(span)
        return spans

    def _arm_timeout_warning(self, invocation: _Invocation) -> None:
        warning_ms = self.settings.timeout_warning_ms
        remaining_ms = _remaining_ms(invocation.context)
        if warning_ms <= 0 or remaining_ms is None:
            return
        delay_ms = max(remaining_ms - warning_ms, remaining_ms / 2)
        timer = threading.Timer(delay_ms / 1000, self._warn_timeout, (invocation,))
        timer.daemon = True
        timer.name = "coldtail-timeout-warning"
        invocation.timer = timer
        timer.start()

    def _warn_timeout(self, invocation: _Invocation) -> None:
        try:
            with invocation.lock:
                if invocation.finished:
                    return
                remaining_ms = _remaining_ms(invocation.context)
                snapshot = invocation.span.snapshot()
                snapshot.set_attribute("coldtail.timeout", True)
                snapshot.set_status(
                    STATUS_ERROR,
                    f"still running {remaining_ms} ms before the invocation's timeout",
                )
                snapshot.add_link(invocation.span.context)
                snapshot.end()
                spans = [snapshot, *invocation.init_spans, *self._drain_sdk()]
                invocation.init_spans = []
                self._export(spans, self._export_budget_ms(invocation.context))
        except Exception:
            log.warning("coldtail: timeout warning failed", exc_info=True)

    def _finish_safely(self, invocation: _Invocation, result, error: BaseException | None):
        try:
            self._finish(invocation, result, error)
        except Exception:
            log.warning("coldtail: could not finish the invocation span", exc_info=True)

    def _finish(self, invocation: _Invocation, result, error: BaseException | None) -> None:
        span = invocation.span
        if invocation.timer is not None:
            invocation.timer.cancel()
        if self.sdk is not None and invocation.sdk_token is not None:
            self.sdk.detach(invocation.sdk_token)
        # Waits for a timeout warning export in flight, so the two never interleave.
        with invocation.lock:
            invocation.finished = True
            if error is not None:
                span.record_exception(error)
            else:
                attributes, server_error = triggers.response_attributes(invocation.trigger, result)
                span.set_attributes(attributes)
                if server_error:
                    code = attributes.get("http.response.status_code")
                    span.set_status(STATUS_ERROR, f"HTTP {code}")
            span.end()
            spans = [span, *invocation.init_spans, *self._drain_sdk()]
            invocation.init_spans = []
        self._export(spans, self._export_budget_ms(invocation.context))

    # --- export --------------------------------------------------------------------------

    def _drain_sdk(self) -> list[Span]:
        return self.sdk.drain() if self.sdk is not None else []

    def _export_budget_ms(self, context) -> float:
        remaining_ms = _remaining_ms(context)
        budget = self.settings.export_timeout_ms
        if remaining_ms is not None:
            budget = min(budget, remaining_ms - _FREEZE_MARGIN_MS)
        return budget

    def _export(self, spans: list[Span], budget_ms: float) -> None:
        from instrumentation.exporter import ExportError

        with self._export_lock:
            batch, self._retained = self._retained + spans, []
            if budget_ms <= 0:
                log.warning("coldtail: no time left to export %d spans; kept", len(batch))
                self._retain(batch)
                return
            try:
                self.exporter.export(encode_export_request(self.resource, batch), budget_ms / 1000)
            except ExportError as e:
                kept = "kept for the next export" if e.retryable else "dropped"
                log.warning("coldtail: export of %d spans failed (%s): %s", len(batch), kept, e)
                if e.retryable:
                    self._retain(batch)
            except Exception as e:
                log.warning("coldtail: export of %d spans failed (dropped): %r", len(batch), e)

    def _retain(self, spans: list[Span]) -> None:
        dropped = len(spans) - MAX_RETAINED_SPANS
        if dropped > 0:
            log.warning("coldtail: dropping the %d oldest unexported spans", dropped)
            spans = spans[dropped:]
        self._retained = spans


class _Invocation:
    __slots__ = (
        "context",
        "finished",
        "init_spans",
        "lock",
        "sdk_token",
        "span",
        "timer",
        "trigger",
    )

    def __init__(self, span: Span, trigger: triggers.Trigger, context) -> None:
        self.span = span
        self.trigger = trigger
        self.context = context
        self.init_spans: list[Span] = []
        self.timer: threading.Timer | None = None
        self.sdk_token = None
        self.finished = False
        self.lock = threading.Lock()


def _remaining_ms(context) -> float | None:
    """context.get_remaining_time_in_millis(), or None without one."""
    try:
        remaining = context.get_remaining_time_in_millis()
    except Exception:
        return None
    return remaining if isinstance(remaining, int | float) else None
