"""Imported by `app` to make its init measurably slow."""

import time

from tests.instrumentation.functions import slower_dependency  # noqa: F401

time.sleep(0.02)
