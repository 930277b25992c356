"""The spans of a trace batch that the tagging processors read, found once per batch.

coldstart and tail_latency each read a batch's entry spans (pdata.is_entry_span); coldstart
also reads spans named `init`. Finding them means reading every span, about 37 us per
100-span request, so the first of them to ask walks the batch and the next one reuses that.

What was found is kept for that very batch object only, in a context variable: it follows the
request down the pipeline and is dropped with the request's task, and concurrent requests never
see each other's. It stays true while processors change attributes only; every other processor
that changes data forgets it as it hands the batch on (Processor.attributes_only, forward).

The spans found are the only ones a processor with Processor.marked_spans_only may change, so
they are registered with core.wire as changed: encoding the batch encodes just them again.
"""

from __future__ import annotations

from contextvars import ContextVar

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from collector.core import wire
from collector.core.pdata import ENTRY_KINDS

INIT_SPAN_NAME = "init"  # the span a Lambda layer records for the function's init phase

Marked = list[tuple[ResourceSpans, list[Span]]]
_FOUND: ContextVar[tuple[object, Marked] | None] = ContextVar("coldtail_marked", default=None)


def marked_spans(batch) -> Marked:
    """Per resource of the trace batch, in order: its entry spans and spans named `init`."""
    found = _FOUND.get()
    if found is not None and found[0] is batch:
        return found[1]
    marked: Marked = []
    positions: list[wire.Position] = []
    for r, rs in enumerate(batch.resource_spans):
        spans: list[Span] = []
        for k, ss in enumerate(rs.scope_spans):
            for i, s in enumerate(ss.spans):
                if s.kind in ENTRY_KINDS or not s.parent_span_id or s.name == INIT_SPAN_NAME:
                    spans.append(s)
                    positions.append((r, k, i, s))
        marked.append((rs, spans))
    _FOUND.set((batch, marked))
    wire.changed(batch, positions)
    return marked


def forget(batch) -> None:
    """Drop what was found in `batch`: it may change."""
    found = _FOUND.get()
    if found is not None and found[0] is batch:
        _FOUND.set(None)
