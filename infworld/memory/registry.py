"""Memory strategies by name: ``make_memory("window", budget=16)``.

A strategy module registers its class with :func:`register_memory`; the class names its config
dataclass (``config_class``, a :class:`~infworld.memory.base.MemoryConfig`), which is how settings
from dicts, recipes and ``--memory-opt`` flags are checked (unknown keys refused by name). The
built-in modules listed in ``_BUILTIN`` are imported on first use, so adding a strategy means adding
its file (and its name here), never touching the engine or the DiT.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from infworld.errors import MemoryConfigError
from infworld.memory.base import Memory, MemoryConfig

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
        module = importlib.import_module(f"infworld.memory.{mod}")
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


def _known(name: str) -> type[Memory]:
    _load_builtin()
    if name not in _REGISTRY:
        raise MemoryConfigError(f"unknown memory {name!r}; known memories: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def config_class(name: str) -> type[MemoryConfig]:
    """The config dataclass of strategy ``name`` (:class:`MemoryConfigError` if unknown)."""
    return _known(name).config_class


def memory_config(name: str, *layers: Mapping[str, Any] | None) -> MemoryConfig:
    """The resolved, checked config of strategy ``name``: its defaults, then each layer of settings
    (dicts from a recipe, an export, ``--memory-opt``...) over the one before."""
    cfg = config_class(name).from_dict({}, name)
    for layer in layers:
        if layer:
            cfg = cfg.updated(layer, name)
    return cfg


def make_memory(name: str, config: MemoryConfig | None = None, **settings: Any) -> Memory:
    """Build the strategy ``name`` from its ``config`` or from keyword ``settings`` (e.g. ``budget``)."""
    cls = _known(name)
    if config is None:
        config = cls.config_class.from_dict(settings, name)
    elif settings:
        raise MemoryConfigError(f"memory {name!r}: give a config or settings, not both")
    return cls(config)


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


def pretrained_memory_config(name: str, trained: Mapping[str, Any] | None, local_window: int,
                             overrides: Mapping[str, Any] | None = None, source: str = "the model"
                             ) -> MemoryConfig:
    """The config strategy ``name`` runs with on an exported model: the model's ``local_window``; then
    the settings it was trained with (``trained[name]``, the export's ``model_config.memory``) or,
    for a strategy it was never trained with, ``plain=True`` where the strategy has that setting
    (stored frames then enter as ordinary context frames); then ``overrides``."""
    cls = config_class(name)
    cfg = cls.from_dict({"local_window": local_window}, name)
    trained = trained or {}
    if name in trained:
        try:
            cfg = cfg.updated(trained[name], name)
        except MemoryConfigError as exc:
            raise MemoryConfigError(f"{source}: the settings it was trained with for memory {name!r} "
                                    f"(model_config.memory.{name}) no longer load: {exc}") from None
    elif "plain" in cls.keys():
        cfg = cfg.updated({"plain": True}, name)
    return cfg.updated(overrides, name)
