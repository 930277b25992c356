"""Command line: coldtail run | validate | components | print-config | version |
lambda-extension | emulate.

As `otelcol`, `coldtail --config FILE [--set KEY=VALUE]` without a command runs the collector,
and `coldtail --version` prints the version. Exit codes: 0, 2 for a bad command line or config,
1 for a failure at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from inspect import isclass
from typing import Any

import yaml
from pydantic import BaseModel, SecretBytes, SecretStr

from collector.core.component import Kind, Registry, Stability
from collector.core.config import ConfigError, ConfigIssue, ServiceConfig, ServiceModel, validate
from collector.core.confmap import ConfmapError, load
from collector.core.signals import Signal
from collector.core.telemetry import coldtail_version, setup_logging
from collector.registry import registry

EXIT_INVALID = 2
EXIT_FAILED = 1
log = logging.getLogger("coldtail")

# What configopaque strings print as in the OTel Collector's print-config.
REDACTED = "[REDACTED]"
_DEFAULT_SOURCE = "the embedded default (config/default.yaml)"


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


def _print_errors(errors: list[ConfmapError] | list[ConfigIssue]) -> None:
    count = f"{len(errors)} error{'s' * (len(errors) != 1)}"
    print(f"invalid configuration ({count}):", file=sys.stderr)
    for error in errors:
        print(f"  {error}", file=sys.stderr)


def _raw(args) -> dict | None:
    """The merged config tree of the sources and --set, or None after printing the error."""
    try:
        return load(args.config or [default_config_path()], args.set)
    except ConfmapError as e:
        _print_errors([e])
        return None


def _validated(tree: dict) -> ServiceConfig | None:
    """The validated config, or None after printing every error to stderr."""
    try:
        return validate(tree, registry())
    except ConfigError as e:
        _print_errors(e.errors)
        return None


def _load(args) -> ServiceConfig | None:
    tree = _raw(args)
    return None if tree is None else _validated(tree)


def _overrides(args) -> list[str]:
    """The keys --set changed, for the banner: not their values, which may be secrets."""
    return [s.partition("=")[0] for s in args.set]


def cmd_validate(args) -> int:
    config = _load(args)
    if config is None:
        return EXIT_INVALID
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration is valid")
    return 0


def cmd_run(args) -> int:
    from collector.core.service import Service  # keeps the other commands light

    config = _load(args)
    if config is None:
        return EXIT_INVALID
    logs = config.telemetry.logs
    setup_logging(logs.level, logs.encoding)
    for warning in config.warnings:
        log.warning(str(warning))
    service = Service(config, args.config or [_DEFAULT_SOURCE], _overrides(args))
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(service.run())
    except RuntimeError as e:
        log.error(str(e))
        return EXIT_FAILED
    return 0


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else None (asyncio's own). The collector's
    work is mostly event loop callbacks and tasks (gRPC's server makes three tasks a request),
    which uvloop runs in C: about 6% less CPU per span on otlp -> batch -> otlp over gRPC
    (bench.throughput). The Lambda extension keeps asyncio's loop: uvloop's 14 MB and ~50 ms of
    import would weigh on the layer and on every cold start."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def cmd_version(_args) -> int:
    print(f"coldtail version {coldtail_version()}")
    return 0


# --- components -------------------------------------------------------------------------------


def _stability(level: Stability | None) -> str:
    # The Collector's spelling: Alpha, Beta, ...; Undefined for a signal not supported.
    return level.value.capitalize() if level is not None else "Undefined"


def _component(factory) -> dict[str, Any]:
    if factory.kind is Kind.EXTENSION:
        stability = {"extension": "Undefined"}  # coldtail's extensions declare no level
    elif factory.kind is Kind.CONNECTOR:
        stability = {
            f"{i}-to-{o}": _stability(factory.signals.get(i, {}).get(o))
            for i in Signal
            for o in Signal
        }
    else:
        stability = {s.value: _stability(factory.signals.get(s)) for s in Signal}
    entry: dict[str, Any] = {"name": factory.type, "module": factory.create.__module__}
    if factory.aliases:
        entry["aliases"] = list(factory.aliases)
    entry["stability"] = stability
    return entry


def components_document() -> dict[str, Any]:
    """What `otelcol components` prints, for coldtail: build info, then every component type
    with its stability per signal (per signal pair for connectors), then the config
    providers."""
    document: dict[str, Any] = {
        "buildinfo": {
            "command": "coldtail",
            "description": "coldtail collector",
            "version": coldtail_version(),
        }
    }
    for kind in Kind:
        document[kind.section] = [_component(f) for f in registry().factories(kind)]
    document["providers"] = [
        {"scheme": scheme, "module": "collector.core.confmap"} for scheme in ("env", "file", "yaml")
    ]
    return document


def _print_components_text() -> None:
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


def cmd_components(args) -> int:
    if args.format == "text":
        _print_components_text()
    else:
        _print_document(components_document(), args.format)
    return 0


def _print_document(document: dict, form: str) -> None:
    if form == "json":
        print(json.dumps(document, indent=2, default=str))
    else:
        print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), end="")


# --- print-config -----------------------------------------------------------------------------

# Words of keys whose values are secrets, matched in the key's letters and digits alone
# (`X-Api-Key` is `xapikey`), in any component, header map or block.
_SECRET_WORDS = re.compile(
    r"password|passwd|secret|token|apikey|authorization|credential|cookie|privatekey|"
    r"accesskey|sessionkey|signature|keypem"
)
# ... unless the key names where a secret is rather than the secret: a file, a URL, a header.
_NOT_SECRET_ENDS = re.compile(r"(file|filename|path|dir|url|uri|endpoint|header|scheme|type|id)$")
# The password of a URL's user information: scheme://user:password@host.
_URL_PASSWORD = re.compile(r"(?<=://)([^/@:\s]*):[^/@\s]+@")


def _secret_key(key: object) -> bool:
    letters = re.sub(r"[^a-z0-9]", "", str(key).lower())
    return bool(_SECRET_WORDS.search(letters)) and not _NOT_SECRET_ENDS.search(letters)


def _mask(value: Any) -> Any:
    """Every scalar in `value` redacted; empty and null ones stay as they are."""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if value is None or value == "" or isinstance(value, bool):
        return value
    return REDACTED


def _by_type(value: Any, annotation: Any) -> Any:
    """`value` (raw config) with what its model types as a secret (SecretStr) redacted."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _by_type(value, args[0])
    if annotation in (SecretStr, SecretBytes):
        return _mask(value)
    if args and origin in (typing.Union, types.UnionType):
        for member in args:
            value = _by_type(value, member)
        return value
    if isinstance(value, list) and origin in (list, tuple, set, frozenset, Sequence) and args:
        return [_by_type(v, args[0]) for v in value]
    if isinstance(value, dict) and origin in (dict, Mapping) and len(args) == 2:
        return {k: _by_type(v, args[1]) for k, v in value.items()}
    if isinstance(value, dict) and isclass(annotation) and issubclass(annotation, BaseModel):
        fields = {f.alias or n: f for n, f in annotation.model_fields.items()}
        return {
            k: _by_type(v, fields[k].annotation) if k in fields else v for k, v in value.items()
        }
    return value


def _by_key(value: Any, key: object = None) -> Any:
    """`value` with secrets found by name redacted: values of secret-looking keys, the value
    of a `{key: Authorization, value: ...}` pair, a URL's password."""
    if isinstance(value, dict):
        out = {k: _by_key(v, k) for k, v in value.items()}
        if _secret_key(value.get("key", "")):  # headers_setter's list of {key, value}
            for name in ("value", "default_value"):
                if name in out:
                    out[name] = _mask(out[name])
        return out
    if isinstance(value, list):
        return [_by_key(v, key) for v in value]
    if key is not None and _secret_key(key):
        return _mask(value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1:{REDACTED}@", value)
    return value


def redact(tree: dict, components: Registry) -> dict:
    """The raw config `tree` with its secrets replaced by [REDACTED]: what the component models
    type as secrets (SecretStr), and what names say is one (see _by_key)."""
    out = dict(tree)
    for kind in Kind:
        section = out.get(kind.section)
        if not isinstance(section, dict):
            continue
        typed = {}
        for cid, cfg in section.items():
            try:
                factory = components.get(kind, str(cid).split("/", 1)[0])
            except (ImportError, ValueError):
                factory = None
            typed[cid] = _by_type(cfg, factory.config) if factory is not None else cfg
        out[kind.section] = typed
    if isinstance(out.get("service"), dict):
        out["service"] = _by_type(out["service"], ServiceModel)
    return _by_key(out)


def cmd_print_config(args) -> int:
    tree = _raw(args)
    if tree is None:
        return EXIT_INVALID
    if args.validate and _validated(tree) is None:
        return EXIT_INVALID
    _print_document(redact(tree, registry()) if args.mode == "redacted" else tree, args.format)
    return 0


# --- the rest ---------------------------------------------------------------------------------


def cmd_lambda_extension(_args) -> int:
    from collector.awslambda.extension.extension import main as extension

    return extension()


def cmd_emulate(argv: list[str]) -> int:
    from emulator.__main__ import main as emulate

    return emulate(argv, prog="coldtail emulate")


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coldtail",
        description="coldtail collector. As with otelcol, `coldtail --config FILE [--set "
        "KEY=VALUE]` without a command is `coldtail run`.",
    )
    parser.add_argument(
        "--version", action="version", version=f"coldtail version {coldtail_version()}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: list[tuple[str, str, Callable]] = [
        ("run", "run the collector", cmd_run),
        ("validate", "check a config; exit 2 listing every error", cmd_validate),
        (
            "print-config",
            "print the effective config (sources merged, ${env:...} expanded, --set applied), "
            "secrets redacted",
            cmd_print_config,
        ),
    ]
    for name, help_text, func in commands:
        aliases = ["print-initial-config"] if name == "print-config" else []
        command = sub.add_parser(name, help=help_text, aliases=aliases)
        _add_config_args(command)
        command.set_defaults(func=func)
    printer = sub.choices["print-config"]
    printer.add_argument(
        "--mode",
        choices=["redacted", "unredacted"],
        default="redacted",
        help="redacted (default): secrets print as [REDACTED]; unredacted: as they are",
    )
    printer.add_argument("--format", choices=["yaml", "json"], default="yaml")
    printer.add_argument(
        "--validate",
        type=_boolean,
        nargs="?",
        const=True,
        default=True,
        metavar="true|false",
        help="refuse an invalid config, listing its errors (default true)",
    )
    comps = sub.add_parser(
        "components", help="list component types and their stability per signal (YAML)"
    )
    comps.add_argument(
        "--format",
        choices=["yaml", "json", "text"],
        default="yaml",
        help="yaml (default) as otelcol components prints it, json, or text to read",
    )
    comps.set_defaults(func=cmd_components)
    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
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


def _complete(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete, when the shell asks for it (it sets _ARGCOMPLETE)
    and argcomplete is installed; see `register-python-argcomplete coldtail`."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    _complete(parser)
    if not argv:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    if argv[:1] == ["emulate"]:
        return cmd_emulate(argv[1:])
    if argv and argv[0].split("=", 1)[0] in ("--config", "--set"):
        argv = ["run", *argv]  # otelcol's form: the flags alone run the collector
    try:
        args = parser.parse_args(argv)
        return args.func(args)
    except KeyboardInterrupt:
        # Ctrl-C before the service handles signals itself: while loading, say.
        print("interrupted", file=sys.stderr)
        return 128 + 2
    except BrokenPipeError:
        # The reader of the output went away (`coldtail components | head`): not an error
        # worth a traceback; stdout is pointed at nothing so that closing it cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
