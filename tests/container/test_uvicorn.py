"""A FastAPI service under uvicorn, started as `coldtail-instrument uvicorn ...`: one process, and
a supervisor with two worker processes it spawns (new interpreters, not forks).

uvicorn handles SIGTERM itself, then restores the previous handler (coldtail's) and raises the
signal again: the spans are flushed there, and the process still dies of SIGTERM as it does
uninstrumented."""

from __future__ import annotations

import signal

import pytest

from tests.support.containers import item_of, server_spans, stop_under_load
from tests.support.process import free_port


@pytest.mark.parametrize("workers", [1, 2])
def test_cold_first_requests_error_span_and_no_loss_on_sigterm_under_load(
    service, sidecar, metadata_endpoint, workers
):
    port = free_port()
    app = service(
        ["uvicorn", "--workers", str(workers), "--port", str(port), "fastapi_app:app"],
        port,
        ECS_CONTAINER_METADATA_URI_V4=metadata_endpoint().uri,
        OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="fastapi",
    )
    app.wait_listening()
    assert app.get("/boom") == 500
    responded, exit_code = stop_under_load(app)
    # As uninstrumented: the supervisor of spawned workers exits 0 once they are done.
    assert exit_code == (-signal.SIGTERM if workers == 1 else 0), app.log

    spans = server_spans(sidecar.drain())
    assert len(responded) > 5
    assert {item_of(span) for span in spans} >= set(responded)
    assert all(span.resource["aws.ecs.task.family"] == "checkout" for span in spans)

    by_worker: dict[str, list] = {}
    for span in spans:
        by_worker.setdefault(span.resource["service.instance.id"], []).append(span)
    # The workers share the listening socket: which of them accepts is the kernel's choice.
    assert 0 < len(by_worker) <= workers
    for served in by_worker.values():
        first, *later = sorted(served, key=lambda span: span.start_ns)
        assert first.attributes["coldtail.cold_start"] is True
        assert first.attributes["coldtail.cold_start.source"] == "instrumentation"
        assert [span.attributes["coldtail.cold_start"] for span in later] == [False] * len(later)

    (error,) = [span for span in spans if span.attributes["http.route"] == "/boom"]
    assert error.status_code == 2  # STATUS_CODE_ERROR
    (exception,) = [attributes for name, attributes in error.events if name == "exception"]
    assert exception["exception.message"] == "card declined"
    assert 'raise RuntimeError("card declined")' in exception["exception.stacktrace"]
