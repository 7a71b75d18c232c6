"""Memory strategies by name: ``make_memory("window", budget=16)``.

A strategy module registers its class with :func:`register_memory`. The built-in modules listed in
``_BUILTIN`` are imported on first use; ones not written yet are skipped, so adding a strategy means
adding its file (and its name here), never touching the engine or the DiT.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from infworld.errors import MemoryConfigError
from infworld.memory.base import Memory

_BUILTIN = ("window", "full", "hpmc", "kvmemory", "vrag")
_REGISTRY: dict[str, type[Memory]] = {}
_loaded = False


def register_memory(name: str, cls: type[Memory]) -> None:
    """Make ``cls`` available as ``make_memory(name, ...)``."""
    _REGISTRY[name] = cls


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN:
        try:
            module = importlib.import_module(f"infworld.memory.{mod}")
        except ModuleNotFoundError as exc:  # a strategy not built yet
            if exc.name != f"infworld.memory.{mod}":
                raise
            continue
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, Memory) and obj is not Memory and obj.name:
                _REGISTRY.setdefault(obj.name, obj)


def memory_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def memory_class(name: str) -> type[Memory] | None:
    """The class registered as ``name`` (None if unknown)."""
    _load_builtin()
    return _REGISTRY.get(name)


def make_memory(name: str, **cfg: Any) -> Memory:
    """Build the strategy ``name`` with keyword settings ``cfg`` (e.g. ``budget``)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise MemoryConfigError(f"unknown memory {name!r}; known memories: {sorted(_REGISTRY)}")
    cls = _REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in cfg if k not in params or k == "self")
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        valid = sorted(k for k in params if k != "self")
        raise MemoryConfigError(f"memory {name!r}: unknown setting(s) {unknown}; valid: {valid}")
    return cls(**cfg)


def parse_settings(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["pool=128", "poses=dead_reckon"]`` (CLI ``--memory-opt``) -> settings; values are YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MemoryConfigError(f"memory setting {item!r}: expected KEY=VALUE (e.g. budget=8)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise MemoryConfigError(f"memory setting {item!r}: cannot parse the value ({exc})") from None
    return out
