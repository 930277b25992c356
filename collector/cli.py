"""Command line: coldtail run | validate | components | lambda-extension | emulate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from importlib import resources

from collector.core.component import Kind
from collector.core.config import ConfigError, ConfigIssue, ServiceConfig, validate
from collector.core.confmap import ConfmapError, load
from collector.core.telemetry import setup_logging
from collector.registry import registry

EXIT_INVALID = 2
log = logging.getLogger("coldtail")


def default_config_path() -> str:
    """The embedded default pipeline (the same file as config/default.yaml)."""
    return str(resources.files("collector") / "default.yaml")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="config source (file path, file:PATH or yaml:INLINE); repeat to "
        "merge in order. Default: the embedded default pipeline.",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. processors::batch::timeout=2s "
        "(a.b.c=value also works); applied after all --config",
    )


def _load(args) -> ServiceConfig | None:
    """The validated config, or None after printing every error to stderr."""
    errors: list[ConfmapError] | list[ConfigIssue]
    try:
        return validate(load(args.config or [default_config_path()], args.set), registry())
    except ConfmapError as e:
        errors = [e]
    except ConfigError as e:
        errors = e.errors
    print(
        f"invalid configuration ({len(errors)} error{'s' * (len(errors) != 1)}):", file=sys.stderr
    )
    for error in errors:
        print(f"  {error}", file=sys.stderr)
    return None


def cmd_validate(args) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration is valid")
    return 0


def cmd_run(args) -> int:
    from collector.core.service import Service  # keeps `validate` and `components` light

    config = _load(args)
    if config is None:
        return EXIT_INVALID
    logs = config.telemetry.logs
    setup_logging(logs.level, logs.encoding)
    for warning in config.warnings:
        log.warning(str(warning))
    try:
        asyncio.run(Service(config).run())
    except RuntimeError as e:
        log.error(str(e))
        return 1
    return 0


def cmd_components(_args) -> int:
    for kind in Kind:
        print(f"{kind.section}:")
        for factory in registry().factories(kind):
            if kind is Kind.CONNECTOR:
                signals = ", ".join(
                    f"{i}->{o}: {st}"
                    for i, outs in factory.signals.items()
                    for o, st in outs.items()
                )
            else:
                signals = ", ".join(f"{s}: {st}" for s, st in factory.signals.items())
            aliases = f" (alias {', '.join(factory.aliases)})" if factory.aliases else ""
            print(f"  {factory.type}{aliases}")
            if signals:
                print(f"    signals: {signals}")
            if factory.description:
                print(f"    {factory.description}")
    return 0


def cmd_lambda_extension(_args) -> int:
    from collector.awslambda.extension.extension import main as extension

    return extension()


def cmd_emulate(argv: list[str]) -> int:
    from emulator.__main__ import main as emulate

    return emulate(argv, prog="coldtail emulate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coldtail", description="coldtail collector")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the collector")
    _add_config_args(run)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("validate", help="check a config; exit 2 listing every error")
    _add_config_args(check)
    check.set_defaults(func=cmd_validate)
    comps = sub.add_parser("components", help="list component types, signals and stability")
    comps.set_defaults(func=cmd_components)
    ext = sub.add_parser(
        "lambda-extension",
        help="run as an AWS Lambda extension (config from "
        "COLDTAIL_CONFIG, default /opt/config/lambda-extension.yaml)",
    )
    ext.set_defaults(func=cmd_lambda_extension)
    sub.add_parser(
        "emulate",
        add_help=False,
        help="invoke a Lambda handler locally in real runtime processes (coldtail emulate --help)",
    )
    # Listed for help only: main() hands `emulate` and all that follows to the emulator's own
    # parser, which argparse subcommands cannot forward options to.
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["emulate"]:
        return cmd_emulate(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
