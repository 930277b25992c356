"""Build the coldtail Lambda layers (`make layer`): one zip per Lambda Python runtime and
architecture, dist/coldtail-layer-<runtime>-<architecture>.zip, each laid out for /opt:

    python/instrumentation/      the instrumentation (on the function's import path)
    coldtail-instrument          the exec wrapper: AWS_LAMBDA_EXEC_WRAPPER=/opt/coldtail-instrument
    extensions/coldtail          the extension launcher
    coldtail/                    the collector and its dependencies (the extension's path only)
    config/lambda-extension.yaml the extension's pipeline
    coldtail-layer.json          the manifest: runtime, architecture, version, size, packages

Any build host makes every layer: pip installs the wheels of each target's Python version and
architecture. Only the bytecode needs a CPython of the runtime's minor version (on PATH as
python3.X, or installed by pyenv), since bytecode is specific to it. Without one the layer ships
its sources alone (`"bytecode": false` in the manifest, and a warning): the function then
compiles the instrumentation at each cold start, in memory since /opt is read-only, and the
extension compiles the collector once per environment into /tmp.

    python deploy/lambda/build_layer.py [--runtimes python3.13 ...] [--archs arm64 ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = "coldtail-layer.json"
# Lambda's Python runtimes on Amazon Linux 2023.
RUNTIMES = ("python3.12", "python3.13", "python3.14")
# Lambda's architecture names, and the machine each is in wheel tags.
ARCHS = {"x86_64": "x86_64", "arm64": "aarch64"}
# Amazon Linux 2023 has glibc 2.34: wheels for any manylinux from 2.17 (manylinux2014) up to
# that load there. pip does not derive the older tags from a newer one, so all are listed.
GLIBC_MINORS = range(34, 16, -1)
# Imported only by the `otlp` (gRPC) exporter (grpcio for its status codes, h2, isal) and the
# `prometheusremotewrite` exporter, neither of which the layer's pipeline uses (checked by
# tests/deploy/test_layer_build.py, which starts that pipeline from each layer without them).
# botocore (the sigv4auth extension's, imported only by it) ships with Lambda's Python runtimes.
# bcrypt is imported only by the basicauth extension, for htpasswd entries hashed with bcrypt;
# thrift only by the jaeger receiver and zipkin's v1 Thrift bodies, confluent-kafka (16 MB)
# only by the kafka components.
# argcomplete completes the command line in a shell, which a Lambda function has not; uvloop
# runs `coldtail run`'s event loop, not the extension's.
EXCLUDED = {
    "grpcio",
    "h2",
    "isal",
    "cramjam",
    "botocore",
    "bcrypt",
    "thrift",
    "confluent-kafka",
    "argcomplete",
    "uvloop",
}
# Not needed at run time: tests, tooling, type stubs and C sources.
PRUNE_DIRS = {"tests", "test", "__pycache__", "bin", "include"}
PRUNE_SUFFIXES = {".pyi", ".c", ".h", ".pxd", ".pyx"}
# Written by pip for its own bookkeeping; RECORD's hashes no longer match the pruned tree.
PRUNE_DIST_INFO = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
# A fixed time for every zip entry: the same tree gives the same zip, and so the same layer.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class BuildError(Exception):
    """A layer that cannot be built here, with the reason."""


@dataclass(frozen=True)
class Target:
    """A layer's Lambda runtime ("python3.13") and architecture ("x86_64" or "arm64").
    `cross` False: the wheels are the ones pip picks for this interpreter and machine."""

    runtime: str
    arch: str
    cross: bool = True

    @property
    def version(self) -> str:
        return self.runtime.removeprefix("python")

    @property
    def name(self) -> str:
        return f"coldtail-layer-{self.runtime}-{self.arch}"


def host_target() -> Target:
    """This interpreter's version on this machine."""
    machine = platform.machine()
    arch = next((name for name, m in ARCHS.items() if m == machine), None)
    if arch is None:
        raise BuildError(f"Lambda has no {machine} architecture")
    return Target(f"python{sys.version_info.major}.{sys.version_info.minor}", arch, cross=False)


@functools.cache
def interpreter(version: str) -> str:
    """A CPython `version` ("3.13") to compile bytecode with: this one, python3.X on PATH or a
    pyenv install. Raises BuildError when there is none."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [
        sys.executable,
        shutil.which(f"python{version}"),
        *sorted(map(str, pyenv.glob(f"{version}.*/bin/python{version}")), reverse=True),
    ]
    tag = "cpython-" + version.replace(".", "")
    for candidate in filter(None, candidates):
        # A pyenv shim is on PATH even when its version is not selected, and then fails.
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.implementation.cache_tag)"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == tag:
            return candidate
    raise BuildError(
        f"no CPython {version} (python{version} on PATH or in pyenv) to compile the "
        f"python{version} layer's bytecode"
    )


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _distribution(requirement: str) -> str:
    """The normalized distribution name a requirement ("PyYAML>=6") names ("pyyaml")."""
    name = re.match(r"[A-Za-z0-9._-]*", requirement)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _install_dependencies(target: Target, into: Path) -> None:
    requirements = [r for r in _project()["dependencies"] if _distribution(r) not in EXCLUDED]
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        # The target is a fresh tree: what this venv holds is no concern of the layer.
        "--ignore-installed",
        "--no-warn-conflicts",
        # Wheels only: a source build would be for this machine, not the target.
        "--only-binary=:all:",
        "--target",
        str(into),
    ]
    if target.cross:
        command += ["--implementation", "cp", "--python-version", target.version]
        for minor in GLIBC_MINORS:
            command += ["--platform", f"manylinux_2_{minor}_{ARCHS[target.arch]}"]
        command += ["--platform", f"manylinux2014_{ARCHS[target.arch]}"]
    subprocess.run([*command, *requirements], check=True)


def _prune(tree: Path) -> None:
    for path in sorted(tree.rglob("*"), reverse=True):
        if path.is_dir() and path.name in PRUNE_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and path.suffix in PRUNE_SUFFIXES:
            path.unlink()


def _trim_dist_info(tree: Path) -> None:
    """Keep what importlib.metadata reads (METADATA's headers, entry points) and the licenses."""
    for dist_info in tree.glob("*.dist-info"):
        for name in PRUNE_DIST_INFO:
            (dist_info / name).unlink(missing_ok=True)
        metadata = dist_info / "METADATA"
        # The long description follows the headers' blank line.
        headers, _, _ = metadata.read_text(encoding="utf-8").partition("\n\n")
        metadata.write_text(headers + "\n", encoding="utf-8")


def _compileall(python: str, layer: Path, paths: list[Path], *options: str) -> None:
    # Unchecked hashes: Python never reads the source to validate the bytecode, whatever the zip
    # did to file times, and /opt is read-only so nothing could be rewritten there anyway.
    command = [python, "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash"]
    # -s/-p: the bytecode names its file where Lambda unpacks it (for tracebacks from sourceless
    # modules), not this build's temporary folder, so the same tree gives the same bytes.
    command += ["-s", str(layer), "-p", "/opt"]
    subprocess.run([*command, *options, *map(str, paths)], check=True)


def _compile(python: str, layer: Path) -> None:
    """Compile to bytecode: compiling at import would cost the cold start what the layer saves.

    The dependencies ship as sourceless bytecode only (legacy .pyc where the .py was): that about
    halves their size, and their frames in a traceback still name file and line in the released
    version. The collector and the instrumentation keep their source with __pycache__: their
    tracebacks are the ones users read, and the collector's config classes read their own
    source for their field docs (pydantic's use_attribute_docstrings).
    """
    tree = layer / "coldtail"
    dependencies = [
        path
        for path in sorted(tree.iterdir())
        if path.name != "collector" and not path.name.endswith(".dist-info")
    ]
    _compileall(python, layer, dependencies, "-b")
    for path in dependencies:
        for source in path.rglob("*.py") if path.is_dir() else [path]:
            if source.suffix == ".py" and source.with_suffix(".pyc").is_file():
                source.unlink()
    _compileall(python, layer, [tree / "collector", layer / "python"])


def _packages(tree: Path) -> list[str]:
    """The top-level import names in `tree`."""
    names = set()
    for path in tree.iterdir():
        if path.is_dir() and not path.name.endswith(".dist-info"):
            names.add(path.name)
        elif path.suffix in (".py", ".pyc", ".so"):
            names.add(path.name.split(".")[0])
    return sorted(names)


def _manifest(layer: Path, target: Target) -> dict:
    """What a layer is for and holds; `unzipped_bytes` counts every file but the manifest."""
    tree = layer / "coldtail"
    return {
        "name": target.name,
        "runtime": target.runtime,
        "architecture": target.arch,
        "version": _project()["version"],
        "unzipped_bytes": sum(p.stat().st_size for p in layer.rglob("*") if p.is_file()),
        "packages": _packages(tree),
        "distributions": dict(
            sorted(
                p.name.removesuffix(".dist-info").rsplit("-", 1) for p in tree.glob("*.dist-info")
            )
        ),
    }


def _zip(layer: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(layer.rglob("*")):
            if path.is_file():
                # from_file keeps the mode bits: the wrapper and the extension are executables.
                info = zipfile.ZipInfo.from_file(path, path.relative_to(layer))
                info.date_time = ZIP_TIME
                archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED, compresslevel=9)


def build(out: Path, runtime: str | None = None, arch: str | None = None) -> Path:
    """Build the layer for `runtime` ("python3.13") and `arch` ("x86_64" or "arm64") into the zip
    `out`; both None: for this interpreter and machine. Raises BuildError, or CalledProcessError
    when pip or compileall fail."""
    host = host_target()
    target = (
        host
        if runtime is None and arch is None
        else Target(runtime or host.runtime, arch or host.arch)
    )
    try:
        python: str | None = interpreter(target.version)
    except BuildError as e:
        print(f"build_layer: warning: {e}: {target.name} ships sources only", file=sys.stderr)
        python = None
    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp).resolve()
        tree = layer / "coldtail"
        _install_dependencies(target, tree)
        # The project is pure Python: its tree as is.
        shutil.copytree(
            ROOT / "collector",
            tree / "collector",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        _prune(tree)
        _trim_dist_info(tree)
        # The function imports the instrumentation from python/; the extension never does.
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
        if python is not None:
            _compile(python, layer)
        manifest = {**_manifest(layer, target), "bytecode": python is not None}
        (layer / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _zip(layer, out)
    return out


def table(zips: list[Path]) -> str:
    """One line per layer zip: its compatible runtime and architecture and its sizes."""
    lines = [f"{'layer':<46} {'runtime':<11} {'arch':<7} {'zipped':>10} {'unzipped':>10}"]
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(MANIFEST))
            unzipped = sum(info.file_size for info in archive.infolist())
        lines.append(
            f"{path.name:<46} {manifest['runtime']:<11} {manifest['architecture']:<7} "
            f"{path.stat().st_size / 2**20:>6.1f} MiB {unzipped / 2**20:>6.1f} MiB"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build the coldtail Lambda layer zips.")
    parser.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS), default=list(ARCHS))
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    args = parser.parse_args(argv)
    targets = [Target(runtime, arch) for runtime in args.runtimes for arch in args.archs]
    try:
        zips = [build(args.out / f"{t.name}.zip", t.runtime, t.arch) for t in targets]
    except BuildError as e:
        sys.exit(f"build_layer: {e}")
    print(table(zips))


if __name__ == "__main__":
    main()
