"""Writing slim inference exports: ``MODEL_DIR/model.safetensors`` + ``MODEL_DIR/config.json``.

:func:`export_run` turns a training run into the export that infworld/models/loading.py reads (the
format is described there): the weights (EMA by default) in safetensors, and beside them everything
needed to rebuild the module without the training code path, the data or the recipe file. Both files
are written atomically; ``config.json`` is written last and records the weights' hash, so a
half-replaced export (old config, new weights) is detected at load time.

The loading side (``load_model``, ``resolve_model_dir``, ``read_model_config``, ``list_models``,
``models_dirs`` and the file-name constants) lives in infworld/models/loading.py and is re-exported
here, so ``from infworld.train.export import load_model`` keeps working.
"""

from __future__ import annotations

import os
from pathlib import Path

from infworld.data.episode import atomic_write_json, make_shareable
from infworld.errors import CheckpointError, ConfigError
from infworld.models.loading import (  # noqa: F401 (re-exported: the loading side moved to models/)
    CONFIG,
    FORMAT,
    MODELS_ENV,
    VERSION,
    WEIGHTS,
    list_models,
    load_model,
    models_dirs,
    read_model_config,
    resolve_model_dir,
    sha256_file,
)
from infworld.train import checkpoint as ckpt
from infworld.train.recipe import recipe_from_dict
from infworld.train.task import get_task


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
    select = getattr(task_cls, "export_tensors", None)  # a task whose module holds more than it ships
    if select is not None:
        tensors = select(tensors)
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
        "files": {WEIGHTS: {"bytes": wpath.stat().st_size, "sha256": sha256_file(wpath)}},
    }
    atomic_write_json(out / CONFIG, config)
    return out
