"""The peer's handler module: what the opentelemetry-lambda Python layer's `otel_wrapper.py` does
when the runtime imports it as the function's handler (`otel_wrapper.lambda_handler`).

At import, as the layer does: configure logging at OTEL_LOG_LEVEL (default INFO); give the SDK a
TracerProvider with the Lambda resource, exporting through a BatchSpanProcessor to the OTLP/HTTP
span exporter, and a MeterProvider whose PeriodicExportingMetricReader feeds the OTLP/HTTP metric
exporter (OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER: otlp, console or none, default otlp);
instrument the handler with AwsLambdaInstrumentor, whose wrapper force-flushes both providers at
the end of every invocation (before Lambda freezes the process); then import the user's handler,
ORIG_HANDLER.

Left out: the layer always loads its botocore instrumentation, and whatever
OTEL_PYTHON_ENABLED_INSTRUMENTATIONS names. The benchmark's function uses neither boto3 nor any
instrumented library, and leaving them out makes the peer's figures a lower bound.
"""

import importlib
import logging
import os

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.aws_lambda import AwsLambdaInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource, get_aggregated_resources
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
)

# The layer uses the AWS resource detector when its package is installed, and a plain resource
# otherwise; it imports both exporters up front.
try:
    from opentelemetry.sdk.extension.aws.resource._lambda import AwsLambdaResourceDetector
except ImportError:
    AwsLambdaResourceDetector = None

try:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
except ImportError:
    OTLPSpanExporter = None

try:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
except ImportError:
    OTLPMetricExporter = None

log = logging.getLogger(__name__)


def _exporter_names(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "otlp").lower().split(",")]


def _resource() -> Resource:
    if AwsLambdaResourceDetector is not None:
        return get_aggregated_resources([AwsLambdaResourceDetector()])
    return Resource.create()


def _configure_tracing() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    provider = TracerProvider(resource=_resource())
    names = _exporter_names("OTEL_TRACES_EXPORTER")
    if "none" not in names:
        for name in names:
            if name == "otlp" and OTLPSpanExporter is not None:
                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            elif name == "console":
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            else:
                log.warning("traces exporter %r is not available", name)
    trace.set_tracer_provider(provider)


def _configure_metrics() -> None:
    # The layer skips this when a MeterProvider is set already; in the runtime process nothing
    # sets one before this module (and the API has no public proxy type to test against).
    names = _exporter_names("OTEL_METRICS_EXPORTER")
    if "none" in names:
        return
    readers = []
    for name in names:
        if name == "otlp" and OTLPMetricExporter is not None:
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        elif name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        else:
            log.warning("metrics exporter %r is not available", name)
    if readers:
        metrics.set_meter_provider(MeterProvider(resource=_resource(), metric_readers=readers))


def _user_handler():
    original = os.environ.get("ORIG_HANDLER")
    if not original or "." not in original:
        raise RuntimeError(f"ORIG_HANDLER {original!r} is not of the form module.function")
    module_name, function_name = original.rsplit(".", 1)
    module = importlib.import_module(module_name.replace("/", "."))
    return getattr(module, function_name)


logging.basicConfig(level=os.environ.get("OTEL_LOG_LEVEL", "INFO").upper())
_configure_tracing()
_configure_metrics()
# After the providers: the instrumentor wraps ORIG_HANDLER in place, so the import below gets
# the wrapped function.
AwsLambdaInstrumentor().instrument()
lambda_handler = _user_handler()
