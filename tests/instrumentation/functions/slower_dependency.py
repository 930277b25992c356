"""Imported by `slow_dependency`, nesting one slow import in another."""

import time

time.sleep(0.03)
