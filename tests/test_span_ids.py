"""span_ids.well_formed, the id check read in C from a trace request's wire form, never passes
a request that the exact check (pdata.check_ids on the decoded batch) refuses, whatever the
spans look like on the wire: ids of any length, fields repeated (the last one wins) or out of
order, links, unknown fields, several resources and scopes, corrupted bytes."""

import random

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core import span_ids
from collector.core.pdata import Traces, check_ids
from tests.support.builders import make_traces


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def some_id(rng: random.Random, size: int) -> bytes:
    # Mostly the right size; sometimes one off, empty or long.
    actual = rng.choice([size] * 24 + [0, size - 1, size + 1, rng.randrange(40)])
    return rng.randbytes(actual)


def random_span(rng: random.Random) -> bytes:
    """A span's wire form, its fields in any order, some repeated, unknown ones between."""
    fragments = [
        Span(trace_id=some_id(rng, 16)).SerializeToString(),
        Span(span_id=some_id(rng, 8)).SerializeToString(),
        Span(name=rng.choice(["GET /", "db", ""]), kind=rng.randrange(6)).SerializeToString(),
    ]
    if rng.random() < 0.6:
        fragments.append(Span(parent_span_id=some_id(rng, 8)).SerializeToString())
    if rng.random() < 0.15:
        link = Span.Link(trace_id=some_id(rng, 16), span_id=some_id(rng, 8))
        fragments.append(field(13, link.SerializeToString()))
    if rng.random() < 0.15:  # a repeated id field: the last one counts
        fragments.append(Span(trace_id=some_id(rng, 16)).SerializeToString())
    if rng.random() < 0.1:
        fragments.append(field(99, rng.randbytes(rng.randrange(12))))
    rng.shuffle(fragments)
    return b"".join(fragments)


def random_request(rng: random.Random) -> bytes:
    resources = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        scopes = [
            field(1, b"\x0a\x03lib")  # the scope
            + b"".join(field(2, random_span(rng)) for _ in range(rng.randrange(6)))
            for _ in range(rng.choice([1, 1, 2]))
        ]
        resources.append(field(1, b"\x0a\x00") + b"".join(field(2, s) for s in scopes))
    return b"".join(field(1, r) for r in resources)


def exactly_valid(batch: Traces) -> bool:
    try:
        check_ids(batch)
    except ValueError:
        return False
    return True


def test_never_passes_what_the_exact_check_refuses():
    rng = random.Random(7)
    passed = refused = 0
    for _ in range(3000):
        data = random_request(rng)
        batch = Traces.FromString(data)
        if span_ids.well_formed(data):
            assert exactly_valid(batch), batch
            passed += 1
        elif not exactly_valid(batch):
            refused += 1
    assert passed > 400 and refused > 1000  # both sides of the check were exercised


def test_corrupted_bytes_never_pass_what_the_exact_check_refuses():
    rng = random.Random(11)
    good = make_traces(20, parent_span_id=b"\x01" * 8).SerializeToString()
    checked = 0
    for _ in range(3000):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            batch = Traces.FromString(bytes(data))
        except DecodeError:
            continue
        checked += 1
        if span_ids.well_formed(bytes(data)):
            assert exactly_valid(batch)
    assert checked > 1000


@pytest.mark.parametrize("parent", [b"", b"\x02" * 8])
def test_well_formed_spans_pass_without_the_exact_check(parent):
    batch = make_traces(50, parent_span_id=parent)
    batch.MergeFrom(make_traces(3, resource={"service.name": "other"}))
    assert span_ids.well_formed(batch.SerializeToString())


def test_a_link_leaves_the_decision_to_the_exact_check():
    batch = make_traces(3)
    link = batch.resource_spans[0].scope_spans[0].spans[1].links.add()
    link.trace_id, link.span_id = b"\x03" * 16, b"\x04" * 8
    assert not span_ids.well_formed(batch.SerializeToString())
    check_ids(batch, batch.SerializeToString())  # valid: no error
    link.span_id = b"\x04" * 7
    with pytest.raises(ValueError, match="span link span_id: 7 bytes"):
        check_ids(batch, batch.SerializeToString())
