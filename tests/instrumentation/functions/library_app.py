"""A test function calling a library that makes OTel SDK spans (as botocore's would)."""

from opentelemetry import trace


def handler(event, context):
    with trace.get_tracer("fake.library", "9.9").start_as_current_span("library call") as span:
        span.set_attribute("library.answer", 42)
    return {"statusCode": 200}
