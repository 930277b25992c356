"""OTLP spans as AWS X-Ray segment documents (the X-Ray developer guide's "segment documents").

Each span becomes one document: a segment for a span where a request enters a service (a
SERVER or CONSUMER span, or one without a local parent), else a subsegment sent on its own
(`type: subsegment` with `trace_id` and `parent_id`). Span attributes become the `http`, `sql`
and `aws` blocks where X-Ray has them, annotations (searchable) when indexed, metadata
otherwise; errors become `error` / `throttle` / `fault` and exception events the `cause`.
coldtail's cold-start and latency-tail tags are always annotations. What the awsxray receiver
took from X-Ray documents returns where it came from: its annotations (`aws.xray.annotations`)
as annotations, its metadata namespaces (`aws.xray.metadata.<namespace>`) as namespaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.aws.xray import ANNOTATIONS, METADATA_PREFIX
from collector.core.attributes import (
    COLD_START,
    COLD_START_SOURCE,
    FAAS_COLDSTART,
    LATENCY_TAIL,
    LATENCY_THRESHOLD_MS,
)
from collector.core.pdata import any_value_to_python, is_entry_span

# Annotation keys: letters, digits and underscores only, at most 500 of them.
_ANNOTATION_KEY = re.compile(r"[^A-Za-z0-9_]")
# Segment names: Unicode letters, digits, whitespace and _ . : / % & # = + \ - @, at most 200.
_NAME = re.compile(r"[^\w\s.:/%&#=+\\\-@]")
_ALWAYS_ANNOTATED = frozenset(
    {COLD_START, COLD_START_SOURCE, FAAS_COLDSTART, LATENCY_TAIL, LATENCY_THRESHOLD_MS}
)
_ORIGINS = {
    "aws_lambda": "AWS::Lambda::Function",
    "aws_ec2": "AWS::EC2::Instance",
    "aws_eks": "AWS::EKS::Container",
    "aws_elastic_beanstalk": "AWS::ElasticBeanstalk::Environment",
}
_HTTP_REQUEST = {
    "method": ("http.request.method", "http.method"),
    "url": ("url.full", "http.url"),
    "user_agent": ("user_agent.original", "http.user_agent"),
    "client_ip": ("client.address", "http.client_ip"),
}
_HTTP_STATUS = ("http.response.status_code", "http.status_code")
_SQL = {
    "sanitized_query": ("db.query.text", "db.statement"),
    "database_type": ("db.system",),
    "user": ("db.user",),
    "url": ("db.connection_string",),
}
_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<label>\S+)')


def trace_id(otlp: bytes) -> str:
    """The X-Ray form of a 16-byte trace id: 1-<first 8 hex digits>-<other 24>."""
    text = otlp.hex()
    return f"1-{text[:8]}-{text[8:]}"


class SegmentWriter:
    """Turns spans into documents; `indexed` attribute keys (or all, with `index_all`) become
    annotations."""

    def __init__(
        self, indexed: list[str], index_all: bool, log_groups: list[str] | None = None
    ) -> None:
        self.indexed = _ALWAYS_ANNOTATED | frozenset(indexed)
        self.index_all = index_all
        self.log_groups = log_groups or []

    def documents(self, batch) -> Iterator[str]:
        for rs in batch.resource_spans:
            resource = {kv.key: any_value_to_python(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for span in ss.spans:
                    yield json.dumps(self.document(span, resource), separators=(",", ":"))

    def document(self, span: Span, resource: Mapping[str, object]) -> dict:
        attributes = {kv.key: any_value_to_python(kv.value) for kv in span.attributes}
        entry = is_entry_span(span)
        document: dict = {
            "name": _name(span, attributes, resource, entry),
            "id": span.span_id.hex(),
            "trace_id": trace_id(span.trace_id),
            "start_time": _seconds(span.start_time_unix_nano),
            "end_time": _seconds(max(span.end_time_unix_nano, span.start_time_unix_nano)),
        }
        if span.parent_span_id:
            document["parent_id"] = span.parent_span_id.hex()
        if not entry:
            document["type"] = "subsegment"
            if span.kind in (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER):
                document["namespace"] = (
                    "aws" if attributes.get("rpc.system") == "aws-api" else "remote"
                )
        else:
            origin = _origin(resource)
            if origin:
                document["origin"] = origin
            version = resource.get("service.version")
            if version:
                document["service"] = {"version": str(version)}
        used: set[str] = set()
        http = _block(_HTTP_REQUEST, attributes, used)
        status = _first(attributes, _HTTP_STATUS, used)
        if http or status is not None:
            document["http"] = {"request": http} if http else {}
            if isinstance(status, int):
                document["http"]["response"] = {"status": status}
        sql = _block(_SQL, attributes, used)
        if sql:
            document["sql"] = sql
        aws = self._aws(resource)
        if aws:
            document["aws"] = aws
        document.update(_faults(span, status))
        cause = _cause(span)
        if cause:
            document["cause"] = cause
        annotations, metadata = self._split(attributes, used)
        if annotations:
            document["annotations"] = annotations
        if metadata:
            document["metadata"] = metadata
        return document

    def _split(self, attributes: Mapping[str, object], used: set[str]) -> tuple[dict, dict]:
        """(annotations, metadata by namespace). Attributes that came from X-Ray (the awsxray
        receiver's) return to where they were: annotations, or their metadata namespace."""
        annotated = attributes.get(ANNOTATIONS)
        indexed = self.indexed | set(annotated) if isinstance(annotated, list) else self.indexed
        annotations: dict = {}
        metadata: dict = {}
        for key, value in attributes.items():
            if key in used or key == ANNOTATIONS:
                continue
            if (self.index_all or key in indexed) and isinstance(value, str | int | float):
                annotations[_ANNOTATION_KEY.sub("_", key)[:500]] = (
                    value[:1000] if isinstance(value, str) else value
                )
            elif key.startswith(METADATA_PREFIX) and isinstance(value, str):
                metadata[key.removeprefix(METADATA_PREFIX)] = _json_or_text(value)
            else:
                metadata.setdefault("default", {})[key] = value
        return annotations, metadata

    def _aws(self, resource: Mapping[str, object]) -> dict:
        aws: dict = {}
        groups = list(self.log_groups)
        names = resource.get("aws.log.group.names")
        if not groups and isinstance(names, list):
            groups = [str(name) for name in names]
        if groups:
            aws["cloudwatch_logs"] = [{"log_group": group} for group in groups]
        if resource.get("cloud.platform") == "aws_ecs":
            ecs = {
                "container": resource.get("container.name"),
                "container_id": resource.get("container.id"),
                "task_arn": resource.get("aws.ecs.task.arn"),
                "task_family": resource.get("aws.ecs.task.family"),
                "cluster_arn": resource.get("aws.ecs.cluster.arn"),
            }
            aws["ecs"] = {k: v for k, v in ecs.items() if v}
        return aws


def _name(
    span: Span, attributes: Mapping[str, object], resource: Mapping[str, object], entry: bool
) -> str:
    if entry:
        name = resource.get("service.name") or span.name
    else:
        name = (
            attributes.get("peer.service")
            or attributes.get("server.address")
            or attributes.get("db.name")
            or span.name
        )
    cleaned = _NAME.sub("_", str(name)).strip()[:200]
    return cleaned or "unknown"


def _json_or_text(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _seconds(ns: int) -> float:
    """Epoch seconds to the microsecond, X-Ray's precision (integer division first: a float
    quotient of nanoseconds is off in the last digits)."""
    return ns // 1_000 / 1_000_000


def _origin(resource: Mapping[str, object]) -> str | None:
    platform = resource.get("cloud.platform")
    if platform == "aws_ecs":
        launch = resource.get("aws.ecs.launchtype")
        return "AWS::ECS::Fargate" if launch == "fargate" else "AWS::ECS::Container"
    return _ORIGINS.get(str(platform)) if platform else None


def _first(attributes: Mapping[str, object], keys: tuple[str, ...], used: set[str]):
    for key in keys:
        if key in attributes:
            used.add(key)
            return attributes[key]
    return None


def _block(fields: Mapping[str, tuple[str, ...]], attributes, used: set[str]) -> dict:
    block = {}
    for name, keys in fields.items():
        value = _first(attributes, keys, used)
        if value is not None:
            block[name] = value
    return block


def _faults(span: Span, status) -> dict:
    """error (4xx), throttle (429) and fault (5xx, or an error status without HTTP)."""
    if isinstance(status, int) and 400 <= status < 500:
        return {"error": True, "throttle": True} if status == 429 else {"error": True}
    if (isinstance(status, int) and status >= 500) or (
        span.status.code == Status.STATUS_CODE_ERROR and not isinstance(status, int)
    ):
        return {"fault": True}
    return {}


def _cause(span: Span) -> dict | None:
    exceptions: list[dict] = []
    for event in span.events:
        if event.name != "exception":
            continue
        attributes = {kv.key: any_value_to_python(kv.value) for kv in event.attributes}
        number = int.from_bytes(span.span_id, "big") + len(exceptions)
        exception: dict = {"id": f"{number % 2**64:016x}"}
        for field, key in (("type", "exception.type"), ("message", "exception.message")):
            if attributes.get(key):
                exception[field] = str(attributes[key])
        stack = [
            {"path": m["path"], "line": int(m["line"]), "label": m["label"]}
            for m in _FRAME.finditer(str(attributes.get("exception.stacktrace", "")))
        ]
        if stack:
            exception["stack"] = stack[::-1]  # X-Ray lists the innermost frame first
        exceptions.append(exception)
    if exceptions:
        return {"exceptions": exceptions}
    if span.status.code == Status.STATUS_CODE_ERROR and span.status.message:
        return {"exceptions": [{"id": span.span_id.hex(), "message": span.status.message}]}
    return None
