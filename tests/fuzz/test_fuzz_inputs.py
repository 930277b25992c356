"""Fuzzing what comes from outside: OTLP/HTTP bodies (protobuf and JSON, structured and raw),
Lambda Telemetry API deliveries, and collector configs. Whatever arrives, the receivers answer
with a status that describes the request (never 500) and keep serving, and a config is either
valid or a ConfigError naming key paths."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from collector.core.config import ConfigError, validate
from collector.core.signals import Signal
from collector.receivers.lambda_telemetry import Config as TelemetryConfig
from collector.receivers.lambda_telemetry import LambdaTelemetryReceiver
from collector.receivers.otlp import Config as OtlpConfig
from collector.receivers.otlp import OtlpReceiver
from collector.registry import registry
from tests.support.builders import make_traces
from tests.support.components import StaticHost, make_settings
from tests.support.sinks import SinkConsumer

pytestmark = pytest.mark.slow

# JSON values, with the text hypothesis likes to break parsers with, lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()))
scalars = st.none() | st.booleans() | st.integers() | st.floats() | any_text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
# OTLP/JSON-shaped trees: the real keys, any values beneath.
OTLP_KEYS = [
    "resourceSpans", "resource", "attributes", "key", "value", "stringValue", "intValue",
    "arrayValue", "kvlistValue", "values", "scopeSpans", "scope", "spans", "traceId", "spanId",
    "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano", "status", "events",
    "links", "code", "message",
]  # fmt: skip
otlp_like = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(OTLP_KEYS) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


class Served:
    """A receiver on its own event loop in a thread, for synchronous hypothesis tests."""

    def __init__(self, make) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.receiver = self.run(make())

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def post(self, url: str, body: bytes, content_type: str) -> int:
        request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code

    def close(self) -> None:
        self.run(self.receiver.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def otlp() -> Iterator[Served]:
    async def make():
        config = OtlpConfig.model_validate({"protocols": {"http": {"endpoint": "127.0.0.1:0"}}})
        sinks = {signal: SinkConsumer() for signal in Signal}
        receiver = OtlpReceiver(make_settings("receiver", "otlp"), config, sinks)
        await receiver.start(StaticHost())
        return receiver

    served = Served(make)
    yield served
    served.close()


def traces_url(served: Served) -> str:
    return f"http://{served.receiver.http_endpoint}/v1/traces"


def still_serving(served: Served) -> None:
    body = make_traces(1).SerializeToString()
    assert served.post(traces_url(served), body, "application/x-protobuf") == 200


@given(body=st.binary(max_size=2048))
@example(body=make_traces(3).SerializeToString()[:-5])
def test_any_protobuf_body_is_answered_200_or_400(otlp, body):
    assert otlp.post(traces_url(otlp), body, "application/x-protobuf") in (200, 400)


@given(tree=otlp_like)
@example(tree={"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "abcd"}]}]}]})
@example(tree={"resourceSpans": [{"resource": {"attributes": [{"key": "\ud800"}]}}]})
def test_any_otlp_json_tree_is_answered_200_or_400(otlp, tree):
    body = json.dumps(tree).encode()
    assert otlp.post(traces_url(otlp), body, "application/json") in (200, 400)


@given(body=st.binary(max_size=512))
def test_any_json_bytes_are_answered_200_or_400_and_the_receiver_keeps_serving(otlp, body):
    assert otlp.post(traces_url(otlp), body, "application/json") in (200, 400)
    still_serving(otlp)


@pytest.fixture(scope="module")
def telemetry() -> Iterator[Served]:
    async def make():
        config = TelemetryConfig.model_validate({"endpoint": "127.0.0.1:0"})
        sinks = {signal: SinkConsumer() for signal in Signal}
        receiver = LambdaTelemetryReceiver(
            make_settings("receiver", "lambda_telemetry"), config, sinks
        )
        await receiver.start(StaticHost())
        return receiver

    served = Served(make)
    yield served
    served.close()


EVENT_TYPES = [
    "platform.initStart", "platform.initReport", "platform.restoreReport", "platform.start",
    "platform.runtimeDone", "platform.report", "platform.logsDropped", "function", "extension",
]  # fmt: skip
events = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES) | st.text(max_size=5)},
    optional={"time": st.text(max_size=30) | json_values, "record": json_values},
)


@given(delivery=st.lists(events | json_values, max_size=6))
@example(delivery=[{"type": "function", "record": 2**63}])  # found: an int beyond int64 was a 500
@example(delivery=[{"type": "extension", "record": {"\ud800": 10**400}}])
def test_any_telemetry_api_delivery_is_answered_200_or_400(telemetry, delivery):
    url = f"http://{telemetry.receiver.endpoint}/"
    body = json.dumps(delivery).encode()
    assert telemetry.post(url, body, "application/json") in (200, 400)


SECTIONS = ["receivers", "processors", "exporters", "connectors", "extensions", "service"]
configs = st.dictionaries(
    st.sampled_from(SECTIONS) | st.text(max_size=4),
    st.dictionaries(
        st.sampled_from(["otlp", "batch", "debug", "filter", "pipelines", "otlp/x", "file"])
        | st.text(max_size=6),
        json_values,
        max_size=3,
    )
    | json_values,
    max_size=5,
)


@given(config=configs)
def test_any_config_is_valid_or_a_config_error(config):
    try:
        validate(config, registry())
    except ConfigError as e:
        assert e.errors and all("::" in str(error) or str(error) for error in e.errors)
