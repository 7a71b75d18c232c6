"""Full training-state checkpoints for exact resume (the slim inference export is in export.py).

``RUN/checkpoints/last.pt`` (and ``step_XXXXXXX.pt`` every ``train.ckpt_every`` steps) hold one
dict: model, EMA, optimizer and LR-schedule states, the step, every rank's RNG states (python,
numpy, torch CPU, CUDA, and the loss generator), the samples each rank has consumed, the last
evaluation metrics and the resolved recipe as JSON. Files are written to a temp file in the same
folder and renamed, so a crash never leaves a half-written ``last.pt``.

FSDP runs write sharded folders instead (dcp_checkpoint.py), with ``last.pt`` a small pointer to
the newest; :func:`load_checkpoint` follows it and returns the same full-state dict.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infworld.data.episode import atomic_write_bytes
from infworld.errors import CheckpointError

FORMAT = "infworld-train-state"
VERSION = 1
LAST = "last.pt"
REQUIRED_KEYS = ("format", "version", "step", "model", "ema", "optimizer", "scheduler", "rng",
                 "samples_seen", "recipe")
# Recipe keys that may change when resuming (extend training, move the run, log more often...).
RESUMABLE_CHANGES = {"train.steps", "train.max_minutes", "train.log_every", "train.eval_every",
                     "train.eval_batches", "train.ckpt_every", "train.out", "train.device", "train.precision",
                     "train.parallel", "train.fsdp_blocks", "train.grad_checkpointing",
                     "model.grad_checkpointing", "data.workers", "data.root"}


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def step_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (temp file in the same folder, fsync, rename)."""
    state = {"format": FORMAT, "version": VERSION, **state}
    atomic_write_bytes(path, lambda f: torch.save(state, f))
    return Path(path)


def link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically (a hard link when possible: no extra disk)."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        if tmp.exists():
            tmp.unlink()
        atomic_write_bytes(dst, lambda f: f.write(src.read_bytes()))


def _read(path: Path, map_location: str | torch.device) -> Any:
    if path.is_dir():  # a sharded (FSDP) checkpoint folder, gathered into one full state
        from infworld.train.dcp_checkpoint import load_full

        return load_full(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: {exc})"
                              ) from exc


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a training checkpoint; anything unreadable raises CheckpointError naming it.

    ``path`` is a ``.pt`` file, a sharded checkpoint folder, or a ``last.pt`` pointing to one.
    """
    path = Path(path)
    state = _read(path, map_location)
    pointer = state.get("sharded_dir") if isinstance(state, dict) and state.get("format") == FORMAT else None
    if isinstance(pointer, str):  # last.pt of an FSDP run: follow it to the sharded folder
        path = path.parent / pointer
        state = _read(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an infworld training checkpoint (format != {FORMAT!r})")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} (expected {VERSION})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    try:
        state["recipe"] = json.loads(state["recipe"])
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: bad recipe JSON ({exc})") from exc
    return state


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def recipe_differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved, current)}`` for every recipe value that differs."""
    a, b = _flatten(saved), _flatten(current)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_resumable(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Raise CheckpointError if the checkpoint comes from another recipe; return the allowed changes."""
    diff = recipe_differences(saved, current)
    bad = {k: v for k, v in diff.items() if k not in RESUMABLE_CHANGES}
    if bad:
        shown = ", ".join(f"{k}: checkpoint {a!r} != recipe {b!r}" for k, (a, b) in list(bad.items())[:8])
        raise CheckpointError(
            f"{path}: written by recipe {saved.get('name')!r} (task {saved.get('task')!r}), "
            f"which differs from recipe {current.get('name')!r}: {shown}"
        )
    return {k: v for k, v in diff.items() if k in RESUMABLE_CHANGES}


# ---------------------------------------------------------------------------------------------
# RNG state


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """This process's RNG states, as tensors and plain Python values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"].cpu())


@contextmanager
def isolated_rng(generator: torch.Generator | None = None) -> Iterator[None]:
    """Run a block (data loading, evaluation) without touching the training RNG streams.

    Anything random inside (a DataLoader drawing worker seeds, sampling noise in evaluation) sees
    the current state, but the states are put back afterwards, so the training randomness does not
    depend on when batches were fetched or evaluations ran: this is what makes resume exact.
    """
    state = capture_rng(generator)
    try:
        yield
    finally:
        restore_rng(state, generator)
