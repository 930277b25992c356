"""Every component's config model against its YAML testdata: `tests/<kind>s/testdata/<type>.yaml`
(or `<type>_config.yaml`) holds `valid` (case name -> config as users write it) and `invalid`
(a list of {name, config, error}, or a map of name -> {config, error}; error is a fragment of
the message users get)."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from collector.core.component import Kind
from collector.registry import registry

TESTS = Path(__file__).parent


def cases():
    valid, invalid = [], []
    for kind in Kind:
        for path in sorted((TESTS / kind.section / "testdata").glob("*.yaml")):
            factory = registry().get(kind, path.stem.removesuffix("_config"))
            data = yaml.safe_load(path.read_text())
            if factory is None or not isinstance(data, dict) or "invalid" not in data:
                continue
            for name, config in data["valid"].items():
                valid.append(pytest.param(factory, config, id=f"{kind}-{factory.type}-{name}"))
            invalid_cases = data["invalid"]
            if isinstance(invalid_cases, dict):
                invalid_cases = [{"name": n, **c} for n, c in invalid_cases.items()]
            for case in invalid_cases:
                invalid.append(
                    pytest.param(
                        factory,
                        case["config"],
                        case["error"],
                        id=f"{kind}-{factory.type}-{case['name']}",
                    )
                )
    return valid, invalid


VALID, INVALID = cases()


@pytest.mark.parametrize(("factory", "config"), VALID)
def test_valid_config(factory, config):
    # A key with nothing after it (YAML null) means the defaults, as the service reads it.
    factory.config.model_validate({} if config is None else config)


@pytest.mark.parametrize(("factory", "config", "error"), INVALID)
def test_invalid_config_says_what_is_wrong(factory, config, error):
    with pytest.raises(ValidationError) as excinfo:
        factory.config.model_validate({} if config is None else config)
    assert error in str(excinfo.value)


def test_testdata_covers_the_tagging_and_sampling_components():
    covered = {p.values[0].type for p in VALID} & {p.values[0].type for p in INVALID}
    assert {
        "coldstart",
        "tail_latency",
        "tail_sampling",
        "span_metrics",
        "batch",
        "otlp",
        "lambda_telemetry",
    } <= covered
