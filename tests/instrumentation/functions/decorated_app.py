"""A test function instrumented with the decorator instead of the exec wrapper."""

from instrumentation.handler import instrument_handler


@instrument_handler
def handler(event, context):
    return {"statusCode": 201, "body": "decorated"}
