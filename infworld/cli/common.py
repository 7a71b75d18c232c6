"""Flag checks shared by the commands: integer ranges named by the flag typed. (``--device`` is
checked by :func:`infworld.device.check_device`, the library's one device check.)

Each check raises :class:`~infworld.errors.ConfigError`; :func:`infworld.cli.main` turns it into one
line on stderr and exit code 2, before any model is loaded or file written.
"""

from __future__ import annotations

import argparse
from typing import Any

from infworld.errors import ConfigError


class TypedFlag(argparse.Action):
    """``store`` that remembers which spelling of the option was typed (``--budget`` or its alias
    ``--window``), so that an error names the flag the user wrote."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, "typed_flags", None) or {})
        typed[self.dest] = option_string
        namespace.typed_flags = typed


def flag(args: argparse.Namespace, dest: str) -> str:
    """The option as typed for ``dest`` (see :class:`TypedFlag`), else ``--dest-with-dashes``."""
    typed = getattr(args, "typed_flags", None) or {}
    return typed.get(dest) or "--" + dest.replace("_", "-")


def check_at_least(args: argparse.Namespace, lo: int, *dests: str) -> None:
    """ConfigError naming the flag when an integer option (by dest) that was given is below ``lo``."""
    for dest in dests:
        value = getattr(args, dest, None)
        if value is not None and value < lo:
            raise ConfigError(f"{flag(args, dest)}: expected an integer >= {lo}, got {value}")
