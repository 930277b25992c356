"""The OTLP/JSON encoding: protobuf JSON mapping, except that trace and span ids are hex strings.

Per the OTLP spec: lowerCamelCase keys, 64-bit integers as strings, enums as integers, and
traceId / spanId / parentSpanId as (case-insensitive) hex rather than base64.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from google.protobuf import json_format

_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _b64_to_hex(tree: Any) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in _ID_KEYS and isinstance(value, str):
                tree[key] = base64.b64decode(value).hex()
            else:
                _b64_to_hex(value)
    elif isinstance(tree, list):
        for item in tree:
            _b64_to_hex(item)


def _hex_to_b64(tree: Any) -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in _ID_KEYS and isinstance(value, str):
                try:
                    raw = bytes.fromhex(value)
                except ValueError:
                    raise ValueError(f"{key}: {value!r} is not a hex string") from None
                tree[key] = base64.b64encode(raw).decode()
            else:
                _hex_to_b64(value)
    elif isinstance(tree, list):
        for item in tree:
            _hex_to_b64(item)


def to_dict(message) -> dict:
    tree = json_format.MessageToDict(message, use_integers_for_enums=True)
    _b64_to_hex(tree)
    return tree


def dumps(message) -> str:
    """One line of OTLP/JSON."""
    return json.dumps(to_dict(message), separators=(",", ":"))


def parse(data: bytes | str, message_type):
    """Decode OTLP/JSON into a new `message_type`; raises ValueError on any malformed input."""
    try:
        tree = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"invalid JSON: {e}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    if not isinstance(tree, dict):
        raise ValueError("invalid OTLP/JSON: the top level must be an object")
    message = message_type()
    try:
        _hex_to_b64(tree)
        json_format.ParseDict(tree, message, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        raise ValueError(f"invalid OTLP/JSON: {e}") from None
    except RecursionError:
        raise ValueError("invalid OTLP/JSON: nested too deeply") from None
    return message
