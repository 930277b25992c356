"""coldtail's instrumentation: what runs inside the user's Lambda function or container.

Lambda entry points: `instrumentation.handler.handler` (the value the exec wrapper
`bin/coldtail-instrument` swaps `_HANDLER` to) and the decorator
`instrumentation.handler.instrument_handler`. Every module the function loads imports only
standard-library modules the Lambda Python runtime has already loaded, because import time
during init is part of the user's cold start. `instrumentation.api` imports the OpenTelemetry
API as well: it is loaded only once the function has loaded that API, or for the library
instrumentations named by OTEL_PYTHON_ENABLED_INSTRUMENTATIONS.

Container entry points (instrumentation.container): `bin/coldtail-instrument COMMAND...` and
`configure()`, which use the OpenTelemetry SDK.
"""

# Kept in step with pyproject.toml (a test checks it); read from here because looking up the
# installed distribution's metadata costs milliseconds of cold start.
__version__ = "0.1.0"


def configure():
    """Set up OpenTelemetry in a container's Python process, for users who do it in code rather
    than with coldtail-instrument; see instrumentation.container.configure."""
    from instrumentation.container import configure

    return configure()
