"""The resource of a Lambda function's spans, from the runtime's environment variables; and what
the container instrumentation reads the same way: this process's start time, key=value lists and
whole-number settings from the environment."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from instrumentation import __version__
from instrumentation.attributes import INIT_TYPE

_MIB = 1024 * 1024


def lambda_resource(environ: Mapping[str, str] = os.environ) -> dict[str, object]:
    """Resource attributes: the semantic conventions' cloud.* and faas.* (faas.max_memory in
    bytes), aws.log.group.names and aws.log.stream.names (string arrays of one name each),
    coldtail.init_type, telemetry.sdk.*, then OTEL_RESOURCE_ATTRIBUTES over them; service.name
    is OTEL_SERVICE_NAME, else the one in OTEL_RESOURCE_ATTRIBUTES, else the function name.

    cloud.resource_id and cloud.account.id are span attributes instead: the function's ARN is
    only known once an invocation arrives."""
    function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
    attributes: dict[str, object] = {
        "service.name": function_name or "unknown_service",
        "cloud.provider": "aws",
        "cloud.platform": "aws_lambda",
        "cloud.region": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION"),
        "faas.name": function_name,
        "faas.version": environ.get("AWS_LAMBDA_FUNCTION_VERSION"),
        "faas.instance": environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "faas.max_memory": _memory_bytes(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")),
        "aws.log.group.names": _one_name(environ.get("AWS_LAMBDA_LOG_GROUP_NAME")),
        "aws.log.stream.names": _one_name(environ.get("AWS_LAMBDA_LOG_STREAM_NAME")),
        INIT_TYPE: init_type(environ),
        "telemetry.sdk.name": "coldtail",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": __version__,
    }
    attributes.update(parse_key_values(environ.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    service_name = environ.get("OTEL_SERVICE_NAME", "").strip()
    if service_name:
        attributes["service.name"] = service_name
    return {key: value for key, value in attributes.items() if value is not None}


def init_type(environ: Mapping[str, str] = os.environ) -> str:
    """AWS_LAMBDA_INITIALIZATION_TYPE: on-demand (the default), provisioned-concurrency or
    snap-start."""
    return environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") or "on-demand"


# Not typing's: importing typing costs milliseconds of cold start. Checkers take it as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TypeVar

    _D = TypeVar("_D")  # the default: a whole number, or None for "no limit"


def whole_number(environ: Mapping[str, str], name: str, default: _D) -> int | _D:
    """The environment variable `name` as a whole number (negative ones count as 0), else
    `default`; a value that is not one logs a warning and gives `default`."""
    value = environ.get(name, "").strip()
    if not value:
        return default
    try:
        return max(int(value), 0)
    except ValueError:
        logging.getLogger("coldtail").warning(
            "coldtail: %s=%r is not a whole number; using %s", name, value, default
        )
        return default


def parse_key_values(text: str) -> dict[str, str]:
    """A `k1=v1,k2=v2` list as in OTEL_RESOURCE_ATTRIBUTES and OTEL_EXPORTER_OTLP_HEADERS:
    keys and values trimmed and percent-decoded; entries without `=` or with an empty key are
    skipped."""
    pairs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = _percent_decode(key.strip()), _percent_decode(value.strip())
        if sep and key:
            pairs[key] = value
    return pairs


def _percent_decode(text: str) -> str:
    if "%" not in text:
        return text
    from urllib.parse import unquote

    return unquote(text)


def process_start_ns() -> int:
    """This process's start time (Unix ns) from /proc; precise to a clock tick (~10 ms)."""
    with open("/proc/self/stat", "rb") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces and parentheses: count from its closing one.
    start_ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
    with open("/proc/uptime", "rb") as f:
        uptime_s = float(f.read().split()[0])
    age_s = uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
    return time.time_ns() - int(age_s * 1e9)


def _memory_bytes(mib: str | None) -> int | None:
    try:
        return int(mib) * _MIB if mib else None
    except ValueError:
        return None


def _one_name(name: str | None) -> list[str] | None:
    # The aws.log.* names are string arrays (a task may write to several groups); a function
    # writes to one group and one stream per execution environment.
    return [name] if name else None
