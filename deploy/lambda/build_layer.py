"""Build the coldtail Lambda layer zip (`make layer`): dist/coldtail-layer.zip, laid out for /opt.

    python/instrumentation/      the instrumentation (on the function's import path)
    coldtail-instrument          the exec wrapper: AWS_LAMBDA_EXEC_WRAPPER=/opt/coldtail-instrument
    extensions/coldtail          the extension launcher
    coldtail/                    the collector and its dependencies (the extension's path only)
    config/lambda-extension.yaml the extension's pipeline

Everything is compiled to bytecode: /opt is read-only in Lambda, and compiling at import would
cost the cold start what the instrumentation saves. Wheels are for the Python running this
script and this machine's architecture (Lambda's python3.11 on x86_64 from a CPython 3.11 x86_64
build host).
"""

from __future__ import annotations

import compileall
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Not needed at run time in the extension: tests, tooling and type stubs.
PRUNE_DIRS = {"tests", "test", "__pycache__", "bin", "include"}
PRUNE_SUFFIXES = {".pyi", ".c", ".h", ".pxd", ".pyx"}


def _prune(tree: Path) -> None:
    for path in sorted(tree.rglob("*"), reverse=True):
        if path.is_dir() and path.name in PRUNE_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in PRUNE_SUFFIXES:
            path.unlink()


def build(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp)
        collector = layer / "coldtail"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                # The target is a fresh tree: what this venv holds is no concern of the layer.
                "--ignore-installed",
                "--no-warn-conflicts",
                "--target",
                str(collector),
                str(ROOT),
            ],
            check=True,
        )
        # The function imports the instrumentation from python/; the extension never does.
        shutil.rmtree(collector / "instrumentation", ignore_errors=True)
        _prune(collector)
        shutil.copytree(
            ROOT / "instrumentation",
            layer / "python" / "instrumentation",
            ignore=shutil.ignore_patterns("__pycache__", "bin", "ecs.py", "container"),
        )
        shutil.copy2(ROOT / "instrumentation" / "bin" / "coldtail-instrument", layer)
        (layer / "extensions").mkdir()
        shutil.copy2(ROOT / "deploy" / "lambda" / "extension", layer / "extensions" / "coldtail")
        (layer / "config").mkdir()
        shutil.copy2(ROOT / "config" / "lambda-extension.yaml", layer / "config")
        for tree in (collector, layer / "python"):
            # Unchecked hashes keep the .pyc valid whatever the zip does to file times.
            compileall.compile_dir(
                tree,
                quiet=1,
                invalidation_mode=compileall.py_compile.PycInvalidationMode.UNCHECKED_HASH,
                workers=0,
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(layer.rglob("*")):
                if path.is_file():
                    info = zipfile.ZipInfo.from_file(path, path.relative_to(layer))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    archive.writestr(info, path.read_bytes())
    return out


def main() -> None:
    out = build(ROOT / "dist" / "coldtail-layer.zip")
    size = out.stat().st_size
    with zipfile.ZipFile(out) as archive:
        unzipped = sum(i.file_size for i in archive.infolist())
    print(
        f"{out.relative_to(ROOT)}: {size / 2**20:.1f} MiB zipped, "
        f"{unzipped / 2**20:.1f} MiB unzipped"
    )


if __name__ == "__main__":
    main()
