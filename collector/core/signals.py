"""The telemetry signals and what one item of each is called.

A leaf module: it imports nothing from the project, so every other module can import it without
forming a cycle (`make lint` checks for cycles with tools/import_cycles.py).
"""

import enum


class Signal(enum.StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


# The word the Collector's own metrics use for one item of each signal.
ITEM_NAMES = {Signal.TRACES: "spans", Signal.METRICS: "metric_points", Signal.LOGS: "log_records"}
