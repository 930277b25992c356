"""Every component's config model against its YAML testdata: `tests/<kind>s/testdata/<type>.yaml`
holds `valid` (case name -> config as users write it) and `invalid` (a list of {name, config,
error}, error being a fragment of the message users get)."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from collector.component import Kind
from collector.components import registry

TESTS = Path(__file__).parent


def cases():
    valid, invalid = [], []
    for kind in Kind:
        for path in sorted((TESTS / kind.section / "testdata").glob("*.yaml")):
            factory = registry().get(kind, path.stem)
            data = yaml.safe_load(path.read_text())
            if factory is None or not isinstance(data.get("invalid"), list):
                continue
            for name, config in data["valid"].items():
                valid.append(pytest.param(factory, config, id=f"{factory.type}-{name}"))
            for case in data["invalid"]:
                invalid.append(
                    pytest.param(
                        factory, case["config"], case["error"], id=f"{factory.type}-{case['name']}"
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
    assert {"coldstart", "tail_latency", "tail_sampling", "span_metrics", "batch"} <= covered
