"""Imported by every Python process that coldtail-instrument starts, at interpreter start and
before any application module: sets up the instrumentation (instrumentation.container).

It takes the place of any other sitecustomize module on the path, as opentelemetry-instrument's
does."""

try:
    from instrumentation.container import configure
except ImportError:
    # A Python without coldtail, started by the command: it runs uninstrumented.
    pass
else:
    configure()
