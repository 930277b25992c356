"""The Lambda resource and invocation span attributes against the OpenTelemetry semantic
conventions (FaaS, AWS Lambda, cloud, aws.log.*, HTTP server, messaging)."""

from __future__ import annotations

import time
import uuid

import pytest
from awslambdaric.lambda_context import LambdaContext
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

from instrumentation import handler as handler_module
from instrumentation import triggers
from instrumentation.otlp import encode_export_request
from instrumentation.resource import lambda_resource
from instrumentation.spans import KIND_CONSUMER, KIND_SERVER, Span
from tests.support.lambda_functions import FUNCTIONS, fresh_import, load_event, make_context

ARN = "arn:aws:lambda:us-east-1:123456789012:function:my-function"
XRAY_TRACE = bytes.fromhex("5759e988bd862e3fe1be46a994272793")
XRAY_SPAN = bytes.fromhex("53995c3f42cd8ad8")
LAMBDA_TRACE_HEADER = "Root=1-6a1b2c3d-0123456789abcdef01234567;Parent=89abcdef01234567;Sampled=1"


def context_for(invoked_arn: str, monkeypatch, version: str | None) -> LambdaContext:
    """The runtime's own context, which reads the version from the environment."""
    if version is None:
        monkeypatch.delenv("AWS_LAMBDA_FUNCTION_VERSION", raising=False)
    else:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", version)
    deadline_ms = int(time.time() * 1000) + 30_000
    return LambdaContext(str(uuid.uuid4()), None, None, deadline_ms, invoked_arn)


def classify(event, context=None, propagators=("tracecontext", "baggage"), **environ):
    return triggers.classify(event, context or make_context(), propagators, environ)


# --- resource ------------------------------------------------------------------------------


def test_resource_names_the_log_group_and_stream_as_string_arrays():
    stream = "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef"
    resource = lambda_resource(
        {
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        }
    )
    assert resource["aws.log.group.names"] == ["/aws/lambda/fn"]
    assert resource["aws.log.stream.names"] == [stream]
    assert resource["faas.instance"] == stream
    empty = lambda_resource({"AWS_LAMBDA_FUNCTION_NAME": "fn"})
    assert "aws.log.group.names" not in empty and "aws.log.stream.names" not in empty


def test_log_names_are_encoded_as_otlp_array_values():
    resource = lambda_resource(
        {"AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn", "AWS_LAMBDA_LOG_STREAM_NAME": "s"}
    )
    span = Span("x", KIND_SERVER)
    span.end()
    request = ExportTraceServiceRequest.FromString(encode_export_request(resource, [span]))
    values = {kv.key: kv.value for kv in request.resource_spans[0].resource.attributes}
    group = values["aws.log.group.names"]
    assert group.WhichOneof("value") == "array_value"
    assert [v.string_value for v in group.array_value.values] == ["/aws/lambda/fn"]
    assert [v.string_value for v in values["aws.log.stream.names"].array_value.values] == ["s"]


# --- cloud.resource_id ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("invoked", "version", "resource_id"),
    [
        (ARN, "$LATEST", f"{ARN}:$LATEST"),
        (f"{ARN}:prod", "7", f"{ARN}:7"),
        (f"{ARN}:7", "7", f"{ARN}:7"),
        (f"{ARN}:$LATEST", "$LATEST", f"{ARN}:$LATEST"),
        (f"{ARN}:prod", None, ARN),
        (
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:f:live",
            "3",
            "arn:aws-cn:lambda:cn-north-1:123456789012:function:f:3",
        ),
    ],
    ids=["unqualified", "alias", "version", "latest", "version-unknown", "china"],
)
def test_resource_id_is_the_arn_of_the_running_version(monkeypatch, invoked, version, resource_id):
    trigger = classify({}, context_for(invoked, monkeypatch, version))
    assert trigger.attributes["cloud.resource_id"] == resource_id
    assert trigger.attributes["aws.lambda.invoked_arn"] == invoked
    assert trigger.attributes["cloud.account.id"] == "123456789012"


def test_version_comes_from_the_environment_without_one_on_the_context():
    class Context:
        invoked_function_arn = f"{ARN}:prod"
        aws_request_id = "req-1"

    trigger = classify({}, Context(), AWS_LAMBDA_FUNCTION_VERSION="12")
    assert trigger.attributes["cloud.resource_id"] == f"{ARN}:12"
    assert trigger.attributes["faas.invocation_id"] == "req-1"


@pytest.mark.parametrize(
    "invoked",
    ["arn:aws:sqs:us-east-1:123456789012:queue", "arn:aws:lambda:us-east-1:1:layer:x:1", "fn"],
)
def test_no_resource_id_from_an_arn_that_is_not_a_function(monkeypatch, invoked):
    trigger = classify({}, context_for(invoked, monkeypatch, "1"))
    assert "cloud.resource_id" not in trigger.attributes
    assert trigger.attributes["aws.lambda.invoked_arn"] == invoked


# --- SQS trace context ---------------------------------------------------------------------


def test_sqs_links_come_from_aws_trace_header_else_a_traceparent_attribute():
    trigger = classify(load_event("sqs"))
    # Of three records, one has an AWSTraceHeader, one only a traceparent message attribute,
    # one neither.
    xray, w3c = trigger.links
    assert (xray.context.trace_id, xray.context.span_id) == (XRAY_TRACE, XRAY_SPAN)
    assert xray.attributes == {"messaging.message.id": "059f36b4-87a3-44ab-83d2-661975830a7d"}
    assert w3c.context.trace_id == bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736")


def test_sqs_aws_trace_header_wins_over_a_traceparent_message_attribute():
    trigger = classify(load_event("sqs-single"))
    [link] = trigger.links
    assert link.context.trace_id == bytes.fromhex("65a0f1c24f5e6d7c8b9a0b1c2d3e4f50")
    assert link.context.span_id == bytes.fromhex("1a2b3c4d5e6f7a8b")
    assert not link.context.sampled


@pytest.mark.parametrize("propagators", [("tracecontext", "baggage"), ("tracecontext", "xray")])
def test_sqs_messages_never_parent_the_invocation(propagators):
    trigger = classify(
        load_event("sqs-single"), propagators=propagators, _X_AMZN_TRACE_ID=LAMBDA_TRACE_HEADER
    )
    assert trigger.parent is None


def test_sqs_invocation_is_parented_by_the_lambda_runtime_span_with_xray_lambda():
    trigger = classify(
        load_event("sqs-single"),
        propagators=("tracecontext", "baggage", "xray-lambda"),
        _X_AMZN_TRACE_ID=LAMBDA_TRACE_HEADER,
    )
    assert trigger.parent.trace_id == bytes.fromhex("6a1b2c3d0123456789abcdef01234567")
    assert trigger.parent.span_id == bytes.fromhex("89abcdef01234567")
    assert len(trigger.links) == 1


def test_sns_links_still_come_from_the_traceparent_message_attribute():
    [link] = classify(load_event("sns")).links
    assert link.context.span_id == bytes.fromhex("b7ad6b7169203331")


# --- messaging -----------------------------------------------------------------------------


def test_batch_size_only_on_batches_and_message_id_only_on_single_messages():
    batch = classify(load_event("sqs")).attributes
    single = classify(load_event("sqs-single")).attributes
    assert batch["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in batch
    assert "messaging.batch.message_count" not in single
    assert single["messaging.message.id"] == "19dd0b57-b21e-4ac1-bd88-01bbb068cb78"
    sns = classify(load_event("sns")).attributes
    assert "messaging.batch.message_count" not in sns
    assert classify(load_event("kinesis")).attributes["messaging.batch.message_count"] == 2


def test_sqs_event_span_follows_the_lambda_sqs_conventions():
    trigger = classify(load_event("sqs-single"))
    assert (trigger.name, trigger.kind) == ("process orders", KIND_CONSUMER)
    attributes = trigger.attributes
    assert attributes["faas.trigger"] == "pubsub"
    assert attributes["messaging.system"] == "aws_sqs"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.operation.name"] == "process"
    assert attributes["messaging.destination.name"] == "orders"


def test_eventbridge_event_is_a_process_span_with_its_operation_name():
    trigger = classify(load_event("eventbridge"))
    assert trigger.kind == KIND_CONSUMER
    assert trigger.attributes["messaging.operation.type"] == "process"
    assert trigger.attributes["messaging.operation.name"] == "process"


@pytest.mark.parametrize(
    ("fixture", "faas_trigger"),
    [("dynamodb", "datasource"), ("s3", "datasource"), ("eventbridge-scheduled", "timer")],
)
def test_datasource_and_timer_invocations_are_server_spans(fixture, faas_trigger):
    trigger = classify(load_event(fixture))
    assert (trigger.kind, trigger.attributes["faas.trigger"]) == (KIND_SERVER, faas_trigger)
    assert "messaging.system" not in trigger.attributes


# --- HTTP ----------------------------------------------------------------------------------


def test_lowercase_method_is_canonical_with_the_original_kept():
    event = load_event("apigw-rest")
    event["httpMethod"] = "get"
    trigger = classify(event)
    assert trigger.name == "GET /pets/{petId}"
    assert trigger.attributes["http.request.method"] == "GET"
    assert trigger.attributes["http.request.method_original"] == "get"


def test_known_method_has_no_original():
    attributes = classify(load_event("apigw-rest")).attributes
    assert attributes["http.request.method"] == "GET"
    assert "http.request.method_original" not in attributes


def test_unknown_method_is_other_and_named_http():
    event = load_event("apigw-http")
    event["requestContext"]["http"]["method"] = "PROPFIND"
    trigger = classify(event)
    assert trigger.name == "HTTP /orders/{orderId}/items"
    assert trigger.attributes["http.request.method"] == "_OTHER"
    assert trigger.attributes["http.request.method_original"] == "PROPFIND"


def test_missing_method_is_other_without_an_original():
    event = load_event("alb")
    event["httpMethod"] = None
    trigger = classify(event)
    assert trigger.name == "HTTP"
    assert trigger.attributes["http.request.method"] == "_OTHER"
    assert "http.request.method_original" not in trigger.attributes


def test_known_methods_override_replaces_the_defaults():
    event = load_event("apigw-http")
    event["requestContext"]["http"]["method"] = "PROPFIND"
    known = {"OTEL_INSTRUMENTATION_HTTP_KNOWN_METHODS": "GET, PROPFIND"}
    assert classify(event, **known).attributes["http.request.method"] == "PROPFIND"
    # POST is no longer known once the list is overridden.
    post = classify(load_event("apigw-http"), **known)
    assert (post.name, post.attributes["http.request.method"]) == (
        "HTTP /orders/{orderId}/items",
        "_OTHER",
    )


@pytest.mark.parametrize(
    ("fixture", "query"),
    [
        ("apigw-http", "expand=true"),
        ("function-url", "parameter1=value1&parameter1=value2&parameter2=value"),
        ("alb", "query=1234ABCD"),
        ("apigw-rest", "verbose=true"),
    ],
)
def test_url_query_as_received(fixture, query):
    assert classify(load_event(fixture)).attributes["url.query"] == query


def test_rest_api_query_is_encoded_again_from_its_decoded_parameters():
    event = load_event("apigw-rest")
    event["multiValueQueryStringParameters"] = {"q": ["a b&c", "é"], "page": ["2"]}
    assert classify(event).attributes["url.query"] == "q=a+b%26c&q=%C3%A9&page=2"


def test_alb_query_keeps_its_undecoded_values():
    event = load_event("alb")
    event["queryStringParameters"] = {"q": "a%20b", "empty": ""}
    assert classify(event).attributes["url.query"] == "q=a%20b&empty="


def test_signing_keys_in_the_query_are_redacted():
    event = load_event("apigw-http")
    event["rawQueryString"] = "a=1&X-Amz-Signature=abc&sig=x&Sig=y&AWSAccessKeyId=k&Signature"
    assert (
        classify(event).attributes["url.query"]
        == "a=1&X-Amz-Signature=REDACTED&sig=REDACTED&Sig=y&AWSAccessKeyId=REDACTED&Signature"
    )


def test_no_url_query_without_one():
    event = load_event("apigw-http")
    event["rawQueryString"] = ""
    assert "url.query" not in classify(event).attributes
    rest = load_event("apigw-rest")
    rest["multiValueQueryStringParameters"] = rest["queryStringParameters"] = None
    assert "url.query" not in classify(rest).attributes


@pytest.mark.parametrize(
    ("headers", "address", "port"),
    [
        ({"Host": "api.example.com:8443"}, "api.example.com", 8443),
        ({"Host": "[2001:db8::1]:8443"}, "2001:db8::1", 8443),
        ({"Host": "[2001:db8::1]", "X-Forwarded-Port": "443"}, "2001:db8::1", 443),
        (
            {
                "Host": "internal",
                "X-Forwarded-Host": "shop.example.com, proxy",
                "X-Forwarded-Port": "443",
            },
            "shop.example.com",
            443,
        ),
    ],
)
def test_server_address_and_port_from_the_host(headers, address, port):
    event = load_event("apigw-http")
    event["headers"] = headers
    attributes = classify(event).attributes
    assert (attributes["server.address"], attributes["server.port"]) == (address, port)


# --- through the wrapped handler to the collector ------------------------------------------


def test_exported_resource_and_span_reach_the_collector(lambda_env, collector):
    fresh_import("app", "slow_dependency", "slower_dependency")
    handler = handler_module.load(f"{FUNCTIONS}.app.handler")

    handler(load_event("s3"), make_context())

    [span] = [s for s in collector.spans() if s.kind != ProtoSpan.SPAN_KIND_INTERNAL]
    assert span.resource["aws.log.group.names"] == ["/aws/lambda/my-function"]
    assert span.resource["aws.log.stream.names"] == [lambda_env["AWS_LAMBDA_LOG_STREAM_NAME"]]
    assert span.kind == ProtoSpan.SPAN_KIND_SERVER
    # The context's ARN ends in the alias `prod`; the environment runs $LATEST.
    assert span.attributes["cloud.resource_id"] == f"{ARN}:$LATEST"
    assert span.attributes["aws.lambda.invoked_arn"] == f"{ARN}:prod"
