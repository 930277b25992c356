"""A Flask service under gunicorn with two sync workers (pre-fork), started as
`coldtail-instrument gunicorn -w 2 ...` in a task whose metadata endpoint is local."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from instrumentation.container.ecs import detect_ecs_resource
from tests.support.containers import item_of, server_spans, stop_under_load
from tests.support.process import free_port


def start_gunicorn(service, metadata_uri: str):
    port = free_port()
    app = service(
        ["gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "flask_app:app"],
        port,
        ECS_CONTAINER_METADATA_URI_V4=metadata_uri,
        OTEL_PYTHON_ENABLED_INSTRUMENTATIONS="flask",
    )
    app.wait_listening()
    return app


def test_each_worker_exports_the_task_resource_its_cold_start_and_errors(
    service, sidecar, metadata_endpoint
):
    endpoint = metadata_endpoint()
    app = start_gunicorn(service, endpoint.uri)
    # Two requests at a time keep both sync workers busy, so both serve some.
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(app.get, [f"/items/{n}" for n in range(12)]))
    assert statuses == [200] * 12
    assert app.get("/boom") == 500
    assert app.stop() == 0, app.log
    assert sidecar.written() == []  # held by the sidecar's batch processor until it stops

    spans = server_spans(sidecar.drain())
    assert len(spans) == 13

    expected = detect_ecs_resource(environ={"ECS_CONTAINER_METADATA_URI_V4": endpoint.uri})
    assert expected["cloud.platform"] == "aws_ecs" and "aws.ecs.task.arn" in expected
    for span in spans:
        assert span.resource.items() >= {**expected, "service.name": "checkout"}.items()

    workers: dict[str, list] = {}
    for span in spans:
        workers.setdefault(span.resource["service.instance.id"], []).append(span)
    assert len(workers) == 2
    assert len({served[0].resource["process.pid"] for served in workers.values()}) == 2
    for served in workers.values():
        first, *later = sorted(served, key=lambda span: span.start_ns)
        assert first.attributes["coldtail.cold_start"] is True
        assert first.attributes["coldtail.time_since_start_ms"] > 0
        for span in [first, *later]:
            assert span.attributes["coldtail.cold_start.source"] == "instrumentation"
        assert [span.attributes["coldtail.cold_start"] for span in later] == [False] * len(later)
        assert not any("coldtail.time_since_start_ms" in span.attributes for span in later)

    (error,) = [span for span in spans if span.attributes["http.route"] == "/boom"]
    assert error.status_code == 2  # STATUS_CODE_ERROR
    (exception,) = [attributes for name, attributes in error.events if name == "exception"]
    assert exception["exception.type"] == "RuntimeError"
    assert exception["exception.message"] == "card declined"
    assert 'raise RuntimeError("card declined")' in exception["exception.stacktrace"]


def test_sigterm_under_load_loses_no_span_of_a_responded_request(
    service, sidecar, metadata_endpoint
):
    app = start_gunicorn(service, metadata_endpoint().uri)
    responded, exit_code = stop_under_load(app)
    assert exit_code == 0, app.log
    assert len(responded) > 5
    assert set(responded) <= {item_of(span) for span in server_spans(sidecar.drain())}


def test_the_applications_own_spans_are_children_of_the_request_span(
    service, sidecar, metadata_endpoint
):
    app = start_gunicorn(service, metadata_endpoint().uri)
    assert app.get("/stock/7") == 200
    assert app.stop() == 0, app.log

    spans = sidecar.drain()
    (server,) = server_spans(spans)
    (own,) = [span for span in spans if span.name == "count stock"]
    assert server.attributes["http.route"] == "/stock/<int:item>"
    assert (own.trace_id, own.parent_span_id) == (server.trace_id, server.span_id)
    assert own.attributes == {"item": 7}
    assert own.resource == server.resource
