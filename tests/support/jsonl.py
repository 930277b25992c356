"""Read OTLP/JSON lines files (file exporter output) back into export requests."""

from __future__ import annotations

import json
from pathlib import Path

from collector.core import otlpjson
from collector.core.pdata import REQUEST_TYPES
from collector.core.signals import Signal

_TOP_KEYS = {
    "resourceSpans": Signal.TRACES,
    "resourceMetrics": Signal.METRICS,
    "resourceLogs": Signal.LOGS,
}


def read_requests(*paths: str | Path) -> dict[Signal, list]:
    """Every line of the files, parsed into the request type its top-level key names."""
    out: dict[Signal, list] = {s: [] for s in Signal}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if not line.strip():
                continue
            signal = _TOP_KEYS[next(iter(json.loads(line)), "")]
            out[signal].append(otlpjson.parse(line, REQUEST_TYPES[signal]))
    return out
