"""A test function that never uses OpenTelemetry: it answers with the opentelemetry modules
loaded in its process."""

import json
import sys


def handler(event, context):
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    return {"statusCode": 200, "body": json.dumps(loaded)}
