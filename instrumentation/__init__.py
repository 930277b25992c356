"""coldtail's instrumentation: what runs inside the user's Lambda function.

Entry points: `instrumentation.handler.handler` (the value the exec wrapper
`bin/coldtail-instrument` swaps `_HANDLER` to) and the decorator
`instrumentation.handler.instrument_handler`.

Every module here imports only standard-library modules the Lambda Python runtime has already
loaded, because import time during init is part of the user's cold start.
"""

# Kept in step with pyproject.toml (a test checks it); read from here because looking up the
# installed distribution's metadata costs milliseconds of cold start.
__version__ = "0.1.0"
