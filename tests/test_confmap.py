import pytest

from collector.core.confmap import ConfmapError, apply_set, expand, load, merge

ENV = {"PORT": "4317", "HOST": "10.0.0.1", "EMPTY": "", "FLAG": "true"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${env:PORT}", 4317),
        ("${PORT}", 4317),
        ("${env:FLAG}", True),
        ("${env:HOST}:${env:PORT}", "10.0.0.1:4317"),
        ("${env:MISSING:-127.0.0.1}", "127.0.0.1"),
        ("${MISSING:-5s}", "5s"),
        ("${env:EMPTY:-fallback}", "fallback"),
        ("${env:MISSING}", ""),
        ("price: $$5", "price: $5"),
        ("no refs", "no refs"),
    ],
)
def test_expand(value, expected):
    assert expand({"k": value}, ENV) == {"k": expected}


def test_expand_nested_lists_and_maps():
    tree = {"a": [{"b": "${env:PORT}"}, "x${HOST}"], "n": 3}
    assert expand(tree, ENV) == {"a": [{"b": 4317}, "x10.0.0.1"], "n": 3}


def test_expand_rejects_unknown_scheme_naming_path():
    with pytest.raises(ConfmapError, match=r"receivers::otlp: unsupported reference"):
        expand({"receivers": {"otlp": "${file:/etc/x}"}}, ENV)


def test_merge_maps_merge_lists_replace():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    over = {"a": {"y": [3], "z": 2}, "c": 3}
    assert merge(base, over) == {"a": {"x": 1, "y": [3], "z": 2}, "b": 1, "c": 3}


def test_set_with_both_separators():
    tree = {"processors": {"batch": {"timeout": "1s", "send_batch_size": 10}}}
    out = apply_set(tree, "processors.batch.timeout=2s")
    out = apply_set(out, "processors::batch::send_batch_size=20")
    assert out == {"processors": {"batch": {"timeout": "2s", "send_batch_size": 20}}}


def test_set_requires_key_value():
    with pytest.raises(ConfmapError, match="expected key=value"):
        apply_set({}, "processors.batch")


def test_load_merges_files_in_order(tmp_path):
    first = tmp_path / "a.yaml"
    first.write_text("exporters:\n  debug:\n    verbosity: basic\nservice:\n  extensions: [a]\n")
    second = tmp_path / "b.yaml"
    second.write_text("exporters:\n  debug:\n    verbosity: detailed\nservice:\n  extensions: []\n")
    tree = load([str(first), f"file:{second}"], ["exporters.file.path=/tmp/x"])
    assert tree == {
        "exporters": {"debug": {"verbosity": "detailed"}, "file": {"path": "/tmp/x"}},
        "service": {"extensions": []},
    }


def test_load_inline_yaml_source():
    assert load(["yaml:processors::batch::timeout: 2s"]) == {
        "processors": {"batch": {"timeout": "2s"}}
    }


def test_load_errors_name_the_source(tmp_path):
    with pytest.raises(ConfmapError, match=r"cannot read config .*nope\.yaml"):
        load([str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfmapError, match=r"bad\.yaml is not valid YAML"):
        load([str(bad)])
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfmapError, match="top level must be a map"):
        load([str(scalar)])
