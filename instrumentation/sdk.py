"""The library instrumentations named by OTEL_PYTHON_ENABLED_INSTRUMENTATIONS (botocore,
requests, ...), for the Lambda function and the container instrumentation alike.

Instrumentors are found by name in the `opentelemetry_instrumentor` entry-point group (where the
opentelemetry-instrumentation-* packages register theirs, e.g. `botocore`), and only the names
asked for are loaded; OTEL_PYTHON_DISABLED_INSTRUMENTATIONS wins over the enabled list. A name
with no installed package logs a warning. Each is given the TracerProvider to use: in the
function coldtail's own (instrumentation.api, no SDK), in a container the SDK's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger("coldtail")

ENTRY_POINT_GROUP = "opentelemetry_instrumentor"


def instrumentation_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    def names(variable: str) -> list[str]:
        return [n.strip() for n in environ.get(variable, "").split(",") if n.strip()]

    disabled = set(names("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
    return [n for n in names("OTEL_PYTHON_ENABLED_INSTRUMENTATIONS") if n not in disabled]


def instrument(names: list[str], provider) -> None:
    """Load the instrumentors named `names` and instrument with `provider`; a missing or failing
    one logs a warning and the others still load."""
    from importlib.metadata import entry_points

    for name in names:
        try:
            found = entry_points(group=ENTRY_POINT_GROUP, name=name)
            if not found:
                log.warning(
                    "coldtail: no instrumentation named %r is installed "
                    "(pip install opentelemetry-instrumentation-%s)",
                    name,
                    name,
                )
                continue
            for entry_point in found:
                entry_point.load()().instrument(tracer_provider=provider)
        except Exception:
            log.warning("coldtail: instrumentation %r failed to load", name, exc_info=True)
