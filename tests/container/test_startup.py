"""The service starts and serves whatever the ECS task metadata endpoint does: missing,
answering 500, or never answering."""

from __future__ import annotations

import pytest

from tests.support.containers import server_spans
from tests.support.process import free_port


@pytest.mark.parametrize("failure", [None, "error", "hang"])
def test_the_service_starts_and_serves_without_a_working_metadata_endpoint(
    service, sidecar, metadata_endpoint, failure
):
    env = {"OTEL_PYTHON_ENABLED_INSTRUMENTATIONS": "fastapi"}
    if failure:
        env["ECS_CONTAINER_METADATA_URI_V4"] = metadata_endpoint(failure).uri
    port = free_port()
    app = service(["uvicorn", "--port", str(port), "fastapi_app:app"], port, **env)
    app.wait_listening()
    assert app.get("/items/1") == 200
    app.stop()

    (span,) = server_spans(sidecar.drain())
    assert span.attributes["coldtail.cold_start"] is True
    assert span.resource["service.name"] == "checkout"
    if failure:
        # Known without the endpoint: the variable is only set in ECS.
        assert span.resource["cloud.platform"] == "aws_ecs"
        assert "aws.ecs.task.arn" not in span.resource
        assert "ECS task metadata endpoint" in app.log
    else:
        assert "cloud.platform" not in span.resource
