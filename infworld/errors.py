"""Typed errors raised by library code.

Library code raises these; only :mod:`infworld.cli` turns them into one-line messages and exit
codes. Every message names the file, field or value at fault and what was expected.
"""

from __future__ import annotations


class InfWorldError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(InfWorldError):
    """An unknown recipe, an unknown override key, or a value of the wrong type or range."""


class DataError(InfWorldError):
    """A dataset, episode or input file that does not follow the episode format."""

    def __init__(self, message: str, path: str | None = None, field: str | None = None):
        where = ""
        if path is not None:
            where += f"{path}"
        if field is not None:
            where += f" [{field}]" if where else f"[{field}]"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.field = field


class DeviceError(ConfigError):
    """A torch device that does not exist here (no CUDA, no such GPU index, not a device name)."""


class EnvError(InfWorldError):
    """An unknown environment, scenario or policy, or an environment that failed to start."""


class CheckpointError(InfWorldError):
    """A checkpoint or model export that is missing, corrupt, or from an incompatible config."""


class MemoryConfigError(ConfigError):
    """A memory strategy that does not exist, has a bad budget, or lacks what it needs (e.g. poses)."""
