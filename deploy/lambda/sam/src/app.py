"""The sample function: greets the caller of GET /hello?name=... through an HTTP API.

It knows nothing of coldtail: the layer instruments it through AWS_LAMBDA_EXEC_WRAPPER.
"""

import json


def handler(event, context):
    name = (event.get("queryStringParameters") or {}).get("name", "world")
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"hello": name}),
    }
