"""The instrumented Lambda handler: `instrumentation.handler.handler`, and the decorator
`instrument_handler`.

With the exec wrapper (`/opt/coldtail-instrument`, set as AWS_LAMBDA_EXEC_WRAPPER), the runtime
imports this module as the function's handler module during the init phase. Importing it
records the init start, imports the user's handler named by ORIG_HANDLER (`module.function`,
`dir/module.function` as the runtime accepts) with import timing, and `handler` then serves the
invocations. The init span starts at the process's start (read from /proc in Lambda) or, where
that is not available, at this module's import.

Never breaks the function: when the instrumentation cannot be set up, `handler` is the user's
own handler; the user's import errors and exceptions propagate unchanged. OTEL_SDK_DISABLED=true
makes `handler` the user's handler and `instrument_handler` a no-op.

Imports are lazy: this module and its imports use only standard-library modules the runtime has
already loaded. The OpenTelemetry API is the function's own: coldtail serves it once the function
has imported it (instrumentation.invocation), and imports it itself only to give the library
instrumentations named by OTEL_PYTHON_ENABLED_INSTRUMENTATIONS their TracerProvider. The SDK is
never imported. In Lambda, what is left unexported when the runtime shuts down goes out then
(instrumentation.spindown).
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import time

# Not typing's: importing typing costs milliseconds of cold start. Checkers take it as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from instrumentation.invocation import Instrumentation

# The runtime has loaded the modules above already: this is the moment the import began.
_IMPORT_START_NS = time.time_ns()

log = logging.getLogger("coldtail")

# One per process, as the function it instruments.
_instrumentation: Instrumentation | None = None


def load(original: str):
    """Import the user's handler named `original` and return the handler to serve, set up as a
    fresh process would be. The user's import errors propagate."""
    global _instrumentation
    if _sdk_disabled():
        return _import_handler(original)
    start_ns = _init_start_ns()
    instrumentation: Instrumentation | None
    try:
        instrumentation = _create_instrumentation()
    except Exception:
        log.warning("coldtail: instrumentation disabled: setup failed", exc_info=True)
        instrumentation = None
    _instrumentation = instrumentation
    recorder = _start_import_recorder() if instrumentation is not None else None
    try:
        user_handler = _import_handler(original)
    except BaseException as exc:
        if instrumentation is not None:
            _guarded(instrumentation.export_failed_init, exc, start_ns)
        raise
    finally:
        if recorder is not None:
            recorder.stop()
    if instrumentation is None:
        return user_handler
    _guarded(_record_init, instrumentation, start_ns, recorder)
    # The function's module may have set its own TracerProvider: now is when to tell.
    _guarded(instrumentation.connect_api)
    if getattr(user_handler, "__coldtail_instrumented__", False):
        # The user decorated it too, and the decorator serves invocations with the same state.
        return user_handler
    return _wrap(user_handler, instrumentation)


def instrument_handler(function):
    """Decorator: the same invocation spans as the exec wrapper, for users who prefer code. The
    init span runs from the process start (or this module's import) to the decoration."""
    if _sdk_disabled() or getattr(function, "__coldtail_instrumented__", False):
        return function
    global _instrumentation
    try:
        if _instrumentation is None:
            _instrumentation = _create_instrumentation()
            _record_init(_instrumentation, _init_start_ns(), None)
            # Not connect_api: the module being imported may set its provider further down.
            _guarded(_flush_at_spindown, _instrumentation)
    except Exception:
        log.warning("coldtail: instrumentation disabled: setup failed", exc_info=True)
        return function
    return _wrap(function, _instrumentation)


def _start_import_recorder():
    try:
        from instrumentation.imports import ImportRecorder

        recorder = ImportRecorder()
        recorder.start()
        return recorder
    except Exception:
        log.warning("coldtail: import timing disabled", exc_info=True)
        return None


def _wrap(function, instrumentation: Instrumentation):
    @functools.wraps(function)
    def instrumented(event, context):
        return instrumentation.invoke(function, event, context)

    setattr(instrumented, "__coldtail_instrumented__", True)  # noqa: B010
    return instrumented


def _create_instrumentation():
    from instrumentation import propagation, resource
    from instrumentation.exporter import OtlpHttpExporter
    from instrumentation.invocation import Instrumentation, Settings

    environ = os.environ
    settings = Settings(
        timeout_warning_ms=_env_ms("COLDTAIL_TIMEOUT_WARNING_MS", 1500),
        export_timeout_ms=_env_ms("COLDTAIL_EXPORT_TIMEOUT_MS", 1000),
        import_threshold_ms=_env_ms("COLDTAIL_IMPORT_THRESHOLD_MS", 5),
        propagators=propagation.propagators_from_env(environ),
        init_type=resource.init_type(environ),
    )
    unsupported = set(settings.propagators) - propagation.SUPPORTED_PROPAGATORS
    if unsupported:
        log.warning("coldtail: OTEL_PROPAGATORS %s not supported; ignored", sorted(unsupported))
    attributes = resource.lambda_resource(environ)
    instrumentation = Instrumentation(settings, attributes, OtlpHttpExporter.from_env(environ))
    _guarded(_load_instrumentations, instrumentation)
    return instrumentation


def _load_instrumentations(instrumentation) -> None:
    """Before the user's module imports the libraries, so that clients it makes at import are
    instrumented too. With coldtail's TracerProvider, whichever becomes the global one."""
    if not os.environ.get("OTEL_PYTHON_ENABLED_INSTRUMENTATIONS", "").strip():
        return
    from instrumentation import sdk

    names = sdk.instrumentation_names()
    if not names:
        return
    try:
        provider = instrumentation.tracer_provider()
    except ImportError as e:
        log.warning(
            "coldtail: OTEL_PYTHON_ENABLED_INSTRUMENTATIONS needs opentelemetry-api "
            "in the function: %s",
            e,
        )
        return
    sdk.instrument(names, provider)


def _flush_at_spindown(instrumentation: Instrumentation) -> None:
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        from instrumentation import spindown

        spindown.install(instrumentation.flush)


def _record_init(instrumentation: Instrumentation, start_ns: int, recorder) -> None:
    from instrumentation.invocation import InitRecord

    instrumentation.init = InitRecord(start_ns, time.time_ns(), recorder)


def _import_handler(original: str):
    module_name, _, function_name = original.rpartition(".")
    if not module_name or not function_name:
        raise ValueError(f"ORIG_HANDLER {original!r} is not of the form module.function")
    module = importlib.import_module(module_name.replace("/", "."))
    return getattr(module, function_name)


def _init_start_ns() -> int:
    """The process's start in Lambda, where the runtime process is the init; else the import
    of this module."""
    if os.environ.get("AWS_LAMBDA_RUNTIME_API"):
        from instrumentation.resource import process_start_ns

        try:
            return min(process_start_ns(), _IMPORT_START_NS)
        except (OSError, ValueError, IndexError):
            pass
    return _IMPORT_START_NS


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _env_ms(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return max(float(value), 0.0)
    except ValueError:
        log.warning(
            "coldtail: %s=%r is not a number of milliseconds; using %s",
            name,
            value,
            default,
        )
        return default


def _guarded(function, *args) -> None:
    try:
        function(*args)
    except Exception:
        log.warning("coldtail: %s failed", function.__name__, exc_info=True)


def _bootstrap():
    """The handler the runtime calls when this module is the function's handler module."""
    original = os.environ.get("ORIG_HANDLER", "")
    if original:
        served = load(original)
        if _instrumentation is not None:
            _guarded(_flush_at_spindown, _instrumentation)
        return served

    def missing(event, context):
        raise RuntimeError(
            "ORIG_HANDLER is not set: run the function through /opt/coldtail-instrument "
            "(AWS_LAMBDA_EXEC_WRAPPER) or use @instrument_handler"
        )

    return missing


handler = _bootstrap()
