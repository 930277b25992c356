"""CPU per request of the OTLP/gRPC receiving side alone: grpcio's aio server against
collector.core.grpc_server, each in its own process on uvloop, each parsing every request
(as the otlp receiver does) and answering it empty. The throughput benchmark's requests
(100 spans, a Lambda resource) and client, 4 in flight; servers alternate, A B A B.

    python -m bench.grpc_server [--rounds N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import subprocess
import sys

import psutil

from bench.throughput import Client, lambda_request
from tests.support.process import free_port

SERVERS = ("grpcio", "coldtail")
_TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def serve(kind: str, port: int) -> None:
    """Run one server until killed, printing "ready" once it listens."""
    import uvloop

    from collector.core.pdata import REQUEST_TYPES, RESPONSE_TYPES, check_ids
    from collector.core.signals import Signal

    request_type, response = REQUEST_TYPES[Signal.TRACES], RESPONSE_TYPES[Signal.TRACES]()

    def parse(data: bytes) -> None:
        check_ids(request_type.FromString(data), data)

    async def grpcio() -> None:
        import grpc

        async def export(data: bytes, context) -> bytes:
            parse(data)
            return response.SerializeToString()

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.unary_unary_rpc_method_handler(export)
        service, method = _TRACES[1:].split("/")
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    async def coldtail() -> None:
        from collector.core.grpc_server import Call, GrpcServer, Listener, ServerLimits

        async def export(call: Call) -> bytes:
            parse(call.message)
            return response.SerializeToString()

        log, listener = logging.getLogger("bench"), Listener(f"127.0.0.1:{port}")
        await GrpcServer({_TRACES: export}, ServerLimits(), log, listener).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(grpcio() if kind == "grpcio" else coldtail())


async def cpu_per_request(kind: str, requests: list[bytes]) -> float:
    """Microseconds of the server process's CPU per request, after a warm-up."""
    port = free_port()
    command = [sys.executable, "-m", "bench.grpc_server", "--serve", kind, str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        server = psutil.Process(process.pid)
        async with Client("grpc", port, 0) as client:
            await client.saturate(requests[:100])
            before = sum(server.cpu_times()[:2])
            await client.saturate(requests)
            return (sum(server.cpu_times()[:2]) - before) / len(requests) * 1e6
    finally:
        process.kill()
        process.wait()


async def compare(rounds: int, count: int) -> dict[str, list[float]]:
    rng = random.Random(1)
    requests = [lambda_request(rng) for _ in range(count)]
    results: dict[str, list[float]] = {kind: [] for kind in SERVERS}
    for _ in range(rounds):
        for kind in SERVERS:
            results[kind].append(await cpu_per_request(kind, requests))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    results = asyncio.run(compare(args.rounds, args.requests))
    print(f"CPU per 100-span request, {args.rounds} alternations of {args.requests} requests")
    print(f"{'server':<10} {'median us':>10}  all")
    for kind, values in results.items():
        print(f"{kind:<10} {statistics.median(values):>10.0f}  {[round(v) for v in values]}")
    ratio = statistics.median(results["coldtail"]) / statistics.median(results["grpcio"])
    print(f"coldtail / grpcio: {ratio:.2f}")


if __name__ == "__main__":
    main()
