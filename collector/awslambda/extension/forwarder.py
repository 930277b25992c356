"""Hands the front door's queue, in order, to the real receivers of the collector.

The forwarder replays the queue to the real receivers' bound endpoints over loopback HTTP
(keep-alive, stdlib http.client), from its own daemon thread, once the collector has started;
the real receivers answer once the data is in the pipelines, so `drain` returning True means
everything received until then is in the pipelines. A refused request is logged and dropped;
429, 502, 503 and 504 are tried again twice first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from collector.awslambda.extension.front_door import Delivery, FrontDoor
from collector.awslambda.extension.http11 import split_endpoint

_RETRYABLE = frozenset({429, 502, 503, 504})
_RETRY_DELAYS_S = (0.05, 0.2)

log = logging.getLogger("coldtail.lambda_extension")


class Forwarder:
    """Hands the front door's queue, in order, to the real receivers from a daemon thread.

    `start(targets)` maps listener names to the real receivers' "host:port"; `start(None)`
    drops everything (the collector could not be loaded), so that the queue stays bounded."""

    def __init__(self, front_door: FrontDoor) -> None:
        self.front_door = front_door
        self.dropped = 0  # deliveries a receiver refused or that had nowhere to go
        self._targets: dict[str, str] | None = None
        self._connections: dict = {}
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, targets: Mapping[str, str] | None) -> None:
        self._targets = None if targets is None else dict(targets)
        self._thread = threading.Thread(target=self._run, name="coldtail-forwarder", daemon=True)
        self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until everything the front door received so far is forwarded; False when
        `timeout` (seconds) ran out first."""
        return self.front_door.wait_forwarded(self.front_door.last_seq, timeout)

    def stop(self) -> None:
        """Stop after the delivery in hand (the front door must be closed too, or be idle)."""
        self._stopping = True

    def _run(self) -> None:
        import http.client

        while not self._stopping:
            delivery = self.front_door.take(timeout=0.5)
            if delivery is None:
                continue
            try:
                target = None if self._targets is None else self._targets.get(delivery.listener)
                if target is None or not self._send(http.client, target, delivery):
                    self.dropped += 1
            except Exception:
                self.dropped += 1
                log.exception("forwarding to the collector failed")
            finally:
                self.front_door.forwarded(delivery)
        for connection in self._connections.values():
            connection.close()

    def _send(self, client, target: str, delivery: Delivery) -> bool:
        headers = {"Content-Type": delivery.content_type or "application/octet-stream"}
        if delivery.content_encoding:
            headers["Content-Encoding"] = delivery.content_encoding
        delays = iter(_RETRY_DELAYS_S)
        reconnected = False
        while True:
            connection = self._connections.get(target)
            if connection is None:
                host, port = split_endpoint(target)
                connection = self._connections[target] = client.HTTPConnection(
                    host, port, timeout=30
                )
            try:
                connection.request("POST", delivery.path, delivery.body, headers)
                response = connection.getresponse()
                answer = response.read()
            except (OSError, client.HTTPException) as e:
                connection.close()
                del self._connections[target]
                if not reconnected:  # a kept-alive connection the receiver had closed
                    reconnected = True
                    continue
                delay = next(delays, None)
                if delay is None:
                    log.warning(
                        "data dropped: the collector's receiver cannot be reached",
                        extra={"kv": {"receiver": delivery.listener, "error": repr(e)}},
                    )
                    return False
                time.sleep(delay)
                continue
            if response.status < 300:
                return True
            delay = next(delays, None) if response.status in _RETRYABLE else None
            if delay is None:
                log.warning(
                    "data dropped: refused by the collector's receiver",
                    extra={
                        "kv": {
                            "receiver": delivery.listener,
                            "status": response.status,
                            "answer": answer[:200].decode("utf-8", "replace"),
                        }
                    },
                )
                return False
            time.sleep(delay)
