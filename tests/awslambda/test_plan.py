"""The plan: which receiver addresses the front door serves, read from the raw config, and
what Lambda would refuse."""

import pytest

from collector.awslambda.extension.plan import (
    OTLP_DEFAULT_PATHS,
    OTLP_HTTP_DEFAULT_ENDPOINT,
    PRIVATE_ENDPOINT,
    TELEMETRY_BUFFERING_LIMITS,
    TELEMETRY_DEFAULT_BUFFERING,
    TELEMETRY_DEFAULT_ENDPOINT,
    TELEMETRY_DEFAULT_TYPES,
    plan,
)
from collector.receivers import lambda_telemetry, otlp

PATHS = ("/v1/traces", "/v1/metrics", "/v1/logs")


def telemetry_receiver(config) -> dict:
    return {
        "receivers": {"lambda_telemetry": config},
        "service": {"pipelines": {"logs": {"receivers": ["lambda_telemetry"]}}},
    }


def test_plan_moves_the_used_receivers_behind_the_front_door():
    raw = {
        "receivers": {
            "otlp": {"protocols": {"http": None, "grpc": {"endpoint": "127.0.0.1:4317"}}},
            "otlp/unused": {"protocols": {"http": {"endpoint": "127.0.0.1:9999"}}},
            "lambda_telemetry": {"endpoint": "sandbox.localdomain:4325", "types": ["platform"]},
            "lambda_telemetry/b": {"buffering": {"timeout_ms": 100}},
        },
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp", "lambda_telemetry"]},
                "logs": {"receivers": ["lambda_telemetry/b"]},
            }
        },
    }
    listeners, rewritten, errors = plan(raw)
    assert errors == []
    by_name = {listener.name: listener for listener in listeners}
    assert sorted(by_name) == ["lambda_telemetry", "lambda_telemetry/b", "otlp"]
    assert by_name["otlp"].endpoint == OTLP_HTTP_DEFAULT_ENDPOINT
    assert by_name["otlp"].paths == PATHS
    assert by_name["lambda_telemetry"].endpoint == "sandbox.localdomain:4325"
    assert by_name["lambda_telemetry"].subscription == {
        "schemaVersion": "2022-12-13",
        "types": ["platform"],
        "buffering": {"maxItems": 1000, "maxBytes": 262144, "timeoutMs": 25},
    }
    assert by_name["lambda_telemetry/b"].endpoint == TELEMETRY_DEFAULT_ENDPOINT
    assert by_name["lambda_telemetry/b"].subscription["buffering"]["timeoutMs"] == 100
    receivers = rewritten["receivers"]
    assert receivers["otlp"]["protocols"] == {
        "http": {"endpoint": PRIVATE_ENDPOINT},
        "grpc": {"endpoint": "127.0.0.1:4317"},
    }
    assert receivers["otlp/unused"] == raw["receivers"]["otlp/unused"]
    assert receivers["lambda_telemetry"]["endpoint"] == PRIVATE_ENDPOINT
    assert receivers["lambda_telemetry"]["types"] == ["platform"]
    assert receivers["lambda_telemetry/b"]["endpoint"] == PRIVATE_ENDPOINT
    # The input is left as it was.
    assert raw["receivers"]["otlp"]["protocols"]["http"] is None


def test_the_destination_is_always_sandbox_localdomain():
    for endpoint in ("sandbox.localdomain:4325", "0.0.0.0:4325", ":4325", "[::]:4325"):
        (listener,), _, errors = plan(telemetry_receiver({"endpoint": endpoint}))
        assert errors == []
        listener.bound = f"{endpoint.rpartition(':')[0]}:4325"
        assert listener.destination() == {
            "protocol": "HTTP",
            "URI": "http://sandbox.localdomain:4325",
        }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"endpoint": "127.0.0.1:4325"},
            "receivers::lambda_telemetry::endpoint: '127.0.0.1:4325': Lambda delivers Telemetry "
            "API events only to http://sandbox.localdomain:PORT",
        ),
        ({"endpoint": "localhost:4325"}, "a listener on 'localhost' does not receive"),
        ({"types": ["platform", "metrics"]}, "receivers::lambda_telemetry::types"),
        ({"buffering": {"timeout_ms": 10}}, "buffering::timeout_ms: 10: Lambda accepts 25 to"),
        ({"buffering": {"max_items": 20000}}, "buffering::max_items: 20000"),
        ({"buffering": {"max_bytes": "1MiB"}}, "buffering::max_bytes: '1MiB'"),
    ],
)
def test_what_lambda_would_refuse_is_a_plan_error_naming_the_key(config, message):
    listeners, rewritten, errors = plan(telemetry_receiver(config))
    assert listeners == []
    [error] = errors
    assert message in str(error)
    # Left as configured: nothing listens there on its behalf.
    assert rewritten["receivers"]["lambda_telemetry"] == config


def test_plan_defaults_are_the_receivers_defaults(monkeypatch):
    """The plan reads the raw config before the receivers' modules are imported: its copies of
    their defaults, in Lambda, must match."""
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
    telemetry = lambda_telemetry.Config()
    assert telemetry.endpoint == TELEMETRY_DEFAULT_ENDPOINT
    assert tuple(telemetry.types) == TELEMETRY_DEFAULT_TYPES
    assert telemetry.buffering.model_dump() == TELEMETRY_DEFAULT_BUFFERING
    fields = lambda_telemetry.BufferingConfig.model_fields
    for key, (least, most) in TELEMETRY_BUFFERING_LIMITS.items():
        bounds = {type(m).__name__: m for m in fields[key].metadata}
        assert (bounds["Ge"].ge, bounds["Le"].le) == (least, most)
    http = otlp.HttpConfig()
    assert http.endpoint == OTLP_HTTP_DEFAULT_ENDPOINT
    assert {key: getattr(http, key) for key in OTLP_DEFAULT_PATHS} == OTLP_DEFAULT_PATHS
