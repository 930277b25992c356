"""`coldtail-instrument COMMAND [ARGS...]` outside Lambda: `python3 -m
instrumentation.container.bootstrap COMMAND [ARGS...]` runs COMMAND with every Python process it
starts instrumented (see instrumentation.container).

It puts the autostart directory first on PYTHONPATH, records the start in COLDTAIL_START_NS, and
execs COMMAND in this process, which keeps the process id (PID 1 in a container, the one ECS
sends SIGTERM) and so receives the signals itself.
"""

from __future__ import annotations

import os
import sys
import time

from instrumentation.container import START_VARIABLE

AUTOSTART_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "autostart")


def main(argv: list[str] | None = None) -> None:
    command = sys.argv[1:] if argv is None else argv
    if not command:
        print("usage: coldtail-instrument COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    # An outer coldtail-instrument's start is the service's start.
    os.environ.setdefault(START_VARIABLE, str(time.time_ns()))
    os.environ["PYTHONPATH"] = python_path(os.environ.get("PYTHONPATH", ""))
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"coldtail-instrument: {command[0]}: {e.strerror}", file=sys.stderr)
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)


def python_path(current: str) -> str:
    """`current` (a PYTHONPATH value) with the autostart directory first, and only there."""
    entries = [entry for entry in current.split(os.pathsep) if entry and entry != AUTOSTART_DIR]
    return os.pathsep.join([AUTOSTART_DIR, *entries])


if __name__ == "__main__":
    main()
