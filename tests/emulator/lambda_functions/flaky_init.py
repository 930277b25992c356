"""Fails to import the first time (the marker file at $INIT_MARKER does not exist yet)."""

import os
from pathlib import Path

_marker = Path(os.environ["INIT_MARKER"])
if not _marker.exists():
    _marker.touch()
    import module_that_does_not_exist  # noqa: F401


def handler(event, context):
    return {"pid": os.getpid()}
