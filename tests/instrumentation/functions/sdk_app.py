"""A test function that sets up its own OpenTelemetry SDK at import, exporting to memory, and
answers with what that SDK exported."""

import json

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


def handler(event, context):
    with trace.get_tracer("own").start_as_current_span("own work"):
        pass
    spans = [
        {
            "name": span.name,
            "trace_id": f"{span.context.trace_id:032x}",
            "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        }
        for span in exporter.get_finished_spans()
    ]
    exporter.clear()
    body = {"own_provider": trace.get_tracer_provider() is provider, "spans": spans}
    return {"statusCode": 200, "body": json.dumps(body)}
