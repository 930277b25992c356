import re
from pathlib import Path

import yaml

from collector import docs
from collector.core.component import Kind
from collector.docs import render
from collector.registry import registry

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
# A backticked name whose first part is one of these folders is taken for a path in the repo.
_REPO_FOLDERS = (
    "bench",
    "collector",
    "config",
    "deploy",
    "docs",
    "emulator",
    "instrumentation",
    "tests",
    "tools",
)
_REPO_PATH = re.compile(rf"`((?:{'|'.join(_REPO_FOLDERS)})/[\w./-]*)`")
# A backticked file name without its folder (`plan.py`, `autostart/sitecustomize.py`).
_FILE_NAME = re.compile(r"`([\w/-]+\.(?:py|yaml|json))`")


def test_readme_component_reference_is_current():
    current = README.read_text()
    assert render(current) == current, "run: .venv/bin/python -m collector.docs README.md"


def test_architecture_is_linked_from_the_readme():
    assert ARCHITECTURE.is_file()
    assert "(docs/ARCHITECTURE.md)" in README.read_text()


def test_architecture_has_a_mermaid_diagram():
    assert re.search(r"^```mermaid\n.+?^```$", ARCHITECTURE.read_text(), re.M | re.S)


def test_architecture_names_only_paths_that_exist():
    named = set(_REPO_PATH.findall(ARCHITECTURE.read_text()))
    assert len(named) >= 10, "the path pattern no longer matches how the page names files"
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"docs/ARCHITECTURE.md names paths that do not exist: {missing}"


def test_architecture_names_only_files_that_exist():
    files = [p.as_posix() for folder in _REPO_FOLDERS for p in (ROOT / folder).rglob("*")]
    named = set(_FILE_NAME.findall(ARCHITECTURE.read_text()))
    missing = sorted(n for n in named if not any(f.endswith("/" + n) for f in files))
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_architecture_path_checks_catch_a_missing_file():
    text = "see `collector/nowhere.py`, `nowhere.py` and `collector.core.pdata`"
    assert _REPO_PATH.findall(text) == ["collector/nowhere.py"]
    assert _FILE_NAME.findall(text) == ["collector/nowhere.py", "nowhere.py"]


def test_every_upstream_type_coldtail_lacks_says_why():
    upstream = yaml.safe_load(docs.UPSTREAM.read_text())
    for kind in Kind:
        for type_, entry in (upstream.get(kind.section) or {}).items():
            if registry().get(kind, type_) is None:
                assert (entry or {}).get("note"), f"{kind.section}::{type_} needs a note"
