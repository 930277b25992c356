"""A service without a server: it calls instrumentation.configure() itself, serves one request
span and waits to be stopped. With the argument `own-handler` it installs its own SIGTERM
handler first, which exits with code 3."""

import signal
import sys
import time

from opentelemetry import trace

import instrumentation

if "own-handler" in sys.argv:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(3))
instrumentation.configure()
tracer = trace.get_tracer("plain_app")
with tracer.start_as_current_span("GET /orders", kind=trace.SpanKind.SERVER):
    pass
print("ready", flush=True)
time.sleep(30)
