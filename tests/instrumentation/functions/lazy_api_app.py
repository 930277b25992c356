"""A test function that imports the OpenTelemetry API only when it runs."""


def handler(event, context):
    from opentelemetry import trace

    with trace.get_tracer("lazy").start_as_current_span("lazy work") as span:
        span.set_attribute("lazy", True)
    return {"statusCode": 200, "body": ""}
