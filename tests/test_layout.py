"""What ships imports nothing that exists only for tests, and the emulator stays an extra."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, id(node) in top))
    return found


def _offenders(*packages: str) -> list[str]:
    bad = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, at_top in _imports(path):
                root = module.split(".")[0]
                lazy_emulate = root == "emulator" and not at_top and path.name == "cli.py"
                if root in ("tests", "emulator") and not lazy_emulate:
                    bad.append(f"{path.relative_to(ROOT)}: {module}")
    return bad


def test_the_product_imports_no_test_double():
    assert _offenders("collector", "instrumentation") == []


def test_the_check_sees_a_test_double(tmp_path, monkeypatch):
    (tmp_path / "collector").mkdir()
    (tmp_path / "collector" / "x.py").write_text("from tests.support.sinks import SinkConsumer\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _offenders("collector") == ["collector/x.py: tests.support.sinks"]


def test_the_emulator_imports_neither_tests_nor_instrumentation():
    for path in (ROOT / "emulator").rglob("*.py"):
        roots = {module.split(".")[0] for module, _ in _imports(path)}
        assert not roots & {"tests", "instrumentation"}, path
