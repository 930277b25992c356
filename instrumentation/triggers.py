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
| DynamoDB streams | `Records[].eventSource` aws:dynamodb | datasource | SERVER | function |
| S3 | `Records[].eventSource` aws:s3 | datasource | SERVER | function |
| EventBridge | `detail-type`, `source` | pubsub | CONSUMER | function |
| EventBridge schedule | `detail-type` Scheduled Event | timer | SERVER | function |
| anything else | | other | SERVER | function |

("function" is the function name, the FaaS conventions' default span name.) The kind is
SERVER, as the Lambda and FaaS conventions ask for datasource, timer and other triggers, except
for message processing, which the messaging conventions make CONSUMER.

HTTP: `http.route` is the route template (REST `resource`, HTTP API `routeKey` without the
method), never the raw path; function URLs, ALB and the HTTP API `$default` route have no
template, so no `http.route`. The span is named `{method} {route}` as for every HTTP server
span (the Lambda page's older wording names it after the route alone). `http.request.method`
is a known method (RFC 9110's, PATCH and QUERY, or exactly those listed in
OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS), matched exactly, else case-insensitively; any other
is `_OTHER`, named `HTTP` in the span name. `http.request.method_original` holds the method as
received when it differs. `url.query` is the query as received: HTTP API and function URL
`rawQueryString`, ALB's parameters as they came (ALB does not decode them), REST API's decoded
parameters encoded again; the values of signing keys (`X-Amz-Signature`, ...) are `REDACTED`.

Messaging: `process <destination>` follows the messaging conventions and the Lambda page's
own example (its text still spells `<event source> process`); a batch whose records come from
several queues/topics/streams gets no destination name and the span name `process`.
`messaging.batch.message_count` is set for batches of two or more, `messaging.message.id` for a
single message (and on each link). Kinesis and EventBridge have no `messaging.system` value in
the conventions; `aws.kinesis` and `aws.eventbridge` follow the newer `aws.sns` spelling.

SQS trace context, as the Lambda conventions define it: each record's `AWSTraceHeader` system
attribute (the X-Ray header, which AWS services carry along, e.g. S3 -> SNS -> SQS) becomes a
link, read with the X-Ray format, and wins over anything the message's own attributes say. Only
a record without one falls back on its `traceparent` message attribute (W3C), which producers
instrumented with OpenTelemetry alone set, so that their messages are linked too. No message
parents the invocation: its parent is the Lambda runtime's span (`_X_AMZN_TRACE_ID` with the
xray-lambda propagator) or none. The per-message process spans the
conventions describe need the user's code and are not made here. SNS records bring no system
trace header to the function, so each one's `traceparent` message attribute (W3C) is a link.

Every span gets `faas.invocation_id` (the request id), `aws.lambda.invoked_arn` (the ARN as
invoked), `cloud.account.id` (its fifth `:` field) and `cloud.resource_id`: the function's ARN
with any qualifier replaced by the version running (AWS_LAMBDA_FUNCTION_VERSION), so
`...:function:orders:prod` where the alias `prod` runs version 7 gives `...:function:orders:7`,
and an unqualified `...:function:orders` gives `...:function:orders:$LATEST`: one value for
every invocation of an execution environment, whatever alias called it.

The parent comes from the request headers for HTTP triggers, from the client context's W3C
fields for a direct invoke, and from `_X_AMZN_TRACE_ID` with the xray-lambda propagator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from instrumentation import propagation
from instrumentation.attributes import FAAS_INVOCATION_ID
from instrumentation.spans import KIND_CONSUMER, KIND_SERVER, Link, SpanContext

HTTP = "http"
PUBSUB = "pubsub"
DATASOURCE = "datasource"
TIMER = "timer"
OTHER = "other"

_S3_OPERATIONS = {"ObjectCreated": "insert", "ObjectRemoved": "delete"}
# Keyed by what events carry, which may be anything (or nothing).
_DYNAMODB_OPERATIONS: dict[object, str] = {"INSERT": "insert", "MODIFY": "edit", "REMOVE": "delete"}
_KNOWN_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "QUERY", "TRACE"}
)
# Query keys whose values the HTTP conventions ask to redact: request signatures and credentials.
_SENSITIVE_QUERY_KEYS = frozenset(
    {
        "AWSAccessKeyId",
        "Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Amz-Signature",
        "X-Goog-Signature",
        "sig",
    }
)


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
    """The invocation span's description for `event`. `environ` gives the function's name and
    version where `context` lacks them, OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS, and
    `_X_AMZN_TRACE_ID` for the xray-lambda propagator."""
    function_name = (
        getattr(context, "function_name", None) or environ.get("AWS_LAMBDA_FUNCTION_NAME") or ""
    )
    trigger = _classify_event(event, function_name)
    if trigger is None:
        trigger = Trigger(function_name, KIND_SERVER, {"faas.trigger": OTHER})
        trigger.carrier = _client_context_w3c(context)
    if trigger.http_version:
        _resolve_method(trigger, _known_methods(environ))
    trigger.parent = propagation.extract(trigger.carrier, propagators, environ)
    attributes = {**trigger.attributes, **_context_attributes(context, environ)}
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
    if status is None:
        return {}, False
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
        query=_parameters_query(event, decoded=True),
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
        query=event.get("rawQueryString"),
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
        query=_parameters_query(event, decoded=False),
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
    query=None,
) -> Trigger:
    """The HTTP server span with the method as received; `_resolve_method` names it."""
    lowered = propagation.lower_keys(headers)
    host = _first(lowered.get("x-forwarded-host")) or lowered.get("host") or domain or ""
    address, port = _host_and_port(host)
    attributes = {
        "faas.trigger": HTTP,
        "http.request.method": method if isinstance(method, str) else None,
        "http.route": route,
        "url.path": path,
        "url.query": _redacted(query) if isinstance(query, str) and query else None,
        "url.scheme": _first(lowered.get("x-forwarded-proto")),
        "server.address": address,
        "server.port": port or _int(_first(lowered.get("x-forwarded-port")) or ""),
        "user_agent.original": lowered.get("user-agent") or user_agent,
        "client.address": client_address,
    }
    if isinstance(protocol, str) and protocol.upper().startswith("HTTP/"):
        attributes["network.protocol.version"] = protocol[5:]
    return Trigger("", KIND_SERVER, attributes, carrier=lowered)


def _resolve_method(trigger: Trigger, known: frozenset[str]) -> None:
    """Sets http.request.method to a known method or `_OTHER` (keeping the received one in
    http.request.method_original when they differ) and names the span `{method} {route}`."""
    attributes = trigger.attributes
    received = attributes.get("http.request.method") or ""
    if received in known:
        method = received
    elif received.upper() in known:
        method = received.upper()
    else:
        method = "_OTHER"
    attributes["http.request.method"] = method
    if received and received != method:
        attributes["http.request.method_original"] = received
    name = "HTTP" if method == "_OTHER" else method
    route = attributes.get("http.route")
    trigger.name = f"{name} {route}" if route else name


def _known_methods(environ: Mapping[str, str]) -> frozenset[str]:
    """OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS (case-sensitive, replacing the defaults) when
    set."""
    listed = environ.get("OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS", "")
    methods = frozenset(m.strip() for m in listed.split(",") if m.strip())
    return methods or _KNOWN_METHODS


def _parameters_query(event: dict, decoded: bool) -> str | None:
    """A query string from the event's (multi-value) query parameters, percent-encoding them
    again when the event holds them `decoded`."""
    parameters = event.get("multiValueQueryStringParameters") or event.get("queryStringParameters")
    if not isinstance(parameters, dict) or not parameters:
        return None
    quote: Callable[[str], str] = str
    if decoded:
        from urllib.parse import quote_plus

        quote = quote_plus
    pairs = [
        f"{quote(str(key))}={quote(str(value))}"
        for key, values in parameters.items()
        for value in (values if isinstance(values, list) else [values])
    ]
    return "&".join(pairs) or None


def _redacted(query: str) -> str:
    """`query` with the value of each sensitive key (matched case-sensitively) `REDACTED`."""
    items = query.split("&")
    for i, item in enumerate(items):
        key, sep, _ = item.partition("=")
        if sep and key in _SENSITIVE_QUERY_KEYS:
            items[i] = f"{key}=REDACTED"
    return "&".join(items)


def _host_and_port(host: str) -> tuple[str | None, int | None]:
    """`example.com`, `example.com:8443`, `[2001:db8::1]:8443` split into address and port."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        return address or None, _int(rest[1:]) if rest.startswith(":") else None
    if host.count(":") == 1:
        address, _, port = host.partition(":")
        return address or None, _int(port)
    return host or None, None


def _first(header: str | None) -> str | None:
    """The first (client-side) entry of a proxy header such as X-Forwarded-Proto."""
    return (header or "").split(",")[0].strip() or None


# --- messaging and data sources ------------------------------------------------------------


def _sqs(records: list[dict], function_name: str) -> Trigger:
    links = []
    for record in records:
        context = propagation.parse_xray((record.get("attributes") or {}).get("AWSTraceHeader"))
        if context is None:
            attribute = (record.get("messageAttributes") or {}).get("traceparent") or {}
            context = propagation.parse_traceparent(attribute.get("stringValue"))
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
    attributes: dict[str, object] = {
        "faas.trigger": PUBSUB,
        "messaging.system": system,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": destination,
    }
    # The conventions keep the batch size off spans about a single message.
    if len(messages) == 1:
        attributes["messaging.message.id"] = messages[0].get(id_key)
    else:
        attributes["messaging.batch.message_count"] = len(messages)
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
    return Trigger(function_name, KIND_SERVER, attributes)


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
    return Trigger(function_name, KIND_SERVER, attributes)


def _eventbridge(event: dict, function_name: str) -> Trigger:
    detail_type, source = event.get("detail-type"), event.get("source")
    attributes = {
        "coldtail.eventbridge.source": source,
        "coldtail.eventbridge.detail_type": detail_type,
    }
    if detail_type == "Scheduled Event":
        attributes["faas.trigger"] = TIMER
        attributes["faas.time"] = event.get("time")
        return Trigger(function_name, KIND_SERVER, attributes)
    attributes["faas.trigger"] = PUBSUB
    attributes["messaging.system"] = "aws.eventbridge"
    attributes["messaging.operation.type"] = "process"
    attributes["messaging.operation.name"] = "process"
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


def _context_attributes(context, environ: Mapping[str, str]) -> dict:
    arn = getattr(context, "invoked_function_arn", None)
    version = getattr(context, "function_version", None) or environ.get(
        "AWS_LAMBDA_FUNCTION_VERSION"
    )
    attributes = {
        FAAS_INVOCATION_ID: getattr(context, "aws_request_id", None),
        "cloud.resource_id": _function_arn(arn, version),
        "aws.lambda.invoked_arn": arn,
    }
    if isinstance(arn, str):
        parts = arn.split(":")
        if len(parts) > 4 and parts[4]:
            attributes["cloud.account.id"] = parts[4]
    return attributes


def _function_arn(invoked_arn, version: str | None) -> str | None:
    """The ARN of the function version running: `invoked_arn`
    (`arn:<partition>:lambda:<region>:<account>:function:<name>[:<alias or version>]`) with its
    qualifier replaced by `version`, or left off when the version is unknown. None when
    `invoked_arn` is not a Lambda function ARN."""
    if not isinstance(invoked_arn, str):
        return None
    parts = invoked_arn.split(":")
    if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
        return None
    base = ":".join(parts[:7])
    return f"{base}:{version}" if version else base


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
