"""A test function that uses the OpenTelemetry API and sets up no SDK, as a user of a zero-code
layer would. The event steers it: {"raise": message} fails inside a span, {"call": url} GETs
url with requests, {"background": seconds} leaves a span to end on another thread after the
invocation; anything else makes two nested spans and returns the traceparent it would send."""

import json
import threading
import time

from opentelemetry import propagate, trace

tracer = trace.get_tracer("orders", "1.0")


class HandlerError(Exception):
    pass


def handler(event, context):
    trace.get_current_span().set_attribute("order.id", "o-1")
    if "raise" in event:
        with tracer.start_as_current_span("charge"):
            raise HandlerError(event["raise"])
    if "call" in event:
        import requests

        response = requests.get(event["call"], timeout=5)
        return {"statusCode": response.status_code, "body": response.text}
    if "background" in event:
        span = tracer.start_span("background")
        threading.Thread(target=_end_later, args=(span, event["background"])).start()
        return {"statusCode": 202, "body": ""}
    return {"statusCode": 200, "body": json.dumps(charge())}


@tracer.start_as_current_span("charge", kind=trace.SpanKind.CLIENT, attributes={"amount": 42})
def charge() -> dict:
    trace.get_current_span().add_event("authorised", {"card": "visa"})
    with tracer.start_as_current_span("ledger"):
        carrier = {}
        propagate.inject(carrier)
    return carrier


def _end_later(span, seconds: float) -> None:
    time.sleep(seconds)
    span.end()
