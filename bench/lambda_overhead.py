"""Time that Lambda instrumentation adds to a cold start and to a warm invocation: coldtail's
exec wrapper against the opentelemetry-lambda Python layer's, on a handler that does nothing.

Three configurations of bench/lambda_function/app.handler, answering an API Gateway HTTP API
(v2) event, run side by side in the local Lambda emulator (real awslambdaric runtime processes
behind the Runtime API):

- bare: no instrumentation;
- coldtail: AWS_LAMBDA_EXEC_WRAPPER=instrumentation/bin/coldtail-instrument, the
  `instrumentation` package as a layer;
- peer: bench/lambda_peer/otel-instrument and otel_wrapper.py, doing what the opentelemetry-lambda
  layer does (OTel SDK, BatchSpanProcessor, OTLP/HTTP exporters, AwsLambdaInstrumentor, which
  flushes at the end of every invocation), with the SDK from this venv's site-packages.

Both instrumented configurations export OTLP/HTTP to a real receiver on loopback (the test
backend, in this process); the run fails unless every invocation's span arrived.

Cold start = the emulator's init duration (runtime process start until it asks for its first
invocation) + the first invocation's duration, each from a fresh execution environment; warm =
the duration of later invocations in one environment. Cold starts and warm invocations rotate
through the configurations, so that the machine's drift hits all three alike. Figures are
medians; "added" is the configuration's median minus bare's.

Layers are built as a Lambda layer build would: copied into a temporary directory and compiled
to .pyc, and the runtime reads that bytecode and writes none (on Lambda /opt and /var/task are
read-only). Otherwise every cold start would compile the instrumentation's modules first.

`--function api` runs the same handler with its work in a span of the OpenTelemetry API (the
function imports opentelemetry-api at init and sets up no SDK), in every configuration: what the
API costs the function itself shows in bare's figures, what serving it costs in the others'.
`--instrumentations NAMES` sets OTEL_PYTHON_ENABLED_INSTRUMENTATIONS for coldtail's configuration.
`--baseline DIR` adds a configuration "baseline": the `instrumentation` package found in DIR (a
copy of another version of the tree) set up as coldtail's is, taking its turns with the others,
so that the two versions are compared under the same drift.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import importlib.metadata
import importlib.util
import shutil
import statistics
import sysconfig
import tempfile
import time
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collector.core.pdata import get_attr, resources
from collector.core.signals import Signal
from emulator import InvocationResult, LambdaEmulator, Status
from tests.support.backend import Backend, Request

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HANDLER = "app.handler"
FUNCTIONS = ("plain", "api")

# The function for --function api: bench/lambda_function/app.py (as plain_app) inside a span.
API_FUNCTION = """
from opentelemetry import trace

import plain_app

tracer = trace.get_tracer("bench.function")


def handler(event, context):
    with tracer.start_as_current_span("answer"):
        return plain_app.handler(event, context)
"""

EVENT = {
    "version": "2.0",
    "routeKey": "GET /orders/{id}",
    "rawPath": "/orders/42",
    "rawQueryString": "",
    "headers": {"host": "api.example.com", "user-agent": "bench", "accept": "application/json"},
    "pathParameters": {"id": "42"},
    "requestContext": {
        "accountId": "123456789012",
        "apiId": "api",
        "domainName": "api.example.com",
        "http": {
            "method": "GET",
            "path": "/orders/42",
            "protocol": "HTTP/1.1",
            "sourceIp": "192.0.2.1",
            "userAgent": "bench",
        },
        "requestId": "bench",
        "routeKey": "GET /orders/{id}",
        "stage": "$default",
        "time": "29/Nov/2026:12:00:00 +0000",
        "timeEpoch": 1795953600000,
    },
    "isBase64Encoded": False,
}


@dataclass
class Configuration:
    """One way of running the function; `name` is also its function (and service) name."""

    name: str
    exec_wrapper: Path | None = None
    layer_sources: tuple[Path, ...] = ()  # files and packages copied into the layer
    env: dict[str, str] = field(default_factory=dict)
    layer: Path | None = None  # the built layer directory
    cold_ms: list[float] = field(default_factory=list)
    init_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    invoked: int = 0  # every invocation, those not measured included


def peer_available() -> bool:
    """Whether the packages the peer's layer ships are installed (they are the bench extra)."""
    modules = (
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.http",
        "opentelemetry.instrumentation.aws_lambda",
        "opentelemetry.propagators.aws",
    )
    try:
        return all(importlib.util.find_spec(module) is not None for module in modules)
    except ModuleNotFoundError:
        return False


def configurations(endpoint: str, with_peer: bool, args: argparse.Namespace) -> list[Configuration]:
    # As on Lambda, where /var/task and /opt are read-only: the runtime writes no bytecode.
    common = {"PYTHONDONTWRITEBYTECODE": "1"}
    exporting = {**common, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    coldtail_env = dict(exporting)
    if args.instrumentations:
        coldtail_env["OTEL_PYTHON_ENABLED_INSTRUMENTATIONS"] = args.instrumentations
    trees = {"coldtail": ROOT}
    if args.baseline:
        trees["baseline"] = args.baseline
    configs = [Configuration("bare", env=common)]
    for name, tree in trees.items():
        package = tree / "instrumentation"
        configs.append(
            Configuration(
                name,
                exec_wrapper=package / "bin" / "coldtail-instrument",
                layer_sources=(package,),
                env=coldtail_env,
            )
        )
    if with_peer:
        configs.append(
            Configuration(
                "peer",
                exec_wrapper=BENCH / "lambda_peer" / "otel-instrument",
                layer_sources=(BENCH / "lambda_peer" / "otel_wrapper.py",),
                env=exporting,
            )
        )
    return configs


def build(directory: Path, sources: tuple[Path, ...]) -> Path:
    """Copy `sources` into `directory` and compile them, as a layer (or deployment package)
    build does; returns `directory`."""
    directory.mkdir(parents=True)
    for source in sources:
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "bin")
            shutil.copytree(source, directory / source.name, ignore=ignore)
        else:
            shutil.copy2(source, directory / source.name)
    compile_tree(directory)
    return directory


def build_function(directory: Path, function: str) -> Path:
    """The function's code, for --function `function`."""
    if function == "plain":
        return build(directory, (BENCH / "lambda_function" / "app.py",))
    directory.mkdir(parents=True)
    shutil.copy2(BENCH / "lambda_function" / "app.py", directory / "plain_app.py")
    (directory / "app.py").write_text(API_FUNCTION)
    compile_tree(directory)
    return directory


def compile_tree(directory: Path | str) -> None:
    if not compileall.compile_dir(str(directory), quiet=1):
        raise RuntimeError(f"could not compile {directory}")


def emulator(config: Configuration, code: Path) -> LambdaEmulator:
    return LambdaEmulator(
        HANDLER,
        code,
        env=config.env,
        exec_wrapper=config.exec_wrapper,
        layers=[config.layer] if config.layer else [],
        function_name=config.name,
        timeout=10,
        init_timeout=30,
    )


def checked(config: Configuration, result: InvocationResult) -> InvocationResult:
    config.invoked += 1
    if result.status is not Status.SUCCESS or result.payload.get("statusCode") != 200:
        raise RuntimeError(f"{config.name}: invocation failed: {result.status} {result.payload}")
    return result


async def cold_start(config: Configuration, code: Path) -> InvocationResult:
    """One invocation in a fresh execution environment, shut down afterwards."""
    async with emulator(config, code) as fn:
        result = checked(config, await fn.invoke(EVENT))
    if not result.cold or result.init_duration_ms is None:
        raise RuntimeError(f"{config.name}: the first invocation was not a cold start")
    return result


def record_cold_start(config: Configuration, result: InvocationResult) -> None:
    config.init_ms.append(result.init_duration_ms)
    config.first_ms.append(result.duration_ms)
    config.cold_ms.append(result.init_duration_ms + result.duration_ms)


async def warm_invocations(configs: list[Configuration], code: Path, count: int) -> None:
    """`count` warm invocations per configuration, in one environment each, taking turns."""
    async with AsyncExitStack() as stack:
        functions = [await stack.enter_async_context(emulator(c, code)) for c in configs]
        for config, fn in zip(configs, functions, strict=True):
            checked(config, await fn.invoke(EVENT))  # the cold start: not a warm figure
        for _ in range(count):
            for config, fn in zip(configs, functions, strict=True):
                result = checked(config, await fn.invoke(EVENT))
                config.warm_ms.append(result.duration_ms)


class Received:
    """What the backend accepted, per service name: export requests, spans, and invocation
    spans (kind SERVER, as both instrumentations make an API Gateway invocation's span)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.spans: Counter[str] = Counter()
        self.invocation_spans: Counter[str] = Counter()

    def __call__(self, request: Request) -> None:
        for resource in resources(request.batch):
            service = get_attr(resource.resource.attributes, "service.name", "")
            self.requests[service] += 1
            if request.signal is not Signal.TRACES:
                continue
            for scope in resource.scope_spans:
                self.spans[service] += len(scope.spans)
                self.invocation_spans[service] += sum(
                    span.kind == Span.SPAN_KIND_SERVER for span in scope.spans
                )


async def measure(args: argparse.Namespace, with_peer: bool) -> tuple[list, Received]:
    cold_starts, warm = args.cold_starts, args.warm
    received = Received()
    async with Backend(on_accept=received) as backend:
        configs = configurations(backend.http_endpoint, with_peer, args)
        with tempfile.TemporaryDirectory(prefix="coldtail-bench-lambda-") as tmp:
            code = build_function(Path(tmp) / "function", args.function)
            for config in configs:
                if config.layer_sources:
                    config.layer = build(Path(tmp) / "layers" / config.name, config.layer_sources)
            # The SDK, awslambdaric and the rest are in site-packages: make sure their bytecode
            # is there too (pip compiles at install, unless told not to). A file that does not
            # compile there is one no configuration imports.
            compileall.compile_dir(sysconfig.get_paths()["purelib"], quiet=2)

            # One round first, not counted: it loads the files into the page cache.
            for config in configs:
                await cold_start(config, code)
            for _ in range(cold_starts):
                for config in configs:
                    record_cold_start(config, await cold_start(config, code))
            await warm_invocations(configs, code, warm)
    return configs, received


def report(configs: list[Configuration], received: Received, command: str, seconds: float) -> None:
    median = statistics.median
    bare = configs[0]
    bare_cold, bare_warm = median(bare.cold_ms), median(bare.warm_ms)
    print(
        "lambda_overhead: trivial API Gateway v2 handler in the local Lambda emulator, "
        f"{len(bare.cold_ms)} cold starts and {len(bare.warm_ms)} warm invocations per "
        f"configuration; medians in ms ({seconds:.0f} s: {command})"
    )
    header = (
        f"  {'configuration':<14}{'init':>8}{'1st invoke':>12}{'cold start':>12}"
        f"{'added':>8}{'warm':>8}{'added':>8}{'spans':>7}{'requests':>10}"
    )
    print(header)
    added: dict[str, tuple[float, float]] = {}
    for config in configs:
        cold, warm = median(config.cold_ms), median(config.warm_ms)
        added[config.name] = (cold - bare_cold, warm - bare_warm)
        instrumented = config is not bare
        print(
            f"  {config.name:<14}{median(config.init_ms):>8.1f}{median(config.first_ms):>12.1f}"
            f"{cold:>12.1f}{added[config.name][0] if instrumented else 0:>8.1f}"
            f"{warm:>8.2f}{added[config.name][1] if instrumented else 0:>8.2f}"
            f"{received.spans[config.name]:>7}{received.requests[config.name]:>10}"
        )
    print(
        "  cold start = init + 1st invoke; added = minus bare; layers and function compiled to "
        ".pyc, read by runtimes that write none"
    )
    if "peer" in added:
        (ours_cold, ours_warm), (peer_cold, peer_warm) = added["coldtail"], added["peer"]
        print(
            f"  coldtail's added cold start is {percent(ours_cold, peer_cold)} of the peer's "
            f"(target: under 20%); its added warm time is {percent(ours_warm, peer_warm)}"
        )
        print(f"  peer: opentelemetry-lambda layer's wrapper with {peer_versions()}")
    else:
        print(
            "  peer: skipped (pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http"
            " opentelemetry-instrumentation-aws-lambda opentelemetry-propagator-aws-xray)"
        )


def peer_versions() -> str:
    packages = ("opentelemetry-sdk", "opentelemetry-instrumentation-aws-lambda")
    return ", ".join(f"{package} {importlib.metadata.version(package)}" for package in packages)


def percent(ours: float, theirs: float) -> str:
    return f"{100 * ours / theirs:.0f}%" if theirs > 0 else "n/a (the peer added nothing)"


def verify(configs: list[Configuration], received: Received) -> None:
    """Every instrumented invocation must have exported its span, and bare none."""
    for config in configs[1:]:
        if received.invocation_spans[config.name] != config.invoked:
            raise RuntimeError(
                f"{config.name}: the backend received {received.invocation_spans[config.name]} "
                f"invocation spans for {config.invoked} invocations"
            )
    if received.spans["bare"]:
        raise RuntimeError("bare: spans arrived from the uninstrumented function")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lambda_overhead", description=__doc__)
    parser.add_argument("--cold-starts", type=int, default=30, help="per configuration")
    parser.add_argument("--warm", type=int, default=500, help="warm invocations per configuration")
    parser.add_argument(
        "--function", choices=FUNCTIONS, default="plain", help="api: its work in an API span"
    )
    parser.add_argument(
        "--instrumentations",
        default="",
        help="OTEL_PYTHON_ENABLED_INSTRUMENTATIONS for coldtail (e.g. requests)",
    )
    parser.add_argument(
        "--baseline", type=Path, help="a tree whose instrumentation package runs as 'baseline'"
    )
    args = parser.parse_args(argv)
    with_peer = peer_available()
    command = (
        f"{parser.prog} --cold-starts {args.cold_starts} --warm {args.warm} "
        f"--function {args.function}"
    )
    if args.instrumentations:
        command += f" --instrumentations {args.instrumentations}"
    if args.baseline:
        command += f" --baseline {args.baseline}"
    started = time.monotonic()
    configs, received = asyncio.run(measure(args, with_peer))
    verify(configs, received)
    report(configs, received, command, time.monotonic() - started)


if __name__ == "__main__":
    main()
