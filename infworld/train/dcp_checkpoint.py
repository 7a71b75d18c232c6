"""Sharded training-state checkpoints of FSDP runs, with ``torch.distributed.checkpoint`` (DCP).

Layout of one checkpoint, ``RUN/checkpoints/step_0000500/`` (a folder)::

    .metadata, __0_0.distcp, __1_0.distcp, ...   DCP: model, optimizer, EMA params and buffers;
                                                 each rank writes the shards it holds
    meta.pt                                      the rest, as in a full-state .pt: step, task, LR
                                                 schedule, every rank's RNG states, samples seen,
                                                 metrics, EMA decay/count, the recipe (JSON)

and ``RUN/checkpoints/last.pt``, a small pointer ``{"sharded_dir": "step_0000500", "step": 500}``
so that ``load_checkpoint``/``infworld export`` find the newest one (they gather it into a full
state in one process, see :func:`load_full`).

Commit protocol: every rank writes into ``.step_0000500.tmp/``; when DCP has finished (its last
collective), rank 0 adds ``meta.pt``, renames the folder to ``step_0000500/`` and then rewrites
``last.pt``. A save interrupted at any point leaves the previous checkpoints and pointer as they
were; :func:`resume_source` takes the newest folder that has both ``.metadata`` and ``meta.pt``.
DCP reshards on load, so a run may resume on another number of ranks (not bit-exact: the per-rank
data streams restart, as with the full-state checkpoints).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.data.episode import atomic_write_bytes
from infworld.errors import CheckpointError
from infworld.train import checkpoint as ckpt
from infworld.train.distributed import DistInfo, barrier
from infworld.train.ema import EMA

META = "meta.pt"
DCP_METADATA = ".metadata"
POINTER_KEY = "sharded_dir"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def folder_name(step: int) -> str:
    return f"step_{step:07d}"


def is_complete(path: Path) -> bool:
    return path.is_dir() and (path / META).is_file() and (path / DCP_METADATA).is_file()


def latest_complete(ckpt_dir: Path) -> Path | None:
    """The complete sharded checkpoint folder with the highest step (temp folders never match)."""
    best: tuple[int, Path] | None = None
    if ckpt_dir.is_dir():
        for child in ckpt_dir.iterdir():
            m = _STEP_DIR.match(child.name)
            if m and is_complete(child) and (best is None or int(m.group(1)) > best[0]):
                best = (int(m.group(1)), child)
    return best[1] if best else None


def pointer_target(path: Path) -> Path | None:
    """The folder a ``last.pt`` pointer names, or None for a full-state file (or an unreadable one)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile):
        return None
    if isinstance(state, dict) and isinstance(state.get(POINTER_KEY), str):
        return path.parent / state[POINTER_KEY]
    return None


def resume_source(ckpt_dir: Path) -> Path | None:
    """What ``--resume`` continues from: the newest complete sharded folder, unless ``last.pt`` is a
    full-state file written after it (the run went on without FSDP); None when there is nothing."""
    folder = latest_complete(ckpt_dir)
    last = ckpt_dir / ckpt.LAST
    if not last.is_file():
        return folder
    target = pointer_target(last)
    if target is not None:
        # a pointer is rewritten after each commit, so it never names a newer folder than the scan
        return folder if folder is not None else target
    if folder is None or last.stat().st_mtime > (folder / META).stat().st_mtime:
        return last
    return folder


def _commit(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final`` (replacing an older copy of the same step)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def save_sharded(ckpt_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA,
                 meta: dict[str, Any], info: DistInfo) -> Path:
    """Write one sharded checkpoint (collective). ``meta`` holds ``step`` and the rest of the
    state (every rank passes it; rank 0's, which has every rank's RNG states, is written)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = ckpt_dir / folder_name(int(meta["step"]))
    tmp = ckpt_dir / f".{final.name}.tmp"
    if info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(info)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    ema_sd = {"params": ema.params, "buffers": ema.buffers}
    dcp.save({"model": model_sd, "optimizer": optim_sd, "ema": ema_sd}, checkpoint_id=tmp)
    if info.is_main:
        state = {"format": ckpt.FORMAT, "version": ckpt.VERSION, **meta,
                 "ema": {"decay": ema.decay, "num_updates": ema.num_updates}}
        atomic_write_bytes(tmp / META, lambda f: torch.save(state, f))
        _commit(tmp, final)
        ckpt.save_checkpoint(ckpt_dir / ckpt.LAST, {POINTER_KEY: final.name, "step": int(meta["step"])})
    barrier(info)
    return final


def read_meta(folder: Path) -> dict[str, Any]:
    """``meta.pt`` of a sharded checkpoint (no tensors of the model)."""
    if not is_complete(folder):
        raise CheckpointError(f"{folder}: not a complete sharded checkpoint (needs {META} and "
                              f"{DCP_METADATA})")
    try:
        return torch.load(folder / META, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{folder / META}: corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def load_meta(folder: Path) -> dict[str, Any]:
    """:func:`read_meta`, checked like ``load_checkpoint`` (format, version), with the recipe parsed."""
    state = read_meta(folder)
    kind = (state.get("format"), state.get("version")) if isinstance(state, dict) else None
    if kind != (ckpt.FORMAT, ckpt.VERSION):
        raise CheckpointError(f"{folder / META}: not an infworld training checkpoint {kind} (expected "
                              f"{(ckpt.FORMAT, ckpt.VERSION)})")
    try:
        return {**state, "recipe": json.loads(state["recipe"])}
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder / META}: bad recipe JSON ({exc})") from exc


def _index_keyed(optim_sd: dict[str, Any]) -> dict[str, Any]:
    """DCP's optimizer state (keyed by parameter name) -> ``Optimizer.state_dict()`` form (by index)."""
    names = [n for group in optim_sd["param_groups"] for n in group["params"]]
    index = {n: i for i, n in enumerate(names)}
    # DCP stores the group options as lists (betas): back to tuples, as Optimizer.state_dict() has them
    groups = [{**{k: tuple(v) if isinstance(v, list) else v for k, v in group.items()},
               "params": [index[n] for n in group["params"]]} for group in optim_sd["param_groups"]]
    return {"state": {index[n]: s for n, s in optim_sd["state"].items()}, "param_groups": groups}


def _name_keyed(optim_sd: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
                ) -> dict[str, Any]:
    """The inverse of :func:`_index_keyed` for this model's optimizer (same parameter order)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**group, "params": [order[i] for i in group["params"]]} for group in optim_sd["param_groups"]]
    return {"state": {order[i]: s for i, s in optim_sd["state"].items()}, "param_groups": groups}


def load_full(folder: Path) -> dict[str, Any]:
    """A sharded checkpoint gathered into one full-state dict, in the form of a ``.pt`` checkpoint
    (for ``load_checkpoint``: export, resuming without FSDP). Runs in one process, on the CPU."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    meta = read_meta(folder)
    tensors: dict[str, Any] = {}
    try:
        # as torch's own dcp_to_torch_save: an empty planner fills ``tensors`` from the metadata
        _load_state_dict(tensors, storage_reader=FileSystemReader(str(folder)),
                         planner=_EmptyStateDictLoadPlanner(), no_dist=True)
    except (Exception, CheckpointException) as exc:  # CheckpointException derives from BaseException
        raise CheckpointError(f"{folder}: cannot read the sharded checkpoint ({type(exc).__name__}: {exc})"
                              ) from exc
    ema = {**meta.get("ema", {}), **tensors["ema"]}
    return {**meta, "model": tensors["model"], "ema": ema, "optimizer": _index_keyed(tensors["optimizer"])}


def _fill(dst: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into ``dst``, which may be a DTensor shard of it."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    full = full.to(device=dst.device, dtype=dst.dtype)
    if isinstance(dst, DTensor):
        full = distribute_tensor(full, dst.device_mesh, dst.placements)
    dst.copy_(full)


@torch.no_grad()
def load_sharded(source: Path, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                 ema: EMA) -> None:
    """Load model, optimizer and EMA of a sharded model in place (collective).

    ``source`` is a sharded folder (``state`` is its meta) or a full-state ``.pt`` (``state`` is the
    loaded dict: a DDP/single-process run continued with FSDP)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

    if source.is_dir():
        model_sd, optim_sd = get_state_dict(model, optimizer)  # templates: shapes, shards, dtypes
        ema_sd = {"params": ema.params, "buffers": ema.buffers}
        target = {"model": model_sd, "optimizer": optim_sd, "ema": ema_sd}
        try:
            dcp.load(target, checkpoint_id=source)
        except CheckpointException as exc:  # a BaseException: turn it into the trainer's error type
            raise CheckpointError(f"{source}: cannot load the sharded checkpoint ({exc})") from exc
        set_state_dict(model, optimizer, model_state_dict=target["model"],
                       optim_state_dict=target["optimizer"])
        loaded_ema = target["ema"]
    else:
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=_name_keyed(state["optimizer"], model, optimizer),
                       options=StateDictOptions(full_state_dict=True))
        loaded_ema = state["ema"]
    missing = set(ema.params) ^ set(loaded_ema["params"])
    if missing:
        raise KeyError(f"EMA parameters differ from the model's: {sorted(missing)[:5]}")
    for kind in ("params", "buffers"):
        mine = getattr(ema, kind)
        for name, value in loaded_ema[kind].items():
            if name in mine and value is not mine[name]:
                _fill(mine[name], value)
    ema.num_updates = int(state["ema"]["num_updates"])
