"""`make layer`'s zips (deploy/lambda/build_layer.py), built for Lambda runtimes and
architectures other than this interpreter and machine: each holds native modules and bytecode
for its target only, says what it is in its manifest, and starts the layer's pipeline under its
runtime's CPython."""

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "deploy" / "lambda"))
import build_layer  # noqa: E402

# e_machine in the ELF header (System V gABI): EM_X86_64 and EM_AARCH64.
E_MACHINE = {"x86_64": 62, "arm64": 183}
# The machine in an extension module's file name (cpython-313-aarch64-linux-gnu.so).
SO_MACHINE = {"x86_64": "x86_64", "arm64": "aarch64"}
EXTENSION_MODULE = re.compile(r"\.(?:cpython-(\d+)-(\w+)-linux-gnu|abi3)\.so$")
LEFT_OUT = {"grpc", "grpcio", "cramjam"}


def nearest_runtime() -> str:
    """The oldest runtime the layers are built for that is at least this interpreter's."""
    host = sys.version_info[:2]
    for runtime in build_layer.RUNTIMES:
        if tuple(map(int, runtime.removeprefix("python").split("."))) >= host:
            return runtime
    return build_layer.RUNTIMES[-1]


# Six builds would take some 90 s: these cover both machines, and the runtimes run below.
LAYERS = sorted(
    {(nearest_runtime(), "x86_64"), ("python3.12", "x86_64"), ("python3.13", "x86_64")}
    | {("python3.13", "arm64")}
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Build a layer once per module; skips, saying why, where it cannot be built here."""
    out = tmp_path_factory.mktemp("layers")
    zips: dict[tuple[str, str], Path | Exception] = {}

    def build(runtime: str, arch: str) -> Path:
        if (runtime, arch) not in zips:
            try:
                zips[runtime, arch] = build_layer.build(
                    out / f"{runtime}-{arch}.zip", runtime, arch
                )
            except build_layer.BuildError as e:
                zips[runtime, arch] = e
        result = zips[runtime, arch]
        if isinstance(result, Exception):
            pytest.skip(f"the {runtime} {arch} layer cannot be built here: {result}")
        return result

    return build


@pytest.fixture(params=LAYERS, ids=[f"{r}-{a}" for r, a in LAYERS])
def layer(request, built):
    runtime, arch = request.param
    with zipfile.ZipFile(built(runtime, arch)) as archive:
        yield runtime, arch, archive


def abi(runtime: str) -> str:
    """A runtime's ABI digits: "313" for python3.13 (as in cpython-313)."""
    return runtime.removeprefix("python").replace(".", "")


def top_level(archive: zipfile.ZipFile) -> set[str]:
    """The names right under coldtail/ (packages, modules and dist-info folders)."""
    return {name.split("/")[1] for name in archive.namelist() if name.startswith("coldtail/")}


@pytest.mark.slow
def test_native_code_is_for_the_target_machine_and_python(layer):
    runtime, arch, archive = layer
    elves = []
    for name in archive.namelist():
        with archive.open(name) as file:
            header = file.read(20)
        if header[:4] == b"\x7fELF":
            elves.append(name)
            # 64-bit, little-endian, then e_machine at offset 18.
            assert (header[4], header[5]) == (2, 1), name
            assert int.from_bytes(header[18:20], "little") == E_MACHINE[arch], name
            tag = EXTENSION_MODULE.search(name)
            assert tag, f"{name} is not named as an extension module"
            if tag[1]:
                assert (tag[1], tag[2]) == (abi(runtime), SO_MACHINE[arch]), name
    assert "coldtail/pydantic_core/" in " ".join(elves)
    assert any(name.endswith(".abi3.so") for name in elves)


def test_grpc_and_cramjam_are_left_out(layer):
    _, _, archive = layer
    names = top_level(archive)
    assert {"pydantic", "aiohttp", "google", "opentelemetry", "collector"} <= names
    assert not {name.split("-")[0] for name in names} & LEFT_OUT


def test_every_module_ships_once_as_bytecode_for_its_runtime(layer):
    runtime, _, archive = layer
    names = set(archive.namelist())
    tag = "cpython-" + abi(runtime)
    magic = subprocess.run(
        [
            build_layer.interpreter(runtime.removeprefix("python")),
            "-c",
            "import importlib.util, sys; sys.stdout.write(importlib.util.MAGIC_NUMBER.hex())",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    sources = {name for name in names if name.endswith(".py")}
    bytecode = {name for name in names if name.endswith(".pyc")}
    # Dependencies: bytecode alone, where the source would be.
    assert "coldtail/pydantic/main.pyc" in bytecode
    assert all(name.startswith(("coldtail/collector/", "python/")) for name in sources)
    assert not {name + "c" for name in sources} & bytecode
    # The collector and the instrumentation: source, and bytecode in __pycache__ for it.
    assert "coldtail/collector/core/config.py" in sources
    assert "python/instrumentation/handler.py" in sources
    for source in sources:
        folder, _, module = source.rpartition("/")
        assert f"{folder}/__pycache__/{module[:-3]}.{tag}.pyc" in bytecode, source
    for name in bytecode:
        folder, _, file = name.rpartition("/")
        if folder.endswith("__pycache__"):
            module, file_tag, _ = file.rsplit(".", 2)
            assert file_tag == tag, name
            assert f"{folder.removesuffix('__pycache__')}{module}.py" in sources, name
        with archive.open(name) as file:
            assert file.read(4).hex() == magic, name


def test_manifest_says_what_the_layer_is_for_and_holds(layer):
    runtime, arch, archive = layer
    manifest = json.loads(archive.read(build_layer.MANIFEST))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert manifest["name"] == f"coldtail-layer-{runtime}-{arch}"
    assert (manifest["runtime"], manifest["architecture"]) == (runtime, arch)
    assert manifest["version"] == project["version"]
    assert manifest["unzipped_bytes"] == sum(
        info.file_size for info in archive.infolist() if info.filename != build_layer.MANIFEST
    )
    # Every package, module and distribution under coldtail/, and nothing else.
    names = top_level(archive)
    dist_infos = {name for name in names if name.endswith(".dist-info")}
    assert manifest["packages"] == sorted({name.split(".")[0] for name in names - dist_infos})
    assert {"collector", "pydantic", "pydantic_core", "typing_extensions"} <= {
        *manifest["packages"]
    }
    distributions = manifest["distributions"].items()
    assert {f"{dist}-{version}.dist-info" for dist, version in distributions} == dist_infos
    assert "pydantic" in manifest["distributions"]


def test_table_lists_each_zip_with_its_sizes(built):
    zips = [built("python3.13", "arm64"), built(nearest_runtime(), "x86_64")]
    lines = build_layer.table(zips).splitlines()
    assert len(lines) == 3
    for path, line in zip(zips, lines[1:], strict=True):
        with zipfile.ZipFile(path) as archive:
            manifest = json.loads(archive.read(build_layer.MANIFEST))
            unzipped = sum(info.file_size for info in archive.infolist())
        assert line.split() == [
            path.name,
            manifest["runtime"],
            manifest["architecture"],
            f"{path.stat().st_size / 2**20:.1f}",
            "MiB",
            f"{unzipped / 2**20:.1f}",
            "MiB",
        ]


@pytest.mark.slow
def test_the_same_tree_builds_the_same_zip(built, tmp_path):
    first = built("python3.13", "arm64")
    again = build_layer.build(tmp_path / "again.zip", "python3.13", "arm64")
    assert again.read_bytes() == first.read_bytes()


def test_make_layer_passes_runtimes_and_architectures():
    dry_run = subprocess.run(
        ["make", "-n", "layer", "RUNTIMES=python3.13", "ARCHS=arm64"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "build_layer.py --runtimes python3.13 --archs arm64" in dry_run


def test_a_runtime_without_its_python_is_named():
    with pytest.raises(build_layer.BuildError, match=r"no CPython 3\.99 .* python3\.99 layer"):
        build_layer.interpreter("3.99")


@pytest.mark.slow
def test_without_its_python_a_layer_ships_sources_that_the_extension_compiles_into_tmp(
    monkeypatch, tmp_path, capfd
):
    python = runtime_python("3.12")

    def missing(version: str) -> str:
        raise build_layer.BuildError(f"no CPython {version} here")

    monkeypatch.setattr(build_layer, "interpreter", missing)
    zip_path = build_layer.build(tmp_path / "layer.zip", "python3.12", "x86_64")
    assert "python3.12-x86_64 ships sources only" in capfd.readouterr().err
    opt = tmp_path / "opt"
    with zipfile.ZipFile(zip_path) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".pyc")]
        assert json.loads(archive.read(build_layer.MANIFEST))["bytecode"] is False
        for info in archive.infolist():
            Path(archive.extract(info, opt)).chmod(info.external_attr >> 16 & 0o777)
    # Out of Lambda the extension imports what it needs, says so and stops: with the bytecode
    # it compiled in /tmp, not beside the read-only sources.
    cache = Path("/tmp/coldtail-pycache")
    result = subprocess.run(
        [opt / "extensions" / "coldtail"],
        env={"PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "not in Lambda" in result.stderr
    assert list((cache / str(opt).lstrip("/") / "coldtail" / "collector").rglob("*.pyc"))
    assert not list((opt / "coldtail").rglob("*.pyc"))


def runtime_python(version: str) -> Path:
    """pyenv's CPython `version`, or a skip saying it is not installed."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    pythons = sorted(pyenv.glob(f"{version}.*/bin/python3"))
    if not pythons:
        pytest.skip(f"CPython {version} is not installed in pyenv ({pyenv}/{version}.*)")
    return pythons[-1]


# Loads the layer's pipeline as the extension does (its receivers moved to free loopback ports)
# and runs it; prints where the collector came from and which of the layer's sources had to be
# compiled.
RUN_CHECK = """
import sys

opt = sys.argv[1]
compiled = []


def audit(event, args):
    if event == "compile" and isinstance(args[1], str) and args[1].startswith(opt):
        compiled.append(args[1])


sys.addaudithook(audit)

import asyncio
import json

import collector.awslambda.extension
from collector.core import confmap
from collector.registry import registry
from collector.core.config import validate
from collector.core.service import Service

raw = confmap.load(
    [opt + "/config/lambda-extension.yaml"],
    [
        "receivers::otlp::protocols::http::endpoint=127.0.0.1:0",
        # OTLP/gRPC is served without grpcio, which the layer leaves out.
        "receivers::otlp::protocols::grpc::endpoint=127.0.0.1:0",
        "receivers::lambda_telemetry::endpoint=127.0.0.1:0",
    ],
)
config = validate(raw, registry())


async def run():
    service = Service(config)
    await service.start()
    await service.shutdown()


asyncio.run(run())
print(json.dumps({
    "collector": collector.awslambda.extension.__file__,
    "compiled": compiled,
}))
"""


@pytest.mark.parametrize("runtime", ["python3.12", "python3.13"])
def test_the_pipeline_starts_from_the_layer_under_its_runtime(runtime, built, tmp_path):
    python = runtime_python(runtime.removeprefix("python"))
    opt = tmp_path / "opt"
    with zipfile.ZipFile(built(runtime, "x86_64")) as archive:
        archive.extractall(opt)
    # The layer must hold all it needs: -S leaves out the interpreter's site-packages and -P the
    # working folder (this repository's collector). -B: /opt is read-only.
    result = subprocess.run(
        [python, "-B", "-S", "-P", "-c", RUN_CHECK, str(opt)],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(opt / "coldtail")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["collector"].startswith(str(opt / "coldtail" / "collector"))
    # Everything it imported from the layer was compiled at build time; and, since the run
    # succeeded, nothing it imported was left out (grpc, cramjam).
    assert report["compiled"] == []
