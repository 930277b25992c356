"""Succeeds, raises (event["raise"]) or sleeps (event["sleep"] seconds), after a log line."""

import time


def handler(event, context):
    print(f"outcome {context.aws_request_id}")
    if "raise" in event:
        raise ValueError(event["raise"])
    time.sleep(event.get("sleep", 0))
    return {"ok": True}
