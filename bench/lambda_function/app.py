"""The function every configuration of bench.lambda_overhead runs: no work of its own, so
what the figures show is the runtime and the instrumentation around it."""

import json


def handler(event, context):
    """Answer an API Gateway HTTP API (payload v2) request the way a real endpoint would."""
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"path": event.get("rawPath", "/"), "ok": True}),
        "isBase64Encoded": False,
    }
