"""Sleeps event["seconds"] (default 0) and reports who ran it and when, so that invocations can
tell whether they overlapped: its process, start and end (epoch seconds), the variables Lambda
Managed Instances set, and the time left at the end."""

import os
import time


def handler(event, context):
    started = time.time()
    time.sleep(event.get("seconds", 0))
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "started": started,
        "ended": time.time(),
        "init_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "max_concurrency": os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY"),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
