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
- Flush before freeze. The invocation's spans (with the init spans and the spans of the
  OpenTelemetry API that ended meanwhile) are exported before the wrapper returns, within
  min(remaining time - 50 ms, COLDTAIL_EXPORT_TIMEOUT_MS default 1000). A failed export is logged
  in one line on the `coldtail` logger; if the failure may pass (connection refused, timeout,
  429/502/503/504) the spans are kept, up to 1000 (the oldest are dropped first), and sent with
  the next export. `flush` sends what is still kept when the process ends
  (instrumentation.spindown).
- OpenTelemetry API. Once the function has loaded `opentelemetry.context` (checked after its
  module's import and at each invocation's start, never imported here), coldtail's TracerProvider
  (instrumentation.api) becomes the global one, unless the function set its own; and during the
  handler the invocation span is the current span, so that the function's spans and outgoing
  calls' trace context follow from it, whichever provider makes the spans. Spans of coldtail's
  provider that end between exports (on any thread, or after the handler returned) wait in
  `finished`, up to 1000 (past that the oldest are dropped, counted and logged with the next
  export), and go out with the next export.
- Errors. A handler that raised gets the exception event, status ERROR and `error.type` (the
  exception's fully qualified type); an HTTP 5xx response status ERROR without a description and
  `error.type` the status code, as the HTTP conventions say.

Everything here catches its own errors, logs and lets the user's handler run.
"""

from __future__ import annotations

import logging
import sys
import threading

from instrumentation import triggers
from instrumentation.attributes import (
    COLD_START,
    COLD_START_SOURCE,
    FAAS_COLDSTART,
    FAAS_INVOCATION_ID,
    IMPORT_MODULE,
    IMPORT_SPAN,
    INIT_DURATION_MS,
    INIT_TYPE,
    SOURCE_INSTRUMENTATION,
    TIMEOUT,
)
from instrumentation.imports import ImportRecorder
from instrumentation.otlp import encode_export_request
from instrumentation.spans import (
    KIND_INTERNAL,
    STATUS_ERROR,
    FinishedSpans,
    Span,
    qualified_name,
)

# Not typing's: importing typing costs milliseconds of cold start. Checkers take it as true.
TYPE_CHECKING = False
if TYPE_CHECKING:  # imported lazily at run time: it loads opentelemetry
    from instrumentation import api

log = logging.getLogger("coldtail")

MAX_RETAINED_SPANS = 1000
MAX_FINISHED_SPANS = 1000
_FREEZE_MARGIN_MS = 50
_RESTORED = "snap-start"
# Inits that ran before any request waited: provisioned concurrency, SnapStart, and Lambda
# Managed Instances (capacity started ahead, every runtime worker initialized before it serves).
_AHEAD_OF_REQUESTS = frozenset({"provisioned-concurrency", _RESTORED, "lambda-managed-instances"})


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
    model); the timeout timer runs on its own thread, API spans end on any."""

    def __init__(self, settings: Settings, resource: dict, exporter) -> None:
        self.settings = settings
        self.resource = resource
        self.exporter = exporter
        self.init: InitRecord | None = None
        self.finished = FinishedSpans(MAX_FINISHED_SPANS)
        # The invocation span while the handler runs.
        self.active: Span | None = None
        self._first = True
        self._retained: list[Span] = []
        self._export_lock = threading.Lock()
        self._provider: api.TracerProvider | None = None
        self._api_connected = False

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

    def tracer_provider(self):
        """coldtail's OpenTelemetry TracerProvider, made on first use. Imports opentelemetry:
        call it only once the function has it, or for OTEL_PYTHON_ENABLED_INSTRUMENTATIONS."""
        if self._provider is None:
            from instrumentation import api

            self._provider = api.provider_for(self)
        return self._provider

    def connect_api(self) -> bool:
        """Once the function has loaded the OpenTelemetry API, make coldtail's TracerProvider the
        global one unless the function set its own (only the first call that finds the API does);
        returns whether the API is loaded."""
        if "opentelemetry.context" not in sys.modules:
            return False
        if not self._api_connected:
            self._api_connected = True
            from instrumentation import api

            api.install(self.tracer_provider())
        return True

    def flush(self, budget_ms: float) -> bool:
        """Export what was kept from failed exports and the API spans that ended since the last
        export, within `budget_ms`, as the last export of the process; returns whether everything
        went out."""
        return self._export(self._drain_finished(), budget_ms, final=True)

    def export_failed_init(self, exc: BaseException, start_ns: int) -> None:
        """Report an init whose user module failed to import: an `init` span with the error,
        in a trace of its own (no invocation will follow)."""
        span = Span("init", KIND_INTERNAL, start_ns=start_ns)
        span.set_attribute(INIT_TYPE, self.settings.init_type)
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
        self._arm_timeout_warning(invocation)
        self.active = span
        self._enter_api(invocation)
        return invocation

    def _enter_api(self, invocation: _Invocation) -> None:
        try:
            if self.connect_api():
                from instrumentation import api

                limits = self.tracer_provider().limits
                invocation.api_scope = api.activate(invocation.span, limits)
        except Exception as e:
            log.warning("coldtail: OpenTelemetry API support failed: %r", e)

    def _leave_api(self, invocation: _Invocation) -> None:
        self.active = None
        scope, invocation.api_scope = invocation.api_scope, None
        if scope is None:
            return
        from instrumentation import api

        try:
            api.deactivate(*scope)
        except Exception as e:
            log.warning("coldtail: could not restore the OpenTelemetry context: %r", e)

    def _start_first(self, invocation: _Invocation) -> None:
        span = invocation.span
        init_type = self.settings.init_type
        self._mark_cold(span, init_type not in _AHEAD_OF_REQUESTS)
        span.set_attribute(INIT_TYPE, init_type)
        init, self.init = self.init, None
        if init is None or init_type == _RESTORED:
            # A SnapStart environment was restored from a snapshot whose init ran elsewhere,
            # maybe long before: Lambda's restore report tells what this request waited for.
            return
        span.set_attribute(INIT_DURATION_MS, (init.end_ns - init.start_ns) / 1e6)
        invocation.init_spans = self._init_spans(init, span)

    @staticmethod
    def _mark_cold(span: Span, cold: bool) -> None:
        span.set_attribute(FAAS_COLDSTART, cold)
        span.set_attribute(COLD_START, cold)
        span.set_attribute(COLD_START_SOURCE, SOURCE_INSTRUMENTATION)

    def _init_spans(self, init: InitRecord, invocation_span: Span) -> list[Span]:
        init_span = Span("init", KIND_INTERNAL, parent=invocation_span.context)
        init_span.start_ns = init.start_ns
        init_span.set_attribute(INIT_TYPE, self.settings.init_type)
        init_span.end(init.end_ns)
        spans = [init_span]
        if init.recorder is None:
            return spans
        threshold_ns = int(self.settings.import_threshold_ms * 1e6)
        by_record: dict[int, Span] = {}
        for record in init.recorder.slow(threshold_ns):
            parent = by_record.get(id(record.parent), init_span)
            span = Span(IMPORT_SPAN, KIND_INTERNAL, parent=parent.context)
            span.start_ns = record.start_ns
            span.set_attribute(IMPORT_MODULE, record.module)
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
                snapshot.set_attribute(TIMEOUT, True)
                snapshot.set_status(
                    STATUS_ERROR,
                    f"still running {remaining_ms} ms before the invocation's timeout",
                )
                snapshot.add_link(invocation.span.context)
                snapshot.end()
                spans = [snapshot, *invocation.init_spans, *self._drain_finished()]
                invocation.init_spans = []
                self._export(spans, self._export_budget_ms(invocation.context))
        except Exception:
            log.warning("coldtail: timeout warning failed", exc_info=True)

    def _finish_safely(self, invocation: _Invocation, result, error: BaseException | None):
        self._leave_api(invocation)
        try:
            self._finish(invocation, result, error)
        except Exception:
            log.warning("coldtail: could not finish the invocation span", exc_info=True)

    def _finish(self, invocation: _Invocation, result, error: BaseException | None) -> None:
        span = invocation.span
        if invocation.timer is not None:
            invocation.timer.cancel()
        # Waits for a timeout warning export in flight, so the two never interleave.
        with invocation.lock:
            invocation.finished = True
            if error is not None:
                span.record_exception(error)
                span.set_attribute("error.type", qualified_name(type(error)))
            else:
                attributes, server_error = triggers.response_attributes(invocation.trigger, result)
                span.set_attributes(attributes)
                if server_error:
                    # The HTTP conventions: the status code tells why, so no description.
                    span.set_status(STATUS_ERROR)
                    code = attributes.get("http.response.status_code", "_OTHER")
                    span.set_attribute("error.type", str(code))
            span.end()
            spans = [span, *invocation.init_spans, *self._drain_finished()]
            invocation.init_spans = []
        request_id = span.attributes.get(FAAS_INVOCATION_ID, "")
        self._export(spans, self._export_budget_ms(invocation.context), done=str(request_id))

    # --- export --------------------------------------------------------------------------

    def _drain_finished(self) -> list[Span]:
        finished, dropped = self.finished.drain()
        if dropped:
            log.warning(
                "coldtail: dropped the %d oldest of the spans that ended between exports "
                "(at most %d are kept)",
                dropped,
                self.finished.capacity,
            )
        return finished

    def _export_budget_ms(self, context) -> float:
        remaining_ms = _remaining_ms(context)
        budget = self.settings.export_timeout_ms
        if remaining_ms is not None:
            budget = min(budget, remaining_ms - _FREEZE_MARGIN_MS)
        return budget

    def _export(
        self, spans: list[Span], budget_ms: float, final: bool = False, done: str = ""
    ) -> bool:
        """Send the kept spans and `spans`; returns whether they went out. `final`: no export
        follows, so nothing is kept. `done`: the request id of the invocation whose last spans
        these are."""
        # Bounded: a flush at shutdown may run in a signal handler on the thread holding the lock.
        if not self._export_lock.acquire(timeout=max(budget_ms, 0) / 1000):
            if spans:
                log.warning(
                    "coldtail: another export is still running; %d spans dropped", len(spans)
                )
            return False
        try:
            return self._export_locked(spans, budget_ms, final, done)
        finally:
            self._export_lock.release()

    def _export_locked(self, spans: list[Span], budget_ms: float, final: bool, done: str) -> bool:
        from instrumentation.exporter import ExportError

        batch, self._retained = self._retained + spans, []
        if not batch:
            return True
        if budget_ms <= 0:
            if final:
                log.warning("coldtail: no time left to export %d spans; dropped", len(batch))
            else:
                log.warning("coldtail: no time left to export %d spans; kept", len(batch))
                self._retain(batch)
            return False
        try:
            body = encode_export_request(self.resource, batch)
            self.exporter.export(body, budget_ms / 1000, invocation_done=done)
            return True
        except ExportError as e:
            keep = e.retryable and not final
            kept = "kept for the next export" if keep else "dropped"
            log.warning("coldtail: export of %d spans failed (%s): %s", len(batch), kept, e)
            if keep:
                self._retain(batch)
        except Exception as e:
            log.warning("coldtail: export of %d spans failed (dropped): %r", len(batch), e)
        return False

    def _retain(self, spans: list[Span]) -> None:
        dropped = len(spans) - MAX_RETAINED_SPANS
        if dropped > 0:
            log.warning("coldtail: dropping the %d oldest unexported spans", dropped)
            spans = spans[dropped:]
        self._retained = spans


class _Invocation:
    __slots__ = (
        "api_scope",
        "context",
        "finished",
        "init_spans",
        "lock",
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
        # What api.activate returned, while the invocation span is the current OTel span.
        self.api_scope: tuple[api.Span, object] | None = None
        self.finished = False
        self.lock = threading.Lock()


def _remaining_ms(context) -> float | None:
    """context.get_remaining_time_in_millis(), or None without one."""
    try:
        remaining = context.get_remaining_time_in_millis()
    except Exception:
        return None
    return remaining if isinstance(remaining, int | float) else None
