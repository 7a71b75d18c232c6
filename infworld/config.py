"""Typed config dataclasses from plain dicts (YAML recipes, JSON checkpoints, ``--set`` overrides).

Every component keeps a config dataclass beside the code that uses it; this module is the one place
that turns untyped data into those dataclasses, checking each key and value against the
dataclass's type hints. Unknown keys and wrong types raise :class:`ConfigError` naming the dotted
key (``model.channels``), the value, what was expected and, for unknown keys, the valid ones.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Any``, ``X | None``, ``Literal``,
``tuple[T, ...]``, ``tuple[A, B]``, ``list[T]``, ``dict[str, T]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import yaml

from infworld.errors import ConfigError

T = TypeVar("T")

_NoneType = type(None)


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _as_number(value: Any, tp: type, where: str) -> Any:
    # PyYAML reads ``1e-3`` (no dot) as a string (YAML 1.1); accept numeric strings for numbers.
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected {tp.__name__}, got boolean {value!r}")
    if isinstance(value, str):
        try:
            value = float(value) if tp is float else int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected {tp.__name__}, got string {value!r}") from None
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {type(value).__name__} {value!r}")
        return value
    if not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected float, got {type(value).__name__} {value!r}")
    return float(value)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the type hint ``tp`` and convert it (list -> tuple, int -> float...)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if origin is typing.Union or origin is types.UnionType:
        if value is None and _NoneType in args:
            return None
        for arg in args:
            if arg is _NoneType:
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return build_dataclass(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp in (int, float):
        return _as_number(value, tp, where)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return str(value)
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{where}: expected a list ({_type_name(tp)}), got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items ({_type_name(tp)}), got {value!r}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping ({_type_name(tp)}), got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{where}.<key>"): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {_type_name(tp)}")  # pragma: no cover


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def build_dataclass(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, checking every key and value.

    Missing keys take the dataclass defaults. ``where`` prefixes error messages (a dotted key such
    as ``"model"``, or ``"recipe foo.yaml: model"``).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {[prefix + k for k in unknown]} for {cls.__name__}; valid keys: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field without a default is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """A JSON-able copy of a dataclass instance (tuples become lists, nested dataclasses dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``; nested mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.steps=100"`` -> ``(["train", "steps"], 100)``; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.steps=100")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {item!r}: bad key {key!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
    return keys, value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of nested dict ``data`` with each ``KEY=VALUE`` override set (missing levels created)."""
    out = deep_merge({}, data)
    for item in overrides:
        keys, value = parse_override(item)
        node = out
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, Mapping):
                raise ConfigError(f"override {item!r}: {'.'.join(keys[:i + 1])} is not a section")
            else:
                child = node[k] = dict(child)
            node = child
        node[keys[-1]] = value
    return out
