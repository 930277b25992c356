from pathlib import Path

from collector.docs import render

README = Path(__file__).parents[1] / "README.md"


def test_readme_component_reference_is_current():
    current = README.read_text()
    assert render(current) == current, "run: .venv/bin/python -m collector.docs README.md"
