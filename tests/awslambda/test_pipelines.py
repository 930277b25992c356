"""The pipelines as the extension runs them: loaded from the raw config off the init path, fed
by the forwarder, and counting what the extension lost."""

import yaml
from prometheus_client import generate_latest

from collector.awslambda.extension.forwarder import Forwarder
from collector.awslambda.extension.front_door import OTLP, FrontDoor
from collector.awslambda.extension.pipelines import Pipelines
from collector.awslambda.extension.plan import plan

CONFIG = """
receivers:
  otlp:
    protocols:
      http:
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
"""


def test_pipelines_start_feed_from_the_front_door_and_count_losses():
    listeners, raw, errors = plan(yaml.safe_load(CONFIG))
    assert errors == []
    front_door = FrontDoor()
    (listener,) = listeners
    listener.bound = front_door.listen(listener.name, OTLP, "127.0.0.1:0", listener.paths)
    forwarder = Forwarder(front_door)
    pipelines = Pipelines(raw, listeners, forwarder)
    pipelines.start()
    try:
        assert pipelines.wait(30)
        front_door.refused = 2
        forwarder.dropped = 3
        text = generate_latest(pipelines.service.telemetry.registry).decode()
        assert "otelcol_lambda_extension_dropped_requests 3.0" in text
        assert "otelcol_lambda_extension_refused_requests 2.0" in text
        assert pipelines.flush(5)
    finally:
        pipelines.stop(2)
        forwarder.stop()
        front_door.close()


def test_pipelines_that_fail_validation_say_so_and_drop_what_arrives(capfd):
    raw = yaml.safe_load(CONFIG)
    raw["exporters"]["debug"]["verbosity"] = "loud"
    front_door = FrontDoor()
    forwarder = Forwarder(front_door)
    pipelines = Pipelines(raw, [], forwarder)
    pipelines.start()
    try:
        assert not pipelines.wait(30)
        assert pipelines.error is not None
        err = capfd.readouterr().err
        assert "coldtail lambda-extension: the collector could not start" in err
        assert "exporters::debug::verbosity" in err
    finally:
        forwarder.stop()
        front_door.close()
