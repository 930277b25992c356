"""What the Lambda layer costs a function: the extension's share of init, and how long the
instrumentation and the extension hold each invocation, in the local Lambda emulator.

Configurations of bench/lambda_function/app.handler (an API Gateway v2 response), each exporting
to a real OTLP/HTTP receiver on loopback (the test backend, in this process):

- bare: no instrumentation, no extension;
- direct: the layer's instrumentation (AWS_LAMBDA_EXEC_WRAPPER=<layer>/coldtail-instrument)
  exporting straight to the backend;
- layer:<strategy>: the same with the layer's extension running the collector
  (config/lambda-extension.yaml) under each COLDTAIL_FLUSH strategy: background (the default),
  end-of-invocation, age:30s and shutdown. The function exports to the extension on loopback.

Figures: init duration (Lambda's: runtime and extensions, until all ask for their first event),
"response" = time until the runtime posted the function's response (the caller's latency), and
"held" = the time the invocation stayed open after that until every extension asked for its
next event (billed, but not seen by the caller), for warm invocations and for the first one
after each init. Medians and p99 over the runs; the layer is built as `make layer` does.

    python -m bench.lambda_extension [--cold-starts N] [--warm N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import zipfile
from pathlib import Path

from emulator import InvocationResult, LambdaEmulator, Status
from tests.support.backend import Backend

ROOT = Path(__file__).resolve().parent.parent
CODE = ROOT / "bench" / "lambda_function"
EVENT = {
    "version": "2.0",
    "routeKey": "GET /orders/{id}",
    "rawPath": "/orders/42",
    "headers": {"host": "api.example.com"},
    "requestContext": {"http": {"method": "GET", "path": "/orders/42"}, "stage": "$default"},
}


def unpack_layer(work: Path) -> tuple[Path, int]:
    """The layer unzipped as /opt; also its zipped size in bytes."""
    sys.path.insert(0, str(ROOT / "deploy" / "lambda"))
    import build_layer

    archive = build_layer.build(work / "coldtail-layer.zip")
    opt = work / "opt"
    with zipfile.ZipFile(archive) as layer:
        for info in layer.infolist():
            Path(layer.extract(info, opt)).chmod(info.external_attr >> 16 & 0o777)
    return opt, archive.stat().st_size


STRATEGIES = ("background", "end-of-invocation", "age:30s", "shutdown")


def emulator(name: str, opt: Path, backend: Backend) -> LambdaEmulator:
    if name == "bare":
        return LambdaEmulator("app.handler", CODE)
    env = {}
    if name == "direct":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = backend.http_endpoint
        layers = [opt / "python"]
    else:
        env["COLDTAIL_BACKEND_ENDPOINT"] = backend.http_endpoint
        env["COLDTAIL_FLUSH"] = name.partition(":")[2]
        layers = [opt, opt / "python"]
    return LambdaEmulator(
        "app.handler", CODE, exec_wrapper=opt / "coldtail-instrument", layers=layers, env=env
    )


def checked(result: InvocationResult) -> InvocationResult:
    if result.status != Status.SUCCESS:
        raise RuntimeError(f"invocation failed: {result.error}")
    return result


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def held_ms(result: InvocationResult) -> float:
    return result.duration_ms - result.runtime_duration_ms


async def measure(cold_starts: int, warm: int) -> None:
    names = ["bare", "direct", *(f"layer:{strategy}" for strategy in STRATEGIES)]
    inits: dict[str, list[float]] = {n: [] for n in names}
    first_held: dict[str, list[float]] = {n: [] for n in names}
    responses: dict[str, list[float]] = {n: [] for n in names}
    held: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        opt, size = unpack_layer(Path(tmp))
        async with Backend() as backend:
            for _ in range(cold_starts):
                for name in names:
                    async with emulator(name, opt, backend) as fn:
                        first = checked(await fn.invoke(EVENT))
                        inits[name].append(first.init_duration_ms)
                        first_held[name].append(held_ms(first))
            for name in names:
                async with emulator(name, opt, backend) as fn:
                    checked(await fn.invoke(EVENT))
                    for _ in range(warm):
                        result = checked(await fn.invoke(EVENT))
                        responses[name].append(result.runtime_duration_ms)
                        held[name].append(held_ms(result))
    print(
        f"lambda_extension: {cold_starts} cold starts and {warm} warm invocations per "
        "configuration (python -m bench.lambda_extension); ms"
    )
    print(f"  layer: {size / 2**20:.1f} MiB zipped")
    print(
        "  configuration             init p50  first held p50/p99  response p50/p99"
        "  warm held p50/p99"
    )
    for name in names:
        print(
            f"  {name:<24} {statistics.median(inits[name]):9.1f} "
            f"{statistics.median(first_held[name]):10.1f} /{p99(first_held[name]):6.1f} "
            f"{statistics.median(responses[name]):9.2f} /{p99(responses[name]):6.2f} "
            f"{statistics.median(held[name]):10.2f} /{p99(held[name]):6.2f}"
        )
    layer = "layer:background"
    added = statistics.median(inits[layer]) - statistics.median(inits["direct"])
    print(
        f"  the extension adds {added:.0f} ms to init (p50); the response waits "
        f"{statistics.median(responses[layer]) - statistics.median(responses['bare']):.2f}"
        " ms longer than bare (p50)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lambda_extension")
    parser.add_argument("--cold-starts", type=int, default=10)
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args(argv)
    asyncio.run(measure(args.cold_starts, args.warm))


if __name__ == "__main__":
    main()
