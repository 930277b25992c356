"""What invoked the function: the invocation span's name, kind, attributes, links and parent,
from the event's shape, following the semantic conventions for FaaS, AWS Lambda, HTTP servers
and messaging.

| trigger | recognised by | faas.trigger | kind | span name |
| --- | --- | --- | --- | --- |
| API Gateway REST | `httpMethod`, `resource` | http | SERVER | `GET /pets/{id}` |
| API Gateway HTTP API | `version` 2.0, `requestContext.http` | http | SERVER | `GET /pets/{id}` |
| function URL | as HTTP API, domain `*.lambda-url.*` | http | SERVER | `GET` |
| ALB | `requestContext.elb` | http | SERVER | `GET` |
| SQS | `Records[].eventSource` aws:sqs | pubsub | CONSUMER | `process <queue>` |
| SNS | `Records[].EventSource` aws:sns | pubsub | CONSUMER | `process <topic>` |
| Kinesis | `Records[].eventSource` aws:kinesis | pubsub | CONSUMER | `process <stream>` |
| DynamoDB streams | `Records[].eventSource` aws:dynamodb | datasource | CONSUMER | function |
| S3 | `Records[].eventSource` aws:s3 | datasource | CONSUMER | function |
| EventBridge | `detail-type`, `source` | pubsub (timer: Scheduled Event) | CONSUMER | function |
| anything else | | other | SERVER | function |

("function" is the function name, the FaaS conventions' default span name.)

`http.route` is the route template (REST `resource`, HTTP API `routeKey` without the method),
never the raw path; function URLs, ALB and the HTTP API `$default` route have no template, so no
`http.route`. A batch whose records come from several queues/topics/streams gets no
destination name and the span name `process`. Kinesis and EventBridge have no
`messaging.system` value in the conventions; `aws.kinesis` and `aws.eventbridge` follow the
newer `aws.sns` spelling.

Every span gets `faas.invocation_id`, `cloud.resource_id` and `aws.lambda.invoked_arn` (the
invoked ARN) and `cloud.account.id` (its fifth `:` field). The parent comes from the request
headers for HTTP triggers, from the client context's W3C fields for a direct invoke, and from
`_X_AMZN_TRACE_ID` with the xray-lambda propagator. Each SQS / SNS record with a trace context
(the `traceparent` message attribute, else the SQS `AWSTraceHeader` system attribute) becomes a
link.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from instrumentation import propagation
from instrumentation.spans import KIND_CONSUMER, KIND_SERVER, Link, SpanContext

HTTP = "http"
PUBSUB = "pubsub"
DATASOURCE = "datasource"
TIMER = "timer"
OTHER = "other"

_S3_OPERATIONS = {"ObjectCreated": "insert", "ObjectRemoved": "delete"}
_DYNAMODB_OPERATIONS = {"INSERT": "insert", "MODIFY": "edit", "REMOVE": "delete"}


class Trigger:
    """The invocation span's description. `http_version` is "1.0" or "2.0" for HTTP triggers
    (the payload format, which decides how a response without statusCode is read), else "".
    `carrier` holds the request headers the parent is extracted from."""

    __slots__ = ("attributes", "carrier", "http_version", "kind", "links", "name", "parent")

    def __init__(
        self,
        name: str,
        kind: int,
        attributes: dict,
        links: list[Link] | None = None,
        parent: SpanContext | None = None,
        http_version: str = "",
        carrier: dict | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.attributes = attributes
        self.links = links or []
        self.parent = parent
        self.http_version = http_version
        self.carrier = carrier


def classify(
    event,
    context,
    propagators: tuple[str, ...] = propagation.DEFAULT_PROPAGATORS,
    environ: Mapping[str, str] = os.environ,
) -> Trigger:
    function_name = (
        getattr(context, "function_name", None) or environ.get("AWS_LAMBDA_FUNCTION_NAME") or ""
    )
    trigger = _classify_event(event, function_name)
    if trigger is None:
        trigger = Trigger(function_name, KIND_SERVER, {"faas.trigger": OTHER})
        trigger.carrier = _client_context_w3c(context)
    trigger.parent = propagation.extract(trigger.carrier, propagators, environ)
    attributes = {**trigger.attributes, **_context_attributes(context)}
    trigger.attributes = {k: v for k, v in attributes.items() if v is not None}
    return trigger


def response_attributes(trigger: Trigger, result) -> tuple[dict, bool]:
    """Attributes from the handler's return value, and whether it reports a server error
    (HTTP 5xx)."""
    if not trigger.http_version:
        return {}, False
    status = result.get("statusCode") if isinstance(result, dict) else None
    if status is None and trigger.http_version == "2.0":
        # Payload 2.0 reads a result without statusCode as a 200 with that body.
        status = 200
    try:
        code = int(status)
    except (TypeError, ValueError):
        return {}, False
    return {"http.response.status_code": code}, code >= 500


def _classify_event(event, function_name: str) -> Trigger | None:
    if not isinstance(event, dict):
        return None
    request_context = event.get("requestContext")
    if isinstance(request_context, dict):
        if "elb" in request_context and "httpMethod" in event:
            return _alb(event)
        if event.get("version") == "2.0" and isinstance(request_context.get("http"), dict):
            return _http_v2(event, request_context)
        if "httpMethod" in event and "resource" in event:
            return _http_v1(event, request_context)
    records = event.get("Records")
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        source = records[0].get("eventSource") or records[0].get("EventSource")
        build = _RECORD_TRIGGERS.get(source)
        if build is not None:
            return build(records, function_name)
    if "detail-type" in event and "source" in event:
        return _eventbridge(event, function_name)
    return None


# --- HTTP ----------------------------------------------------------------------------------


def _http_v1(event: dict, request_context: dict) -> Trigger:
    headers = event.get("headers") or event.get("multiValueHeaders")
    identity = request_context.get("identity") or {}
    trigger = _http(
        event.get("httpMethod"),
        event.get("resource"),
        event.get("path"),
        headers,
        client_address=identity.get("sourceIp"),
        user_agent=identity.get("userAgent"),
        domain=request_context.get("domainName"),
        protocol=request_context.get("protocol"),
    )
    trigger.http_version = "1.0"
    return trigger


def _http_v2(event: dict, request_context: dict) -> Trigger:
    http = request_context["http"]
    route = None
    domain = request_context.get("domainName") or ""
    route_key = event.get("routeKey") or request_context.get("routeKey") or ""
    if ".lambda-url." not in domain and route_key != "$default":
        # "GET /pets/{id}" or "ANY /{proxy+}": the template follows the method.
        route = route_key.partition(" ")[2] or None
    trigger = _http(
        http.get("method"),
        route,
        event.get("rawPath") or http.get("path"),
        event.get("headers"),
        client_address=http.get("sourceIp"),
        user_agent=http.get("userAgent"),
        domain=domain,
        protocol=http.get("protocol"),
    )
    trigger.http_version = "2.0"
    return trigger


def _alb(event: dict) -> Trigger:
    headers = event.get("headers") or event.get("multiValueHeaders")
    forwarded_for = propagation.lower_keys(headers).get("x-forwarded-for", "")
    trigger = _http(
        event.get("httpMethod"),
        None,
        event.get("path"),
        headers,
        client_address=forwarded_for.split(",")[0].strip() or None,
    )
    trigger.http_version = "1.0"
    return trigger


def _http(
    method,
    route,
    path,
    headers,
    client_address=None,
    user_agent=None,
    domain=None,
    protocol=None,
) -> Trigger:
    lowered = propagation.lower_keys(headers)
    method = method.upper() if isinstance(method, str) and method else "_OTHER"
    attributes = {
        "faas.trigger": HTTP,
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "url.scheme": lowered.get("x-forwarded-proto", "").split(",")[0].strip() or None,
        "server.address": lowered.get("host") or domain or None,
        "server.port": _int(lowered.get("x-forwarded-port", "").split(",")[0]),
        "user_agent.original": lowered.get("user-agent") or user_agent,
        "client.address": client_address,
    }
    if isinstance(protocol, str) and protocol.upper().startswith("HTTP/"):
        attributes["network.protocol.version"] = protocol[5:]
    name = f"{method} {route}" if route else method
    return Trigger(name, KIND_SERVER, attributes, carrier=lowered)


# --- messaging and data sources ------------------------------------------------------------


def _sqs(records: list[dict], function_name: str) -> Trigger:
    links = []
    for record in records:
        attribute = (record.get("messageAttributes") or {}).get("traceparent") or {}
        context = propagation.parse_traceparent(attribute.get("stringValue"))
        if context is None:
            aws_trace_header = (record.get("attributes") or {}).get("AWSTraceHeader")
            context = propagation.parse_xray(aws_trace_header)
        if context is not None:
            links.append(Link(context, {"messaging.message.id": record.get("messageId")}))
    return _messaging(
        "aws_sqs", records, [r.get("eventSourceARN") for r in records], links, "messageId"
    )


def _sns(records: list[dict], function_name: str) -> Trigger:
    messages = [r.get("Sns") or {} for r in records]
    links = []
    for message in messages:
        attribute = (message.get("MessageAttributes") or {}).get("traceparent") or {}
        context = propagation.parse_traceparent(attribute.get("Value"))
        if context is not None:
            links.append(Link(context, {"messaging.message.id": message.get("MessageId")}))
    arns = [m.get("TopicArn") for m in messages]
    return _messaging("aws.sns", messages, arns, links, "MessageId")


def _kinesis(records: list[dict], function_name: str) -> Trigger:
    arns = [r.get("eventSourceARN") for r in records]
    return _messaging("aws.kinesis", records, arns, [], "eventID")


def _messaging(system: str, messages, arns, links, id_key: str) -> Trigger:
    names = {_arn_resource_name(arn) for arn in arns}
    destination = names.pop() if len(names) == 1 else None
    attributes = {
        "faas.trigger": PUBSUB,
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.batch.message_count": len(messages),
        "messaging.destination.name": destination,
    }
    if len(messages) == 1:
        attributes["messaging.message.id"] = messages[0].get(id_key)
    name = f"process {destination}" if destination else "process"
    return Trigger(name, KIND_CONSUMER, attributes, links)


def _dynamodb(records: list[dict], function_name: str) -> Trigger:
    tables = {_arn_resource_name(r.get("eventSourceARN")) for r in records}
    operations = {_DYNAMODB_OPERATIONS.get(r.get("eventName"), r.get("eventName")) for r in records}
    attributes = {
        "faas.trigger": DATASOURCE,
        "faas.document.collection": tables.pop() if len(tables) == 1 else None,
        "faas.document.operation": operations.pop() if len(operations) == 1 else None,
    }
    return Trigger(function_name, KIND_CONSUMER, attributes)


def _s3(records: list[dict], function_name: str) -> Trigger:
    buckets, keys, operations, times = set(), set(), set(), set()
    for record in records:
        s3 = record.get("s3") or {}
        buckets.add((s3.get("bucket") or {}).get("name"))
        keys.add((s3.get("object") or {}).get("key"))
        event_name = record.get("eventName") or ""
        kind = event_name.partition(":")[0]
        operations.add(_S3_OPERATIONS.get(kind, event_name or None))
        times.add(record.get("eventTime"))
    key = keys.pop() if len(keys) == 1 else None
    attributes = {
        "faas.trigger": DATASOURCE,
        "faas.document.collection": buckets.pop() if len(buckets) == 1 else None,
        "faas.document.name": _s3_key(key) if isinstance(key, str) else None,
        "faas.document.operation": operations.pop() if len(operations) == 1 else None,
        "faas.document.time": times.pop() if len(times) == 1 else None,
    }
    return Trigger(function_name, KIND_CONSUMER, attributes)


def _eventbridge(event: dict, function_name: str) -> Trigger:
    detail_type, source = event.get("detail-type"), event.get("source")
    attributes = {
        "coldtail.eventbridge.source": source,
        "coldtail.eventbridge.detail_type": detail_type,
    }
    if detail_type == "Scheduled Event":
        attributes["faas.trigger"] = TIMER
        attributes["faas.time"] = event.get("time")
    else:
        attributes["faas.trigger"] = PUBSUB
        attributes["messaging.system"] = "aws.eventbridge"
        attributes["messaging.operation.type"] = "process"
        attributes["messaging.message.id"] = event.get("id")
    return Trigger(function_name, KIND_CONSUMER, attributes)


_RECORD_TRIGGERS = {
    "aws:sqs": _sqs,
    "aws:sns": _sns,
    "aws:kinesis": _kinesis,
    "aws:dynamodb": _dynamodb,
    "aws:s3": _s3,
}


# --- helpers -------------------------------------------------------------------------------


def _context_attributes(context) -> dict:
    arn = getattr(context, "invoked_function_arn", None)
    attributes = {
        "faas.invocation_id": getattr(context, "aws_request_id", None),
        "cloud.resource_id": arn,
        "aws.lambda.invoked_arn": arn,
    }
    if isinstance(arn, str):
        parts = arn.split(":")
        if len(parts) > 4 and parts[4]:
            attributes["cloud.account.id"] = parts[4]
    return attributes


def _client_context_w3c(context) -> dict | None:
    """traceparent / tracestate a direct caller put in the client context (the Python runtime
    exposes them as `context.w3c()`)."""
    w3c = getattr(context, "w3c", None)
    if callable(w3c):
        fields = w3c()
        if isinstance(fields, dict):
            return fields
    return None


def _arn_resource_name(arn) -> str | None:
    """The name in an ARN's resource part: `...:queue-name`, `...:stream/name`,
    `...:table/Name/stream/2015-06-27T00:48:05.899`."""
    if not isinstance(arn, str):
        return None
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return None
    resource = parts[5]
    if "/" in resource:
        return resource.split("/")[1] or None
    return resource or None


def _s3_key(key: str) -> str:
    """S3 notification keys are URL-encoded, with + for spaces."""
    if "%" not in key and "+" not in key:
        return key
    from urllib.parse import unquote_plus

    return unquote_plus(key)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None
