"""Fixtures for driving the instrumentation in-process: the export peer, and the environment the
Lambda runtime gives a function (tests/support/lambda_functions.py)."""

from __future__ import annotations

import os

import pytest

from tests.support.lambda_functions import FUNCTION_NAME, Receiver


@pytest.fixture(scope="session")
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def collector(receiver):
    receiver.reset()
    return receiver


@pytest.fixture
def lambda_env(monkeypatch, collector):
    """The environment the Lambda runtime gives a function, exporting to `collector`."""
    for name in [n for n in os.environ if n.startswith(("OTEL_", "COLDTAIL_"))]:
        monkeypatch.delenv(name)
    for name in ("_X_AMZN_TRACE_ID", "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_INITIALIZATION_TYPE"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": FUNCTION_NAME,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{FUNCTION_NAME}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "AWS_REGION": "us-east-1",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
