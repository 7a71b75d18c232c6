"""Slim inference exports: ``MODEL_DIR/model.safetensors`` + ``MODEL_DIR/config.json``.

As in diffusers' ``save_pretrained`` and k-diffusion's slim exports: the weights (EMA by default)
in safetensors, and beside them everything needed to rebuild the module without the training code
path, the data or the recipe file::

    {"format": "infworld-model", "version": 1, "task": "tokenizer",
     "model_config": task.export_config(), "recipe": {...}, "trained_steps": 3000,
     "metrics": {"psnr": 31.2, ...}, "weights": "ema",
     "files": {"model.safetensors": {"bytes": ..., "sha256": ...}}}

Both files are written atomically; ``config.json`` is written last and records the weights'
hash, so a half-replaced export (old config, new weights) is detected at load time.
:func:`load_model` takes a path or the name of a shipped model under ``checkpoints/NAME/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.data.episode import atomic_write_json, make_shareable
from infworld.errors import CheckpointError, ConfigError
from infworld.train import checkpoint as ckpt
from infworld.train.recipe import recipe_from_dict, repo_root
from infworld.train.task import get_task

FORMAT = "infworld-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MODELS_ENV = "INFWORLD_MODELS"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_run_checkpoint(run: str | os.PathLike) -> Path:
    """A run folder (-> its ``checkpoints/last.pt``) or a checkpoint file."""
    path = Path(run)
    if path.is_dir():
        last = ckpt.checkpoint_dir(path) / ckpt.LAST
        if not last.is_file():
            raise CheckpointError(f"{path}: no {ckpt.LAST} under checkpoints/ (is this a run folder?)")
        return last
    if path.is_file():
        return path
    raise CheckpointError(f"{path}: no such run folder or checkpoint file")


def export_run(run: str | os.PathLike, out: str | os.PathLike, weights: str = "ema") -> Path:
    """Export a training run (folder or ``.pt``) to ``out``; returns ``out``.

    ``weights="ema"`` exports the EMA of the parameters (what evaluation measured), ``"raw"`` the
    live optimizer weights.
    """
    if weights not in ("ema", "raw"):
        raise ConfigError(f"weights: expected 'ema' or 'raw', got {weights!r}")
    path = resolve_run_checkpoint(run)
    state = ckpt.load_checkpoint(path)
    try:
        recipe = recipe_from_dict(state["recipe"])
        _, task_cls = get_task(recipe.task)
        model_config = task_cls(recipe.model, recipe).export_config()
        model = task_cls.build_inference_model(model_config)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model from its recipe ({exc})") from exc
    tensors = dict(state["model"])
    if weights == "ema":
        for name, value in {**state["ema"]["params"], **state["ema"]["buffers"]}.items():
            if name in tensors:
                tensors[name] = value.to(tensors[name].dtype)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the inference model of task {recipe.task!r} "
                              f"({exc})") from exc
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_model

    tmp = out / f".{WEIGHTS}.tmp"
    try:
        save_model(model, str(tmp), metadata={"format": FORMAT, "task": recipe.task}, force_contiguous=True)
        make_shareable(tmp)
        os.replace(tmp, out / WEIGHTS)
    finally:
        if tmp.exists():
            tmp.unlink()
    wpath = out / WEIGHTS
    config = {
        "format": FORMAT,
        "version": VERSION,
        "task": recipe.task,
        "model_config": model_config,
        "recipe": state["recipe"],
        "trained_steps": int(state["step"]),
        "metrics": state.get("metrics") or {},
        "weights": weights,
        "files": {WEIGHTS: {"bytes": wpath.stat().st_size, "sha256": _sha256(wpath)}},
    }
    atomic_write_json(out / CONFIG, config)
    return out


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


def read_model_config(model_dir: Path) -> dict[str, Any]:
    cpath = model_dir / CONFIG
    if not cpath.is_file():
        raise CheckpointError(f"{cpath}: missing (an export needs {CONFIG} beside {WEIGHTS})")
    try:
        config = json.loads(cpath.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{cpath}: cannot parse JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{cpath}: not an infworld model export (format != {FORMAT!r})")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{cpath}: export version {config.get('version')!r} (expected {VERSION})")
    for key in ("task", "model_config"):
        if key not in config:
            raise CheckpointError(f"{cpath}: missing key {key!r}")
    return config


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model in eval mode on ``map_location``; returns ``(module, config.json)``.

    ``name_or_path`` is an export folder (or its config.json), or the name of a model under
    ``checkpoints/``. Missing, corrupt or mismatched files raise CheckpointError naming the file.
    """
    model_dir = resolve_model_dir(name_or_path)
    config = read_model_config(model_dir)
    wpath = model_dir / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath}: missing (the export has {CONFIG} but no weights)")
    expected = (config.get("files") or {}).get(WEIGHTS)
    if expected:
        if wpath.stat().st_size != expected.get("bytes") or _sha256(wpath) != expected.get("sha256"):
            raise CheckpointError(f"{wpath}: does not match {model_dir / CONFIG} (size/sha256 differ: "
                                  "truncated, or weights from another export)")
    try:
        _, task_cls = get_task(config["task"])
        model = task_cls.build_inference_model(config["model_config"])
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
