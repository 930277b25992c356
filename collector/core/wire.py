"""The wire form a batch was decoded from, kept so that encoding the batch again reuses it.

A receiver decodes every request to check it, and a pipeline whose processors read the batch
(coldstart, tail_latency) then encodes it again for the exporter: about 55 us per 100-span
request. When the processors changed nothing but the attributes of a few spans they were handed,
the received bytes with just those spans encoded again say the same: about 25 us.

What is kept is for that very batch object only, in a context variable: it follows the request
down the pipeline and is dropped with the request's task, and concurrent requests never see each
other's. It stays true while the only changes are to spans registered with `changed`; every other
processor that changes data drops it as it hands the batch on (Processor.forward).
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.protobuf.message import Message

# Where a span sits in its trace export request (resource, scope and span indices), and the span.
Position = tuple[int, int, int, Any]


class _Kept:
    __slots__ = ("batch", "changed", "data")

    def __init__(self, batch: object, data: bytes) -> None:
        self.batch = batch
        self.data = data
        self.changed: list[Position] = []


_KEPT: ContextVar[_Kept | None] = ContextVar("coldtail_wire", default=None)


def keep(batch, data: bytes) -> None:
    """`batch` was just decoded from `data`."""
    _KEPT.set(_Kept(batch, data))


def drop(batch) -> None:
    """`batch` may change beyond the spans registered with `changed`."""
    kept = _KEPT.get()
    if kept is not None and kept.batch is batch:
        _KEPT.set(None)


def changed(batch, spans: list[Position]) -> None:
    """The trace batch's `spans` may have changed (attributes only; never which spans there are):
    its encoding encodes them again. They are all the spans that may change: a batch found again
    names the same ones."""
    kept = _KEPT.get()
    if kept is not None and kept.batch is batch:
        kept.changed = spans


def encode(batch) -> bytes:
    """The wire form of the protobuf message `batch`."""
    kept = _KEPT.get()
    if kept is None or kept.batch is not batch:
        return batch.SerializeToString()
    if not kept.changed:
        return kept.data
    view: Any = _view().FromString(kept.data)
    scope: tuple[int, int] | None = None
    encoded: Any = None
    for r, s, i, span in kept.changed:
        if scope != (r, s):  # spans come in order: a scope's spans are fetched once
            scope, encoded = (r, s), view.resource_spans[r].scope_spans[s].spans
        encoded[i] = span.SerializeToString()
    # Fields the view does not declare (resources, scopes, schema urls) are kept as they came
    # and written after the declared ones: another order, the same message.
    return view.SerializeToString()


@functools.cache
def _view() -> type[Message]:
    """ExportTraceServiceRequest down to each span, which is left as bytes (field numbers as in
    OTLP's trace.proto)."""
    # Imported on first use: a Lambda extension's init does not pay for descriptor building.
    from collector.core.proto_schema import REPEATED, F, view_class

    return view_class(
        "coldtail.wire",
        {
            "Request": [("resource_spans", 1, F.TYPE_MESSAGE, REPEATED, ".coldtail.wire.Resource")],
            "Resource": [("scope_spans", 2, F.TYPE_MESSAGE, REPEATED, ".coldtail.wire.Scope")],
            "Scope": [("spans", 2, F.TYPE_BYTES, REPEATED, "")],
        },
    )
