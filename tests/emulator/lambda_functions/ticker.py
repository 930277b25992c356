"""A background thread counts ticks of 10 ms; the handler reports the count."""

import threading
import time

ticks = 0


def _tick():
    global ticks
    while True:
        time.sleep(0.01)
        ticks += 1


threading.Thread(target=_tick, daemon=True).start()


def handler(event, context):
    return {"ticks": ticks}
