"""The ``infworld`` command line.

Each command group lives in its own module under ``infworld/cli/`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` (called with the parsed
namespace, returns an exit code). Heavy imports (torch, environments) happen inside the
handlers so that ``infworld --help`` stays fast.

Library code raises :class:`infworld.errors.InfWorldError`; this is the only place that turns
those into a one-line message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from infworld.errors import InfWorldError

# Command modules, in the order they appear in --help.
COMMAND_MODULES = ["collect", "data", "train", "export", "rollout", "bench", "probe", "play"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infworld",
        description="Interactive, action-conditioned video world models with long-horizon memory.",
    )
    from infworld import __version__

    parser.add_argument("--version", action="version", version=f"infworld {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"infworld.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except InfWorldError as exc:
        print(f"infworld {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"infworld {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
