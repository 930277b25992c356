"""The last export, when Lambda shuts the execution environment down.

With an extension registered (coldtail's collector is one), Lambda's Shutdown phase sends the
runtime SIGTERM and kills it 300 ms later (500 ms when an internal extension registered). What is
still unexported then, spans kept after a failed export and API spans that ended after the last
invocation, is exported within SPINDOWN_BUDGET_MS (150 ms, shared by every way in below; with
the wait for another way's flush to end, at most 200 ms); a failure logs one line. An atexit
hook does the same at a normal interpreter exit.

Seeing SIGTERM takes two ways in. Python runs a signal handler on the main thread, between
bytecodes; the python3.12+ runtimes wait for the next invocation on another thread, so it runs at
once, but older ones wait in C code on the main thread, where it would not run before the kill.
So besides the handler, a thread learns of the signal from the wakeup fd (signal.set_wakeup_fd),
to which Python's C-level handler writes the signal's number at once. Both flush (the export lock
lets one send at a time); then the process ends as SIGTERM would have ended it: the handler
restores the default action and raises the signal again, the thread exits with status 143
(128 + SIGTERM).

The runtime's own handling wins: the handler is installed where SIGTERM has its default action,
and only when the wakeup fd is free, as without the thread it could keep the process from dying;
or over a previous Python handler, which it calls after the flush (the thread then only flushes:
ending the process is that handler's choice). An ignored SIGTERM and a handler installed outside
Python are left alone.
"""

from __future__ import annotations

import _signal  # signal without its enums: importing `signal` costs about 1 ms of cold start
import atexit
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("coldtail")

SPINDOWN_BUDGET_MS = 150
# How long past the budget a flush waits for another one to end (and log), so that it never
# ends the process in the middle of it.
_WAIT_MARGIN_S = 0.05
_EXIT_STATUS = 128 + _signal.SIGTERM

_flush: Callable[[float], object] | None = None
_installed = False
_deadline: float | None = None
# One flush at a time, so that no way in ends the process while another's export is under way.
_flush_lock = threading.Lock()


def install(flush: Callable[[float], object]) -> None:
    """Have `flush(budget_ms)` called when the process ends. Call it on the main thread; later
    calls only change `flush`."""
    global _flush, _installed
    _flush = flush
    if _installed:
        return
    _installed = True
    atexit.register(_flush_in_budget)
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set signal handlers
    previous = _signal.getsignal(_signal.SIGTERM)
    if previous is None or previous == _signal.SIG_IGN:
        return
    chained = previous if callable(previous) else None
    wakeup = _wakeup_pipe()
    if wakeup is None and chained is None:
        return

    def on_sigterm(signum, frame):
        _flush_in_budget()
        if chained is not None:
            chained(signum, frame)
            return
        _signal.signal(signum, _signal.SIG_DFL)
        _signal.raise_signal(signum)

    _signal.signal(_signal.SIGTERM, on_sigterm)
    if wakeup is not None:
        threading.Thread(
            target=_watch, args=(wakeup, chained is None), name="coldtail-spindown", daemon=True
        ).start()


def _wakeup_pipe() -> int | None:
    """The read end of a pipe that receives the number of every signal Python handles, or None
    when the wakeup fd is someone else's."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = _signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    if previous != -1:
        _signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)
        return None
    return read_fd


def _watch(read_fd: int, end_process: bool) -> None:
    while True:
        received = os.read(read_fd, 64)
        if not received:
            return
        if _signal.SIGTERM in received:
            break
    _flush_in_budget()
    if end_process:
        os._exit(_EXIT_STATUS)


def _flush_in_budget() -> None:
    """Flush within what is left of the budget, which starts with the first call; a call while
    another flushes waits for it (within the budget), then finds what is left."""
    global _deadline
    flush = _flush
    if flush is None:
        return
    if _deadline is None:
        _deadline = time.monotonic() + SPINDOWN_BUDGET_MS / 1000
    # Bounded: the signal handler may interrupt the main thread's own flush (atexit).
    if not _flush_lock.acquire(timeout=max(_deadline + _WAIT_MARGIN_S - time.monotonic(), 0)):
        return
    try:
        flush((_deadline - time.monotonic()) * 1000)
    except Exception as e:
        log.warning("coldtail: export at shutdown failed: %r", e)
    finally:
        _flush_lock.release()
