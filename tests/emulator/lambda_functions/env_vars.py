"""Returns the process environment and import path as the handler sees them."""

import os
import sys


def handler(event, context):
    return {"environ": dict(os.environ), "sys_path": sys.path, "pid": os.getpid()}
