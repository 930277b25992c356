"""Sleeps event["seconds"]."""

import os
import time


def handler(event, context):
    time.sleep(event["seconds"])
    return {"pid": os.getpid()}
