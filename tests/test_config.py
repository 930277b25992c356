from pathlib import Path

import pytest
import yaml

from collector.core.component import ComponentID, Kind
from collector.core.config import ConfigError, validate
from collector.core.confmap import load
from collector.core.signals import Signal
from collector.registry import registry

TESTDATA = Path(__file__).parent / "testdata"
CASES = yaml.safe_load((TESTDATA / "invalid_configs.yaml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_invalid_config_reports_every_error_with_its_path(case):
    with pytest.raises(ConfigError) as info:
        validate(case["config"], registry())
    assert [str(e) for e in info.value.errors] == case["errors"]


def test_profiles_pipelines_are_skipped_with_a_warning():
    # The OTel Collector's experimental profiles signal: configs made for it still run.
    config = validate(
        {
            "receivers": {"otlp": {"protocols": {"grpc": None}}},
            "exporters": {"debug": None},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "exporters": ["debug"]},
                    "profiles": {"receivers": ["otlp"], "exporters": ["debug"]},
                }
            },
        },
        registry(),
    )
    assert [p.signal for p in config.pipelines] == [Signal.TRACES]
    assert [str(w) for w in config.warnings] == [
        "service::pipelines::profiles: profiles pipelines are not supported; this pipeline is "
        "skipped"
    ]


def test_unused_component_is_a_warning_not_an_error():
    config = validate(
        {
            "receivers": {"otlp": {"protocols": {"grpc": None}}},
            "processors": {"batch": None},
            "exporters": {"debug": None, "file/unused": {"path": "/tmp/x"}},
            "extensions": {"health_check": None},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
        },
        registry(),
    )
    assert [str(w) for w in config.warnings] == [
        "processors::batch: configured but not used in any pipeline",
        "exporters::file/unused: configured but not used in any pipeline",
        "extensions::health_check: configured but not used in service::extensions",
    ]


def test_valid_config_resolves_ids_aliases_and_named_pipelines():
    config = validate(
        {
            "receivers": {"otlp": {"protocols": {"grpc": None, "http": None}}},
            "processors": {"batch/fast": {"timeout": "50ms"}},
            "exporters": {"otlp_http/backend": {"endpoint": "http://127.0.0.1:4318"}},
            "service": {
                "pipelines": {
                    "traces/cold": {
                        "receivers": ["otlp"],
                        "processors": ["batch/fast"],
                        "exporters": ["otlp_http/backend"],
                    }
                },
                "shutdown_timeout": "3s",
            },
        },
        registry(),
    )
    (pipeline,) = config.pipelines
    assert pipeline.signal is Signal.TRACES
    assert pipeline.processors == [ComponentID("batch", "fast")]
    factory, model = config.component(Kind.PROCESSOR, ComponentID("batch", "fast"))
    assert factory.type == "batch" and model.timeout == 0.05
    assert config.component(Kind.EXPORTER, ComponentID("otlp_http", "backend"))[0].type == (
        "otlphttp"
    )
    assert config.shutdown_timeout == 3.0


@pytest.mark.parametrize(
    "name",
    ["default.yaml", "sidecar.yaml", "lambda-extension.yaml", "agent-nats.yaml", "gateway.yaml"],
)
def test_shipped_configs_are_valid_without_warnings(name):
    raw = load([str(Path(__file__).parents[1] / "config" / name)], env={})
    assert validate(raw, registry()).warnings == []


def test_a_misplaced_secret_is_not_echoed_in_the_error():
    config = {
        "receivers": {"otlp": {"protocols": {"grpc": None}}},
        "exporters": {
            "otlphttp": {"endpoint": "https://otlp.example.com", "headers": "Bearer s3cr3t"}
        },
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlphttp"]}}},
    }
    with pytest.raises(ConfigError) as info:
        validate(config, registry())
    assert [str(e) for e in info.value.errors] == [
        "exporters::otlphttp::headers: expected a map, got a string"
    ]
    assert "s3cr3t" not in str(info.value)


def test_an_empty_listening_host_is_loopback_and_every_interface_must_be_named():
    config = validate(
        {
            "receivers": {
                "otlp": {
                    "protocols": {
                        "grpc": {"endpoint": ":4317"},
                        "http": {"endpoint": "0.0.0.0:4318"},
                    }
                }
            },
            "exporters": {"debug": None},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}},
        },
        registry(),
    )
    protocols = config.component(Kind.RECEIVER, ComponentID("otlp", ""))[1].protocols
    assert protocols.grpc.endpoint == "127.0.0.1:4317"
    assert protocols.http.endpoint == "0.0.0.0:4318"


def test_the_removed_logging_exporter_runs_as_debug_with_a_deprecation_warning():
    raw = {
        "receivers": {"otlp": {"protocols": {"grpc": {}}}},
        "exporters": {"logging": {"loglevel": "debug"}, "logging/quiet": {}},
        "service": {
            "pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["logging", "logging/quiet"]}
            }
        },
    }
    config = validate(raw, registry())
    assert [str(w) for w in config.warnings] == [
        "exporters::logging: the logging exporter was removed from the OTel Collector: use debug",
        "exporters::logging/quiet: the logging exporter was removed from the OTel Collector: "
        "use debug",
    ]
    models = {str(cid): model for cid, (_, model) in config.components[Kind.EXPORTER].items()}
    assert models["logging"].verbosity == "detailed"  # loglevel debug
    assert models["logging/quiet"].verbosity == "normal"  # the logging exporter's default


def _with_telemetry(metrics: dict) -> dict:
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {}}}},
        "exporters": {"debug": {}},
        "service": {
            "telemetry": {"metrics": metrics},
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}},
        },
    }


def test_the_helm_charts_metric_reader_sets_the_own_metrics_address():
    # As the OpenTelemetry Collector's Helm chart writes it (host from the pod's IP there).
    reader = {"pull": {"exporter": {"prometheus": {"host": "0.0.0.0", "port": 8889}}}}
    config = validate(_with_telemetry({"readers": [reader]}), registry())
    assert config.telemetry.metrics.address == "0.0.0.0:8889"


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        (
            {"readers": [{"periodic": {"exporter": {"otlp": {"endpoint": "x"}}}}]},
            "expected an http:// or https:// URL",
        ),
        (
            {
                "readers": [
                    {
                        "periodic": {
                            "exporter": {"otlp": {"protocol": "grpc", "endpoint": "http://x:4317"}}
                        }
                    }
                ]
            },
            "the collector's own telemetry is pushed with http/protobuf",
        ),
        (
            {"readers": [{"pull": {"exporter": {"prometheus": {"port": 1}}}}] * 2},
            "at most one pull reader",
        ),
        (
            {
                "address": "127.0.0.1:9999",
                "readers": [{"pull": {"exporter": {"prometheus": {"port": 1}}}}],
            },
            "set either address or readers",
        ),
        (
            {"readers": [{"pull": {"exporter": {"prometheus": {"host": "h"}}}}]},
            "port",
        ),
    ],
)
def test_metric_readers_that_cannot_be_served_are_config_errors(metrics, error):
    with pytest.raises(ConfigError) as raised:
        validate(_with_telemetry(metrics), registry())
    text = str(raised.value)
    assert "service::telemetry::metrics" in text and error in text, text
