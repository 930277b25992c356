"""AWS X-Ray segment documents (the X-Ray developer guide's "segment documents") as OTLP spans.

A document is a segment, or a subsegment sent on its own (`type: subsegment`, with `trace_id`
and `parent_id`); its embedded subsegments become child spans of the same trace. Segments are
SERVER spans, subsegments in the `aws` or `remote` namespace CLIENT spans, other subsegments (no
namespace, or the Python SDK's `local`) INTERNAL. The `http`, `sql` and `aws` blocks become
semantic-convention attributes, annotations attributes whose keys `aws.xray.annotations` lists
(so that an X-Ray exporter indexes them again), each metadata namespace one JSON string
attribute, and the `cause` exception events. The resource comes from the document:
`service.name` from a segment's name (a subsegment's name is the downstream's, so a lone
subsegment names no service), the `aws` block's EC2, ECS, Elastic Beanstalk and SDK details, and
the origin's `cloud.platform`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from collector.aws.xray import ANNOTATIONS, IN_PROGRESS, METADATA_PREFIX
from collector.core.pdata import set_attr

_TRACE_ID = re.compile(r"1-([0-9a-fA-F]{8})-([0-9a-fA-F]{24})")
_ID = re.compile(r"[0-9a-fA-F]{16}")
_MAX_DEPTH = 64  # nesting of embedded subsegments; X-Ray's SDKs stay far below
_PLATFORMS = {
    "AWS::Lambda::Function": "aws_lambda",
    "AWS::EC2::Instance": "aws_ec2",
    "AWS::ECS::Container": "aws_ecs",
    "AWS::ECS::Fargate": "aws_ecs",
    "AWS::EKS::Container": "aws_eks",
    "AWS::ElasticBeanstalk::Environment": "aws_elastic_beanstalk",
}
# (block key, field) -> resource attribute, from the `aws` block.
_AWS_RESOURCE = {
    ("ec2", "instance_id"): "host.id",
    ("ec2", "instance_size"): "host.type",
    ("ec2", "ami_id"): "host.image.id",
    ("ec2", "availability_zone"): "cloud.availability_zone",
    ("ecs", "container"): "container.name",
    ("ecs", "container_id"): "container.id",
    ("ecs", "task_arn"): "aws.ecs.task.arn",
    ("ecs", "task_family"): "aws.ecs.task.family",
    ("ecs", "cluster_arn"): "aws.ecs.cluster.arn",
    ("elastic_beanstalk", "environment_name"): "service.namespace",
    ("elastic_beanstalk", "deployment_id"): "service.instance.id",
    ("elastic_beanstalk", "version_label"): "service.version",
    ("xray", "sdk"): "telemetry.sdk.name",
    ("xray", "sdk_version"): "telemetry.sdk.version",
    ("xray", "auto_instrumentation"): "telemetry.auto.version",
}
# Fields of a subsegment's `aws` block (an AWS SDK call) -> span attribute.
_AWS_CALL = {
    "operation": "rpc.method",
    "request_id": "aws.request_id",
    "region": "cloud.region",
    "queue_url": "aws.queue_url",
    "table_name": "aws.dynamodb.table_names",
    "retries": "aws.retries",
}
_HTTP_REQUEST = {
    "method": "http.request.method",
    "url": "url.full",
    "user_agent": "user_agent.original",
    "client_ip": "client.address",
}
_SQL = {
    "sanitized_query": "db.query.text",
    "database_type": "db.system",
    "database_version": "db.version",
    "driver_version": "db.driver.version",
    "user": "db.user",
    "url": "db.connection_string",
}


class InvalidSegment(ValueError):
    """A document X-Ray itself would refuse: the message says which field."""


def document_spans(document: dict) -> ResourceSpans:
    """The spans of one document (its embedded subsegments included) under their resource."""
    if not isinstance(document, dict):
        raise InvalidSegment("a segment document must be a JSON object")
    trace = _trace_id(document.get("trace_id"))
    lone_subsegment = document.get("type") == "subsegment"
    if lone_subsegment and not isinstance(document.get("parent_id"), str):
        raise InvalidSegment("a subsegment sent on its own needs parent_id")
    rs = ResourceSpans()
    _resource(rs, document, lone_subsegment)
    spans = rs.scope_spans.add().spans
    _add_span(spans, document, trace, None, not lone_subsegment, 0)
    return rs


def _add_span(spans, document: Any, trace: bytes, parent: bytes | None, segment: bool, depth: int):
    if not isinstance(document, dict):
        raise InvalidSegment("a subsegment must be a JSON object")
    if depth > _MAX_DEPTH:
        raise InvalidSegment(f"subsegments nested deeper than {_MAX_DEPTH}")
    span = spans.add()
    span.trace_id = trace
    span.span_id = _span_id(document.get("id"), "id")
    if parent is not None:
        span.parent_span_id = parent
    elif document.get("parent_id") is not None:
        span.parent_span_id = _span_id(document.get("parent_id"), "parent_id")
    name = document.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidSegment("name must be a non-empty string")
    span.name = name
    span.start_time_unix_nano = _time_ns(document.get("start_time"), "start_time")
    if document.get("in_progress") is True:
        set_attr(span.attributes, IN_PROGRESS, True)
        span.end_time_unix_nano = span.start_time_unix_nano
    else:
        end = _time_ns(document.get("end_time"), "end_time (or in_progress)")
        span.end_time_unix_nano = max(end, span.start_time_unix_nano)
    span.kind = _kind(document, segment)
    attributes = span.attributes
    if document.get("namespace") == "aws":
        set_attr(attributes, "rpc.system", "aws-api")
        set_attr(attributes, "rpc.service", name)
    if isinstance(document.get("user"), str):
        set_attr(attributes, "enduser.id", document["user"])
    _http(span, document.get("http"))
    _copy(attributes, document.get("sql"), _SQL)
    if not segment:
        _aws_call(attributes, document.get("aws"))
    _annotations(attributes, document.get("annotations"))
    _metadata(attributes, document.get("metadata"))
    _status(span, document, segment)
    for child in _list(document.get("subsegments"), "subsegments"):
        _add_span(spans, child, trace, span.span_id, False, depth + 1)


def _trace_id(value: object) -> bytes:
    match = _TRACE_ID.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidSegment(
            f"trace_id must look like 1-58406520-a006649127e371903a2de979: {value!r}"
        )
    return bytes.fromhex(match[1] + match[2])


def _span_id(value: object, field: str) -> bytes:
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidSegment(f"{field} must be 16 hexadecimal digits: {value!r}")
    return bytes.fromhex(value)


def _time_ns(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSegment(f"{field} must be epoch seconds: {value!r}")
    if value < 0:
        raise InvalidSegment(f"{field} must not be negative: {value!r}")
    # Microseconds first: X-Ray's precision, and exact where a float of nanoseconds is not.
    return round(value * 1_000_000) * 1_000


def _kind(document: dict, segment: bool) -> int:
    if segment:
        return Span.SPAN_KIND_SERVER
    # X-Ray documents `aws` and `remote`; the X-Ray SDK for Python also sends `local`.
    if document.get("namespace") in ("aws", "remote"):
        return Span.SPAN_KIND_CLIENT
    return Span.SPAN_KIND_INTERNAL


def _list(value: object, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidSegment(f"{field} must be a list")
    return value


def _copy(attributes, block: object, fields: dict[str, str]) -> None:
    if not isinstance(block, dict):
        return
    for field, key in fields.items():
        value = block.get(field)
        if isinstance(value, str | int | float | bool):
            set_attr(attributes, key, value)


def _http(span: Span, http: object) -> None:
    if not isinstance(http, dict):
        return
    _copy(span.attributes, http.get("request"), _HTTP_REQUEST)
    response = http.get("response")
    if isinstance(response, dict):
        status = response.get("status")
        if isinstance(status, int) and not isinstance(status, bool):
            set_attr(span.attributes, "http.response.status_code", status)
        length = response.get("content_length")
        if isinstance(length, int) and not isinstance(length, bool):
            set_attr(span.attributes, "http.response.body.size", length)


def _aws_call(attributes, aws: object) -> None:
    if not isinstance(aws, dict):
        return
    for field, key in _AWS_CALL.items():
        value = aws.get(field)
        if key == "aws.dynamodb.table_names" and isinstance(value, str):
            value = [value]
        if isinstance(value, str | int | float | bool | list):
            set_attr(attributes, key, value)


def _annotations(attributes, annotations: object) -> None:
    if not isinstance(annotations, dict) or not annotations:
        return
    keys = []
    for key, value in annotations.items():
        if isinstance(value, str | int | float | bool):
            set_attr(attributes, key, value)
            keys.append(key)
    if keys:
        set_attr(attributes, ANNOTATIONS, keys)


def _metadata(attributes, metadata: object) -> None:
    if not isinstance(metadata, dict):
        return
    for namespace, values in metadata.items():
        text = json.dumps(values, separators=(",", ":"), default=str)
        set_attr(attributes, METADATA_PREFIX + str(namespace), text)


def _status(span: Span, document: dict, segment: bool) -> None:
    """ERROR for a fault, a throttle, a cause, or a client error (4xx) of a call this service
    made; a segment's own 4xx is the client's error and leaves the status unset, as the HTTP
    semantic conventions say for servers."""
    cause = document.get("cause")
    exceptions = cause.get("exceptions") if isinstance(cause, dict) else None
    for exception in _list(exceptions, "cause.exceptions"):
        if isinstance(exception, dict):
            _exception_event(span, exception)
    failed = document.get("fault") is True or document.get("throttle") is True
    failed = failed or (document.get("error") is True and not segment)
    if failed or exceptions:
        span.status.code = Status.STATUS_CODE_ERROR
        first = exceptions[0] if exceptions and isinstance(exceptions[0], dict) else {}
        message = first.get("message") or first.get("type")
        if isinstance(message, str):
            span.status.message = message


def _exception_event(span: Span, exception: dict) -> None:
    event = span.events.add(name="exception", time_unix_nano=span.end_time_unix_nano)
    for field, key in (("type", "exception.type"), ("message", "exception.message")):
        if isinstance(exception.get(field), str):
            set_attr(event.attributes, key, exception[field])
    stack = exception.get("stack")
    if isinstance(stack, list) and stack:
        # X-Ray lists the innermost frame first; a Python traceback lists it last.
        lines = ["Traceback (most recent call last):"]
        for frame in reversed(stack):
            if isinstance(frame, dict):
                path, line = frame.get("path", "?"), frame.get("line", "?")
                lines.append(f'  File "{path}", line {line}, in {frame.get("label", "?")}')
        lines.append(
            f"{exception.get('type', 'Exception')}: {exception.get('message', '')}".rstrip(": ")
        )
        set_attr(event.attributes, "exception.stacktrace", "\n".join(lines))


def _resource(rs: ResourceSpans, document: dict, lone_subsegment: bool) -> None:
    attributes = rs.resource.attributes
    if not lone_subsegment:
        set_attr(
            attributes,
            "service.name",
            document["name"] if isinstance(document.get("name"), str) else "",
        )
    aws = document.get("aws")
    platform = _PLATFORMS.get(document.get("origin", ""))
    if platform or isinstance(aws, dict):
        set_attr(attributes, "cloud.provider", "aws")
    if platform:
        set_attr(attributes, "cloud.platform", platform)
    if isinstance(aws, dict):
        for (block, field), key in _AWS_RESOURCE.items():
            value = aws.get(block)
            value = value.get(field) if isinstance(value, dict) else None
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                set_attr(attributes, key, value)
        if isinstance(aws.get("account_id"), str):
            set_attr(attributes, "cloud.account.id", aws["account_id"])
        sdk = aws.get("xray", {}).get("sdk", "") if isinstance(aws.get("xray"), dict) else ""
        if isinstance(sdk, str) and "for " in sdk:  # "X-Ray for Python"
            set_attr(attributes, "telemetry.sdk.language", sdk.rsplit("for ", 1)[1].lower())
    service = document.get("service")
    if isinstance(service, dict) and isinstance(service.get("version"), str):
        set_attr(attributes, "service.version", service["version"])
    if isinstance(document.get("resource_arn"), str):
        set_attr(attributes, "cloud.resource_id", document["resource_arn"])
