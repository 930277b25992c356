"""tools/import_cycles.py, run as `make lint` runs it, on small packages written per test."""

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "import_cycles.py"


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


def check(root: Path, *packages: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *packages],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_module_level_cycle_fails_naming_it(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import B\n",
            "pkg/b.py": "import pkg.c\n",
            "pkg/c.py": "from pkg import a\n",
            "pkg/leaf.py": "import os\n",
        },
    )
    result = check(tmp_path, "pkg")
    assert result.returncode == 1
    assert "import cycle: pkg.a -> pkg.b -> pkg.c -> pkg.a" in result.stderr
    assert "5 modules, 1 import cycles" in result.stderr


def test_relative_imports_and_class_bodies_count(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "from . import x\n",
            "pkg/sub/x.py": "class X:\n    from ..y import Y\n",
            "pkg/y.py": "try:\n    from .sub import x\nexcept ImportError:\n    pass\n",
        },
    )
    result = check(tmp_path, "pkg")
    assert result.returncode == 1
    assert "import cycle: pkg.sub -> pkg.sub.x -> pkg.y -> pkg.sub" in result.stderr


def test_type_checking_and_function_imports_are_notes_only(tmp_path):
    write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": """\
                import typing
                from pkg import b
                if typing.TYPE_CHECKING:
                    from pkg.c import C
            """,
            "pkg/b.py": """\
                def late():
                    from pkg import a
            """,
            "pkg/c.py": "from pkg.a import thing\n",
        },
    )
    result = check(tmp_path, "pkg")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "cycle only with imports under TYPE_CHECKING: pkg.a -> pkg.c -> pkg.a (among pkg.a, pkg.c)",
        "cycle only with imports inside a function: pkg.a -> pkg.b -> pkg.a"
        " (among pkg.a, pkg.b, pkg.c)",
        "4 modules, 0 import cycles",
    ]


def test_cycles_across_packages_are_found(tmp_path):
    write_package(
        tmp_path,
        {
            "one/__init__.py": "from two import helper\n",
            "two/__init__.py": "",
            "two/helper.py": "import one\n",
        },
    )
    result = check(tmp_path, "one", "two")
    assert result.returncode == 1
    assert "import cycle: one -> two.helper -> one" in result.stderr
