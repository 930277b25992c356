"""A SnapStart function: its runtime hooks (snapshot_restore_py) and its handler note each call
in `CALLS`, which the handler returns. From the environment: SNAPSTART_RESTORE_DELAY (seconds
the after-restore hook takes), SNAPSTART_FAIL (`before-snapshot` or `after-restore`: that hook
raises)."""

import os
import time

from snapshot_restore_py import register_after_restore, register_before_snapshot

CALLS = ["init"]
INIT_PID = os.getpid()


def _call(name: str, fails: bool = False) -> None:
    print(name)
    CALLS.append(name)
    if fails:
        raise RuntimeError(f"{name} failed")


@register_before_snapshot
def first_before_snapshot() -> None:
    _call("before snapshot 1", os.environ.get("SNAPSTART_FAIL") == "before-snapshot")


@register_before_snapshot
def second_before_snapshot() -> None:
    _call("before snapshot 2")


@register_after_restore
def first_after_restore() -> None:
    time.sleep(float(os.environ.get("SNAPSTART_RESTORE_DELAY", "0")))
    _call("after restore 1", os.environ.get("SNAPSTART_FAIL") == "after-restore")


@register_after_restore
def second_after_restore() -> None:
    _call("after restore 2")


def handler(event, context):
    _call("handler")
    return {
        "calls": CALLS,
        "init_pid": INIT_PID,
        "pid": os.getpid(),
        "initialization_type": os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE"),
        "log_stream_name": context.log_stream_name,
    }
