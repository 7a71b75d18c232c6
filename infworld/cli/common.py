"""Flag checks shared by the commands: integer ranges named by the flag typed, and ``--device``.

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


def check_device(device: str) -> str:
    """``device`` when torch can use it here; ConfigError naming it otherwise.

    Loading a model onto a missing accelerator fails deep inside torch with messages such as
    "pin_memory=True requires a CUDA or other accelerator backend"; this says what is wrong instead.
    """
    import torch

    known = "expected cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {device!r}: not a torch device ({known})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else f"torch {torch.__version__} sees no CUDA GPU")
            raise ConfigError(f"--device {device}: CUDA is not available ({why}); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s), "
                              f"cuda:0..cuda:{count - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device {device}: unsupported device type {dev.type!r} ({known})")
    return device
