"""Loading slim inference exports: ``MODEL_DIR/model.safetensors`` + ``MODEL_DIR/config.json``.

As in diffusers' ``from_pretrained``: the weights (EMA by default) in safetensors, and beside them
everything needed to rebuild the module without the training code path, the data or the recipe
file (infworld/train/export.py writes them)::

    {"format": "infworld-model", "version": 1, "task": "tokenizer",
     "model_config": task.export_config(), "recipe": {...}, "trained_steps": 3000,
     "metrics": {"psnr": 31.2, ...}, "weights": "ema",
     "files": {"model.safetensors": {"bytes": ..., "sha256": ...}}}

``config.json`` records the weights' hash, so a half-replaced export (old config, new weights) is
detected here. :func:`load_model` takes a path or the name of a shipped model under
``checkpoints/NAME/`` (or ``$INFWORLD_MODELS``). The module is rebuilt by the ``build_inference_model``
of the task that made it (the task registry, infworld/train/task.py): for ``world`` that is
:func:`infworld.models.worldnet.build_world_net`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.device import check_device
from infworld.errors import CheckpointError, ConfigError
from infworld.train.recipe import repo_root

FORMAT = "infworld-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MODELS_ENV = "INFWORLD_MODELS"


def file_digest(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def models_dirs() -> list[Path]:
    """Folders holding shipped/named models: ``$INFWORLD_MODELS`` entries, then ``checkpoints/``."""
    dirs = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p]
    return dirs + [repo_root() / "checkpoints"]


def list_models() -> list[str]:
    names = {p.parent.name for d in models_dirs() if d.is_dir() for p in d.glob(f"*/{CONFIG}")}
    return sorted(names)


def resolve_model_dir(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.name == CONFIG and path.is_file():
        return path.parent
    text = str(name_or_path)
    if "/" not in text and os.sep not in text:
        for d in models_dirs():
            if (d / text).is_dir():
                return d / text
    raise CheckpointError(f"model {text!r} not found: not a folder, and not a known model name; known "
                          f"models: {list_models()} (in {[str(d) for d in models_dirs()]})")


def read_export_json(cpath: Path, fmt: str, what: str, hint: str = "") -> dict[str, Any]:
    """The config.json at ``cpath`` of an export whose ``format`` must be ``fmt``; ``what`` names the
    kind of export in errors ("infworld model", "crafter probe"...), ``hint`` says how to make one."""
    try:
        config = json.loads(cpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cpath}: cannot read the {what} config ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != fmt:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{cpath}: not a{'n' if what[:1] in 'aeiou' else ''} {what} export (expected "
                              f"format {fmt!r}, got {got!r})" + (f"; {hint}" if hint else ""))
    return config


def read_model_config(model_dir: Path) -> dict[str, Any]:
    cpath = model_dir / CONFIG
    if not cpath.is_file():
        raise CheckpointError(f"{cpath}: missing (an export needs {CONFIG} beside {WEIGHTS})")
    config = read_export_json(cpath, FORMAT, "infworld model")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{cpath}: export version {config.get('version')!r} (expected {VERSION})")
    for key in ("task", "model_config"):
        if key not in config:
            raise CheckpointError(f"{cpath}: missing key {key!r}")
    return config


def build_exported(task: str, model_config: dict[str, Any]) -> nn.Module:
    """The untrained module of an export of ``task`` (its ``build_inference_model``); ConfigError
    for an unknown task."""
    from infworld.train.task import get_task  # the registry; importing it registers the built-in tasks

    _, task_cls = get_task(task)
    return task_cls.build_inference_model(model_config)


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model in eval mode on ``map_location``; returns ``(module, config.json)``.

    ``name_or_path`` is an export folder (or its config.json), or the name of a model under
    ``checkpoints/``. Missing, corrupt or mismatched files raise CheckpointError naming the file; a
    device that does not exist here raises DeviceError before any file is read.
    """
    check_device(map_location, what="map_location")
    model_dir = resolve_model_dir(name_or_path)
    config = read_model_config(model_dir)
    wpath = model_dir / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: missing (the export has {CONFIG} but no weights)")
    expected = (config.get("files") or {}).get(WEIGHTS)
    if expected:
        if wpath.stat().st_size != expected.get("bytes") or sha256_file(wpath) != expected.get("sha256"):
            raise CheckpointError(f"{wpath}: does not match {model_dir / CONFIG} (size/sha256 differ: "
                                  "truncated, or weights from another export)")
    try:
        model = build_exported(config["task"], config["model_config"])
    except ConfigError as exc:
        raise CheckpointError(f"{model_dir / CONFIG}: cannot rebuild the model ({exc})") from exc
    from safetensors.torch import load_model as st_load

    try:
        st_load(model, str(wpath), strict=True, device=str(torch.device(map_location)))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{wpath}: cannot load into the {config['task']!r} model of {CONFIG} "
                              f"({type(exc).__name__}: {exc})") from exc
    model.to(map_location)
    model.eval()
    return model, config
