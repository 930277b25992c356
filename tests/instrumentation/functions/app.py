"""A test function. The event steers it: {"raise": message}, {"sleep": seconds},
{"status": code}; anything else is echoed back in a 200 response."""

import time

from tests.instrumentation.functions import slow_dependency  # noqa: F401


class HandlerError(Exception):
    pass


def handler(event, context):
    if isinstance(event, dict):
        if "sleep" in event:
            time.sleep(event["sleep"])
        if "raise" in event:
            raise HandlerError(event["raise"])
        if "status" in event:
            return {"statusCode": event["status"], "body": ""}
    return {"statusCode": 200, "body": "ok"}
