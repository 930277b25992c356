"""Takes 0.3 s to import."""

import os
import time

time.sleep(0.3)


def handler(event, context):
    return {"pid": os.getpid(), "init_type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
