"""Incoming trace context: W3C `traceparent` and the AWS X-Ray trace header.

The propagators are named by OTEL_PROPAGATORS (default `tracecontext,baggage`), applied in order
with later ones overriding earlier ones, as the OTel composite propagator does:

- `tracecontext`: the `traceparent` / `tracestate` headers;
- `xray`: the `X-Amzn-Trace-Id` header;
- `xray-lambda`: like `xray`, and when no earlier propagator found a parent, the function's own
  X-Ray context from the `_X_AMZN_TRACE_ID` environment variable (the semantic conventions'
  "xray-lambda" propagator for active tracing).

Only extraction is needed here, and baggage is not read: the invocation span needs a parent, not
baggage entries. Other names (b3, jaeger, ...) are not supported and are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from instrumentation.spans import SpanContext

DEFAULT_PROPAGATORS = ("tracecontext", "baggage")
SUPPORTED_PROPAGATORS = frozenset({"tracecontext", "baggage", "xray", "xray-lambda", "none"})

_HEX = frozenset("0123456789abcdef")
_XRAY_HEADER = "x-amzn-trace-id"
_XRAY_ENV = "_X_AMZN_TRACE_ID"


def propagators_from_env(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    value = environ.get("OTEL_PROPAGATORS", "")
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    return names or DEFAULT_PROPAGATORS


def extract(
    headers: Mapping | None,
    propagators: tuple[str, ...],
    environ: Mapping[str, str] = os.environ,
) -> SpanContext | None:
    """The parent context from `headers` (any case) and, for xray-lambda, the environment."""
    if "none" in propagators:
        return None
    lowered = lower_keys(headers)
    parent = None
    for name in propagators:
        if name == "tracecontext":
            parent = parse_traceparent(lowered.get("traceparent"), lowered.get("tracestate")) or (
                parent
            )
        elif name == "xray":
            parent = parse_xray(lowered.get(_XRAY_HEADER)) or parent
        elif name == "xray-lambda":
            from_header = parse_xray(lowered.get(_XRAY_HEADER))
            if parent is not None:
                parent = from_header or parent
            else:
                parent = parse_xray(environ.get(_XRAY_ENV)) or from_header
    return parent


def lower_keys(headers: Mapping | None) -> dict[str, str]:
    """Header names lowercased; for repeated headers (lists, as in multiValueHeaders) the
    values joined with commas."""
    if not isinstance(headers, Mapping):
        return {}
    lowered: dict[str, str] = {}
    for key, value in headers.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        if isinstance(key, str) and isinstance(value, str):
            lowered[key.lower()] = value
    return lowered


def parse_traceparent(value, tracestate=None) -> SpanContext | None:
    """`version-traceid-parentid-flags` per W3C Trace Context level 1; None when invalid."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    parts = value.split("-")
    if len(parts) < 4:
        return None
    version, trace_id, span_id, flags = parts[:4]
    if len(version) != 2 or not _is_hex(version) or version == "ff":
        return None
    # Version 00 has exactly four fields; a later version may append more.
    if version == "00" and len(parts) != 4:
        return None
    if not (len(trace_id) == 32 and _is_hex(trace_id) and len(span_id) == 16 and _is_hex(span_id)):
        return None
    if len(flags) != 2 or not _is_hex(flags):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    state = tracestate.strip() if isinstance(tracestate, str) else ""
    return SpanContext(
        bytes.fromhex(trace_id), bytes.fromhex(span_id), bool(int(flags, 16) & 1), state
    )


def parse_xray(value) -> SpanContext | None:
    """`Root=1-{8 hex epoch}-{24 hex};Parent={16 hex};Sampled={0|1|?}` (other keys ignored);
    the trace id is the epoch and the random part joined. None without a valid Root and
    Parent."""
    if not isinstance(value, str):
        return None
    fields = {}
    for part in value.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            fields[key.strip().lower()] = val.strip()
    root_parts = fields.get("root", "").split("-")
    span_id = fields.get("parent", "").lower()
    if len(root_parts) != 3 or root_parts[0] != "1":
        return None
    epoch, random_part = root_parts[1].lower(), root_parts[2].lower()
    if not (len(epoch) == 8 and _is_hex(epoch) and len(random_part) == 24 and _is_hex(random_part)):
        return None
    if len(span_id) != 16 or not _is_hex(span_id) or span_id == "0" * 16:
        return None
    # "?" (sampling deferred) counts as sampled: the decision is left to the collector.
    sampled = fields.get("sampled") != "0"
    return SpanContext(bytes.fromhex(epoch + random_part), bytes.fromhex(span_id), sampled)


def _is_hex(text: str) -> bool:
    return all(c in _HEX for c in text)
