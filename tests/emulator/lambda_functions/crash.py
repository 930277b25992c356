"""Exits the runtime process in the middle of the invocation."""

import os


def handler(event, context):
    print("about to exit")
    os._exit(event.get("status", 3))
