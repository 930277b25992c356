import json

import pytest


@pytest.fixture
def records(tmp_path):
    """The file the recorder extension writes to (`records.path`), and a reader of its lines,
    of one kind or all."""
    path = tmp_path / "records.jsonl"

    def read(kind: str | None = None) -> list[dict]:
        lines = path.read_text().splitlines() if path.exists() else []
        return [r for r in map(json.loads, lines) if kind is None or r["kind"] == kind]

    read.path = path
    return read
