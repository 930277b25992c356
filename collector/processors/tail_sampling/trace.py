"""A trace held while its decision is pending: its spans, grouped as they arrived, with the
resource and scope each group came with."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from collector.core.pdata import find_attr


@dataclass(frozen=True)
class Fragment:
    """Spans of one trace that arrived together under one resource and scope.

    `resource_spans` and `scope_spans` belong to the incoming batch and are only read. The keys
    identify the resource and scope by content, so fragments from different batches regroup under
    one resource and scope on output."""

    resource_key: tuple[bytes, str]
    scope_key: tuple[bytes, str]
    resource_spans: ResourceSpans
    scope_spans: ScopeSpans
    spans: list[Span]


@dataclass
class Trace:
    """`first_seen` is the processor clock's reading (seconds) when the first span arrived."""

    trace_id: bytes
    first_seen: float
    fragments: list[Fragment] = field(default_factory=list)

    def spans(self) -> Iterator[Span]:
        for fragment in self.fragments:
            yield from fragment.spans

    def attribute_values(self, key: str) -> Iterator[AnyValue]:
        """The value of attribute `key` on every resource and every span of the trace that has
        it (a resource once per fragment)."""
        for fragment in self.fragments:
            kv = find_attr(fragment.resource_spans.resource.attributes, key)
            if kv is not None:
                yield kv.value
            for span in fragment.spans:
                kv = find_attr(span.attributes, key)
                if kv is not None:
                    yield kv.value

    def duration_ns(self) -> int:
        """Latest end minus earliest start across all spans."""
        spans = list(self.spans())
        start = min(s.start_time_unix_nano for s in spans)
        end = max(s.end_time_unix_nano for s in spans)
        return max(0, end - start)
