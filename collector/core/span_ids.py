"""Whether every span of an OTLP trace export request has well-formed ids, read from its wire
form in C: a 16-byte trace id, an 8-byte span id, an empty or 8-byte parent id, and no links.

Every request pays the id check (pdata.check_ids), and reading three ids and the links of each
span from Python costs about 53 us per 100-span request. Here the request is parsed again into a
view that declares only those fields (10 us: the rest is skipped as unknown), the rest dropped,
and each scope's spans serialized (canonical: fields in number order, empty ones left out) and
matched as a whole against the two forms a well-formed span can then take; 29 us in all. A
request this does not pass (a link, a bad id) goes through the exact check, which names the
fault.

Why a match cannot be wrong: a scope's serialized spans are `0x12 <length> <span>` one after
another. Each alternative of the pattern starts with `0x12` and a length byte (28 or 38) and is
exactly that long, so the match stays on the spans' real boundaries, and within a span of 28
(or 38) bytes that starts with a 16-byte trace id field, an 8-byte span id field (and an 8-byte
parent id field) fill it all: nothing else can be there.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from google.protobuf.message import Message

from collector.core.proto_schema import OPTIONAL, REPEATED, F, view_class

_SPANS = re.compile(
    rb"(?:\x12\x1c\x0a\x10.{16}\x12\x08.{8}|\x12\x26\x0a\x10.{16}\x12\x08.{8}\x22\x08.{8})*",
    re.DOTALL,
)


@functools.cache
def _view() -> type[Message]:
    """ExportTraceServiceRequest with nothing but the path to each span's ids and links (field
    numbers as in OTLP's trace.proto)."""
    return view_class(
        "coldtail.span_ids",
        {
            "Request": [
                ("resource_spans", 1, F.TYPE_MESSAGE, REPEATED, ".coldtail.span_ids.Resource")
            ],
            "Resource": [("scope_spans", 2, F.TYPE_MESSAGE, REPEATED, ".coldtail.span_ids.Scope")],
            "Scope": [("spans", 2, F.TYPE_MESSAGE, REPEATED, ".coldtail.span_ids.Span")],
            "Span": [
                ("trace_id", 1, F.TYPE_BYTES, OPTIONAL, ""),
                ("span_id", 2, F.TYPE_BYTES, OPTIONAL, ""),
                ("parent_span_id", 4, F.TYPE_BYTES, OPTIONAL, ""),
                ("links", 13, F.TYPE_BYTES, REPEATED, ""),
            ],
        },
    )


def well_formed(data: bytes) -> bool:
    """True when every span of the trace export request `data` (which must parse as one) has
    well-formed ids and no links; False says only that the exact check must decide."""
    view: Any = _view().FromString(data)
    view.DiscardUnknownFields()
    return all(
        _SPANS.fullmatch(ss.SerializeToString())
        for rs in view.resource_spans
        for ss in rs.scope_spans
    )
