"""Export and loading of the Crafter world-state probe (infworld/bench/crafter_probe.py).

``OUT/model.safetensors`` + ``OUT/config.json`` (format ``infworld-crafter-probe``): the config
holds the grid, class names, semantic ids, inventory keys, training settings and held-out metrics,
and the sha256 of the weights, so a half-replaced export is refused. Writing goes to a temp folder
beside ``OUT`` that is then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from infworld.bench.crafter_grid import CrafterGrid
from infworld.bench.crafter_probe import (
    CONFIG,
    PROBE_FORMAT,
    PROBE_VERSION,
    WEIGHTS,
    CrafterProbe,
    ProbeConfig,
)
from infworld.data.episode import make_shareable
from infworld.errors import CheckpointError, ConfigError, DataError


def save_probe(probe: CrafterProbe, out_dir: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into a temp folder beside ``out_dir``, then
    rename it into place (an existing probe export there is replaced; any other folder is refused)."""
    from safetensors.torch import save_model

    from infworld.models.loading import sha256_file

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and _format(out / CONFIG) != PROBE_FORMAT)):
        raise CheckpointError(f"{out}: exists and is not a crafter probe export; refusing to replace it")
    tmp = old = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        save_model(probe, str(tmp / WEIGHTS), metadata={"format": PROBE_FORMAT})
        make_shareable(tmp / WEIGHTS)
        meta = {**meta, "files": {WEIGHTS: {"bytes": (tmp / WEIGHTS).stat().st_size,
                                            "sha256": sha256_file(tmp / WEIGHTS)}}}
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        make_shareable(tmp / CONFIG)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700 folders
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot write the probe export ({exc.strerror or exc})") from exc
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists() and leftover != out:
                shutil.rmtree(leftover, ignore_errors=True)
    return out


def _format(cpath: Path) -> str | None:
    try:
        return json.loads(cpath.read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def load_probe(path: str | os.PathLike, device: str | torch.device = "cpu") -> CrafterProbe:
    """Load a probe export (a folder, its config.json, or a name under checkpoints/ such as
    ``crafter-probe``) onto ``device``; ``probe.meta`` holds its config.json (metrics, semantic ids,
    training settings)."""
    from safetensors.torch import load_model

    from infworld.models.loading import models_dirs, read_export_json, resolve_model_dir, sha256_file

    try:
        model_dir = resolve_model_dir(path)
    except CheckpointError:
        raise CheckpointError(f"{path}: no such probe folder or name (expected a folder with {CONFIG} + "
                              f"{WEIGHTS} written by `infworld probe train`; names are looked up in "
                              f"{[str(d) for d in models_dirs()]})") from None
    cpath, wpath = model_dir / CONFIG, model_dir / WEIGHTS
    meta = read_export_json(cpath, PROBE_FORMAT, "crafter probe")
    if meta.get("version") != PROBE_VERSION:
        raise CheckpointError(f"{cpath}: probe export version {meta.get('version')!r} "
                              f"(expected {PROBE_VERSION})")
    try:
        grid = CrafterGrid.from_json(meta["grid"])
        probe = CrafterProbe(grid, ProbeConfig(**meta["model"]), list(meta["classes"]),
                             list(meta["inventory_keys"]), meta)
        if len(probe.classes) != grid.n_classes or len(probe.inventory_keys) != grid.n_items:
            raise ConfigError(f"{len(probe.classes)} classes / {len(probe.inventory_keys)} inventory keys "
                              f"for a grid of {grid.n_classes} classes / {grid.n_items} items")
    except (KeyError, TypeError, ValueError, ConfigError, DataError) as exc:
        raise CheckpointError(f"{cpath}: bad probe config ({type(exc).__name__}: {exc}); expected keys grid, "
                              "model, classes, inventory_keys") from exc
    expected = (meta.get("files") or {}).get(WEIGHTS, {}).get("sha256")
    try:
        if expected and sha256_file(wpath) != expected:
            raise CheckpointError(f"{wpath}: sha256 differs from the one {cpath} records "
                                  "(a half-replaced export?)")
        load_model(probe, str(wpath), strict=True, device=str(device))
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own types for missing or corrupt files
        raise CheckpointError(f"{wpath}: cannot load the probe weights ({type(exc).__name__}: "
                              f"{exc})") from exc
    return probe.to(device).eval()
