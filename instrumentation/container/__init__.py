"""OpenTelemetry for Python services in containers (AWS Fargate, ECS): the SDK, the resource, the
library instrumentations and cold starts, set up by `coldtail-instrument COMMAND` or by one call
to `configure()`.

Mechanism. Outside Lambda, `coldtail-instrument COMMAND...` runs `bootstrap`, which puts the
`autostart` directory first on PYTHONPATH and execs COMMAND. Every Python process COMMAND starts
(a gunicorn master and the workers it forks, uvicorn and the workers it spawns, `python app.py`)
imports autostart/sitecustomize.py at interpreter start, before any application module, and so
runs `configure()`. Unlike in the Lambda function, the OTel SDK and its OTLP/HTTP exporter are
used: a long-running service pays their few hundred milliseconds of import once per process
start, not per request, and gets batching, retries and the standard variables in return.

`configure()` sets up:

- The resource: the SDK's (telemetry.sdk.*, OTEL_EXPERIMENTAL_RESOURCE_DETECTORS), then the ECS
  task's attributes (instrumentation.container.ecs; at most 0.5 s, and without the metadata
  endpoint, or when it fails, the service starts with what is known), `service.instance.id` (a
  random UUID per process: each worker is an instance, and a UUID cannot collide when a worker's
  pid is reused), `process.pid` and `telemetry.distro.*` over it, and OTEL_RESOURCE_ATTRIBUTES
  and OTEL_SERVICE_NAME over everything.
- Export: a BatchSpanProcessor (OTEL_BSP_*) to OTLP/HTTP protobuf at
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else the
  sidecar at http://127.0.0.1:4318/v1/traces; OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION
  as the SDK reads them. Another protocol logs a warning and http/protobuf is used: gRPC
  channels do not survive a pre-fork server's fork.
- The library instrumentations named by OTEL_PYTHON_ENABLED_INSTRUMENTATIONS (e.g.
  `flask,requests`), as in the function: nothing is auto-discovered, and
  OTEL_PYTHON_DISABLED_INSTRUMENTATIONS wins.
- Cold starts: see instrumentation.container.coldstart (COLDTAIL_COLD_REQUESTS).

OTEL_PROPAGATORS is read by the OTel API itself. OTEL_SDK_DISABLED=true sets up nothing.

Pre-fork servers. The SDK restarts the BatchSpanProcessor's thread in a forked child
(os.register_at_fork); `configure()` registers its own hook that gives the child its own
service.instance.id and process.pid and a fresh cold-start count.

Stopping. ECS stops a container with SIGTERM, then SIGKILL after its stopTimeout (30 s by
default). The spans still queued are exported when the provider shuts down: at interpreter exit
(the SDK's atexit hook, which a forked worker inherits), and on a SIGTERM that would otherwise
kill the process outright. So:

- `python app.py` with no handler of its own, and uvicorn, which restores the previous handler
  after its graceful shutdown and raises the signal again: coldtail's handler shuts the provider
  down, then the process dies of SIGTERM as it would have.
- gunicorn's master and workers install their own handlers, and a worker finishes its request
  and leaves through sys.exit: the atexit hook runs in each worker. Likewise for any application
  handler, installed before or after `configure()`, that ends in a normal exit.
- An ignored SIGTERM stays ignored.

With the sidecar up (ECS stops it after the application, which depends on it) that takes
milliseconds; with it unreachable, each export gives up after OTEL_EXPORTER_OTLP_TIMEOUT
(default 10 s) and the shutdown after 30 s in all (the SDK's bounds).

Everything here logs and carries on: the service starts and serves whatever fails.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import uuid

from instrumentation import __version__, sdk
from instrumentation.container.ecs import detect_ecs_resource
from instrumentation.exporter import DEFAULT_ENDPOINT
from instrumentation.resource import process_start_ns, whole_number

log = logging.getLogger("coldtail")

# Unix ns when coldtail-instrument started the command; every process it starts inherits it.
START_VARIABLE = "COLDTAIL_START_NS"

# Fargate's endpoint answers within milliseconds: the bound matters only when it is broken.
_ECS_TIMEOUT_S = 0.5
_PROTOCOL = "http/protobuf"

_lock = threading.Lock()
_configured = False
_provider = None


def configure():
    """Set up OpenTelemetry for this process (see the module docstring) and return its
    TracerProvider, which is also the global one; None when OTEL_SDK_DISABLED=true or when the
    setup failed (logged). Only the first call sets up; later ones return the same provider.
    Never raises."""
    global _configured, _provider
    with _lock:
        if not _configured:
            _configured = True
            if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
                try:
                    _provider = _set_up()
                except Exception:
                    log.warning("coldtail: instrumentation disabled: setup failed", exc_info=True)
        return _provider


def _set_up():
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from instrumentation.container.coldstart import ColdStartProcessor

    # What the user said (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME) wins, in forked workers too.
    configured = OTELResourceDetector().detect()
    detected = {
        **detect_ecs_resource(_ECS_TIMEOUT_S),
        "telemetry.distro.name": "coldtail",
        "telemetry.distro.version": __version__,
        **_process_attributes(),
    }
    resource = Resource.create().merge(Resource(detected)).merge(configured)
    provider = TracerProvider(resource=resource)  # which shuts itself down at exit
    cold_start = ColdStartProcessor(
        whole_number(os.environ, "COLDTAIL_COLD_REQUESTS", 1), _start_ns()
    )
    provider.add_span_processor(cold_start)
    provider.add_span_processor(BatchSpanProcessor(_span_exporter()))
    trace.set_tracer_provider(provider)
    sdk.instrument(sdk.instrumentation_names(), provider)

    _shut_down_on_sigterm(provider)
    os.register_at_fork(
        after_in_child=functools.partial(_after_fork, provider, cold_start, configured)
    )
    return provider


def _process_attributes() -> dict:
    return {"service.instance.id": str(uuid.uuid4()), "process.pid": os.getpid()}


def _after_fork(provider, cold_start, configured) -> None:
    """In a forked child: a new process, so a new instance whose first requests are cold."""
    try:
        from opentelemetry.sdk.resources import Resource

        cold_start.reset()
        # The SDK refreshes its process-dependent attributes after a fork the same way, and
        # overwrites a configured service.instance.id while at it: `configured` puts it back.
        provider._update_resource(Resource(_process_attributes()).merge(configured))
    except Exception:
        log.warning("coldtail: could not renew the resource after fork", exc_info=True)


def _start_ns() -> int:
    """The service's start: when coldtail-instrument started the command, else this process's
    start, recorded in the environment for the processes it starts (spawned workers)."""
    try:
        return int(os.environ[START_VARIABLE])
    except (KeyError, ValueError):
        pass
    try:
        start_ns = process_start_ns()
    except (OSError, ValueError, IndexError):  # no /proc
        start_ns = time.time_ns()
    os.environ[START_VARIABLE] = str(start_ns)
    return start_ns


def _span_exporter():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    environ = os.environ
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", _PROTOCOL
    )
    if protocol.strip() != _PROTOCOL:
        log.warning("coldtail: OTLP protocol %r is not supported; using %s", protocol, _PROTOCOL)
    endpoints = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if any(environ.get(name) for name in endpoints):
        return OTLPSpanExporter()
    # The SDK's default is localhost, which may resolve to ::1 first; the sidecar binds 127.0.0.1.
    return OTLPSpanExporter(endpoint=DEFAULT_ENDPOINT)


def _shut_down_on_sigterm(provider) -> None:
    """Where SIGTERM would kill the process outright, shut the provider down first. A handler
    the application installs, before or after, takes precedence: it is meant to lead to a normal
    exit, where the provider's atexit hook exports."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def on_sigterm(signum, frame):
        try:
            provider.shutdown()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)
