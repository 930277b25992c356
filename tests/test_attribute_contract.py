"""The instrumentation and the collector name the attributes they exchange the same way."""

from collector.core import attributes as collector_side
from instrumentation import attributes as instrumentation_side


def _names(module) -> dict[str, str]:
    return {k: v for k, v in vars(module).items() if k.isupper() and isinstance(v, str)}


def test_both_sides_agree_on_every_name_they_share():
    collector, instrumentation = _names(collector_side), _names(instrumentation_side)
    shared = collector.keys() & instrumentation.keys()
    assert {"COLD_START", "COLD_START_SOURCE", "INIT_TYPE", "FAAS_COLDSTART"} <= shared
    assert {k: collector[k] for k in shared} == {k: instrumentation[k] for k in shared}


def test_no_value_has_two_names():
    for module in (collector_side, instrumentation_side):
        values = list(_names(module).values())
        assert len(values) == len(set(values)), module.__name__
