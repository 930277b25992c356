"""Invoke a Python handler in the local Lambda emulator and print each result as a JSON line;
the function's log lines go to stderr afterwards. Exits 1 when an invocation did not succeed.

    python -m emulator --handler app.handler --code DIR --event FILE
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from emulator.environment import Status
from emulator.lambda_emulator import LambdaEmulator


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


async def _run(args: argparse.Namespace) -> int:
    event = Path(args.event).read_bytes() if args.event else b"{}"
    emulator = LambdaEmulator(
        args.handler,
        args.code,
        env=dict(args.env),
        timeout=args.timeout,
        memory_mb=args.memory,
        exec_wrapper=args.wrapper,
        layers=args.layer,
        snap_start=args.snap_start,
    )
    succeeded = True
    async with emulator:
        for _ in range(args.invocations):
            result = await emulator.invoke(event)
            succeeded = succeeded and result.status == Status.SUCCESS
            print(json.dumps(dataclasses.asdict(result)), flush=True)
    for lines in emulator.log_streams.values():
        for line in lines:
            print(line, file=sys.stderr)
    return 0 if succeeded else 1


def main(argv: list[str] | None = None, prog: str = "python -m emulator") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Invoke a Python Lambda handler locally, in real runtime processes, and "
        "print each result as a JSON line.",
    )
    parser.add_argument("--handler", required=True, help="module.function, as Lambda's _HANDLER")
    parser.add_argument("--code", required=True, help="the function's code directory")
    parser.add_argument("--event", help="file holding the event (default: {})")
    parser.add_argument("--wrapper", help="AWS_LAMBDA_EXEC_WRAPPER script")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--memory", type=int, default=128, help="MB (default 128)")
    parser.add_argument("--invocations", type=int, default=1, help="how many (default 1)")
    parser.add_argument(
        "--snap-start",
        action="store_true",
        help="a version published with SnapStart: environments are restored from a snapshot",
    )
    parser.add_argument("--env", type=_variable, action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--layer",
        action="append",
        default=[],
        metavar="DIR",
        help="a layer: added to PYTHONPATH; the executables in its extensions/ are started as "
        "external extensions",
    )
    args = parser.parse_args(argv)
    if importlib.util.find_spec("awslambdaric") is None:
        # The runtime processes run this interpreter, which needs the runtime interface client.
        print(f"{prog}: needs awslambdaric: pip install 'coldtail[emulate]'", file=sys.stderr)
        return 2
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
