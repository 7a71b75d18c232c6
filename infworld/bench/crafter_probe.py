"""World-state probe for Crafter: a small CNN that reads a frame back into world state.

It follows the issue "world-state probe". WorldScape claims its world model supports manipulation
(what the player changes stays changed); VRAG-style evaluation judges memory with a learned model
instead of pixel metrics. This probe is that judge for Crafter: from one 64 x 64 frame it reads

* the material or creature at every cell of the local view (rows x cols = 7 x 9 by default; the
  dataset's semantic ids plus ``outside`` for cells beyond the world edge, see crafter_grid.py), and
* the count (0..9, as the item bar draws them) of each of the 16 inventory items,

so the bench can compare what a generated frame shows at world cell (x, y) with the true world.

Network (per frame, default sizes): the local view (3, rows * uy, cols * ux) goes through a
cell-aligned ``unit``-stride conv (one vector per cell from its texture's pixels; an optional pixel
3x3 conv before it gained 0.05 points for 2.7x the time), a 1x1 MLP and residual 3x3 convs over the
cell grid (neighbours help at night, when noise hides the edges of the view), then 1x1 logits.
The item bar is cut into its slots and one shared MLP reads each slot's count.
Training paints cells and item bars with crafter's own textures and lighting into half the frames
(crafter_grid.CrafterPainter), so every material, creature and (item, count) pair is seen at every
daylight, also those that exploration rarely or never meets (tables, furnaces, zombies, 9 iron).

Export (crafter_probe_io.py): ``OUT/model.safetensors`` + ``OUT/config.json`` (format
``infworld-crafter-probe``) with the grid, the class names, semantic ids, inventory keys and the
held-out metrics, written to a temp folder that is then renamed into place.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infworld.bench.crafter_grid import (
    MAX_COUNT,
    CrafterGrid,
    CrafterPainter,
    ProbeData,
    concat_probe_data,
    load_probe_data,
)
from infworld.errors import ConfigError, DataError

PROBE_FORMAT = "infworld-crafter-probe"
PROBE_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
COUNTS = MAX_COUNT + 1  # count classes 0..9


@dataclass
class ProbeConfig:
    """Network shape: ``width`` channels per cell, ``pixel_channels`` of the pixel 3x3 conv (0 =
    none), ``context`` residual 3x3 blocks over the cell grid, ``item_width`` for the slot MLP."""

    width: int = 96
    pixel_channels: int = 0
    context: int = 2
    item_width: int = 96

    def check(self) -> None:
        if min(self.width, self.item_width) < 1 or min(self.pixel_channels, self.context) < 0:
            raise ConfigError(f"probe config {self}: expected width, item_width >= 1 and "
                              "pixel_channels, context >= 0")


@dataclass
class ProbeTrainConfig:
    """One training run. ``heldout`` episodes (default a tenth, at least one) are never trained on;
    ``synth_inventory`` is the share of frames whose item bar is replaced by a rendered random one,
    ``paint`` the share that get 1..``paint_cells`` cells painted with a random material or creature
    (crafter's textures and lighting, see :class:`CrafterPainter`)."""

    steps: int = 3000
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    seed: int = 0
    heldout: int | None = None
    synth_inventory: float = 0.5
    paint: float = 0.5
    paint_cells: int = 4
    max_minutes: float | None = None
    model: ProbeConfig = field(default_factory=ProbeConfig)

    def check(self) -> None:
        if min(self.steps, self.batch_size, self.paint_cells) < 1 or self.lr <= 0:
            raise ConfigError(f"probe training: expected steps, batch_size, paint_cells >= 1 and lr > 0, got "
                              f"{self.steps} / {self.batch_size} / {self.paint_cells} / {self.lr}")
        for name in ("synth_inventory", "paint"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"probe training: {name} is a share in [0, 1], got {getattr(self, name)}")
        self.model.check()


class CrafterProbe(nn.Module):
    """uint8 frames -> per-cell class logits and per-item count logits (see the module docstring)."""

    def __init__(self, grid: CrafterGrid, cfg: ProbeConfig | None = None, classes: list[str] | None = None,
                 inventory_keys: list[str] | None = None, meta: dict[str, Any] | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ProbeConfig()
        cfg.check()
        self.grid = grid
        self.classes = list(classes or [str(i) for i in range(grid.n_classes)])
        self.inventory_keys = list(inventory_keys or [str(i) for i in range(grid.n_items)])
        self.meta = meta or {}
        uy, ux = grid.unit
        c_in = 3
        self.pixel = None
        if cfg.pixel_channels:
            self.pixel = nn.Conv2d(3, cfg.pixel_channels, 3, padding=1)
            c_in += cfg.pixel_channels
        self.embed = nn.Conv2d(c_in, cfg.width, (uy, ux), stride=(uy, ux))  # one vector per cell
        self.mlp = nn.Conv2d(cfg.width, cfg.width, 1)
        self.context = nn.ModuleList(nn.Conv2d(cfg.width, cfg.width, 3, padding=1)
                                     for _ in range(cfg.context))
        self.head = nn.Conv2d(cfg.width, grid.n_classes, 1)
        self.item_embed = nn.Conv2d(3, cfg.item_width, (uy, ux), stride=(uy, ux))
        self.item_head = nn.Sequential(nn.GELU(), nn.Linear(cfg.item_width, cfg.item_width), nn.GELU(),
                                       nn.Linear(cfg.item_width, COUNTS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (N, H, W, 3) uint8 -> (cell logits (N, rows, cols, n_classes), item logits (N, K, 10))."""
        x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, H, W) in [-1, 1]
        t, l, b, r = self.grid.local_box
        loc = x[:, :, t:b, l:r]  # (N, 3, rows * uy, cols * ux)
        if self.pixel is not None:
            loc = torch.cat([loc, F.gelu(self.pixel(loc))], dim=1)  # (N, 3 + P, rows * uy, cols * ux)
        h = F.gelu(self.embed(loc))  # (N, width, rows, cols)
        h = h + self.mlp(h)
        for conv in self.context:
            h = h + conv(F.gelu(h))
        cells = self.head(F.gelu(h)).permute(0, 2, 3, 1)  # (N, rows, cols, n_classes)
        t, l, b, r = self.grid.item_band
        slots = self.item_embed(x[:, :, t:b, l:r])  # (N, item_width, item_rows, cols)
        slots = slots.flatten(2).transpose(1, 2)[:, : self.grid.n_items]  # (N, K, item_width)
        return cells, self.item_head(slots)  # ..., (N, K, 10)

    def check_frames(self, frames: np.ndarray) -> None:
        h, w = self.grid.size
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[1:] == (h, w, 3)):
            got = f"{getattr(frames, 'shape', None)} {getattr(frames, 'dtype', type(frames).__name__)}"
            raise DataError(f"the probe reads (N, {h}, {w}, 3) uint8 frames (the size it was trained on), "
                            f"got {got}", field="frames")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the local view the probe reads."""
        return self.grid.rows, self.grid.cols

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 256, probs: bool = False) -> dict[str, np.ndarray]:
        """frames (N, H, W, 3) uint8 -> {"cells": (N, rows, cols) int64 class ids, "inventory": (N, K)
        int64 counts}; with ``probs`` also "confidence" (N, rows, cols) and "inventory_confidence"
        (N, K) float32, the softmax probability of the predicted class."""
        self.check_frames(frames)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: dict[str, list[np.ndarray]] = {"cells": [], "inventory": [], "confidence": [],
                                            "inventory_confidence": []}
        for lo in range(0, max(len(frames), 1), batch):  # an empty batch still gives (0, ...) arrays
            c, i = self(torch.from_numpy(frames[lo: lo + batch]).to(device))
            for key, logits in (("cells", c), ("inventory", i)):
                conf, pred = logits.float().softmax(-1).max(-1)
                out[key].append(pred.cpu().numpy().astype(np.int64))
                out["confidence" if key == "cells" else "inventory_confidence"].append(conf.cpu().numpy())
        self.train(was_training)
        res = {k: np.concatenate(v) for k, v in out.items()}
        return res if probs else {"cells": res["cells"], "inventory": res["inventory"]}


# ---------------------------------------------------------------------------------------------
# evaluation and training


def evaluate_probe(probe: CrafterProbe, data: list[ProbeData], majority: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Accuracy of ``probe`` on every frame of ``data``: per cell (overall, per class, day and
    night frames) and per inventory item; the majority baseline uses ``majority`` (from training:
    {"cell": class id, "inventory": [count per key]}) or else the evaluated labels themselves."""
    if not data:
        raise DataError("nothing to evaluate: no episodes")
    d = concat_probe_data(data)
    if d.grid != probe.grid:
        raise DataError(f"dataset grid {d.grid} differs from the probe's {probe.grid}", field="grid")
    pred = probe.predict(d.frames)
    hit = pred["cells"] == d.cells  # (N, rows, cols)
    inv_hit = pred["inventory"] == d.inventory  # (N, K)
    source = "train" if majority else "eval labels"
    majority = majority or {"cell": int(np.bincount(d.cells.ravel()).argmax()),
                            "inventory": [int(np.bincount(col).argmax()) for col in d.inventory.T]}
    per_class = {}
    for i, name in enumerate(probe.classes):
        mask = d.cells == i
        if mask.any():
            per_class[name] = {"accuracy": float(hit[mask].mean()), "cells": int(mask.sum())}
    night = d.daylight < 0.5
    return {
        "frames": int(len(d.frames)), "episodes": len(data),
        "cells": {"accuracy": float(hit.mean()),
                  "day_accuracy": float(hit[~night].mean()) if (~night).any() else None,
                  "night_accuracy": float(hit[night].mean()) if night.any() else None,
                  "night_frames": int(night.sum()),
                  "majority_class": probe.classes[majority["cell"]],
                  "majority_baseline": float((d.cells == majority["cell"]).mean()),
                  "per_class": per_class},
        "inventory": {"accuracy": float(inv_hit.mean()), "frames_all_correct": float(inv_hit.all(1).mean()),
                      "majority_baseline": float((d.inventory == np.asarray(majority["inventory"])).mean()),
                      "per_key": {k: float(inv_hit[:, i].mean())
                                  for i, k in enumerate(probe.inventory_keys)}},
        "majority_from": source,
    }


def train_probe(data_dirs: list[str | os.PathLike] | str | os.PathLike, out_dir: str | os.PathLike,
                cfg: ProbeTrainConfig | None = None, progress: bool = True) -> dict[str, Any]:
    """Train a probe on the Crafter datasets ``data_dirs``, export it to ``out_dir`` and return its
    config.json. The last ``cfg.heldout`` episodes are held out and measured at the end. AdamW with
    a cosine schedule; ``cfg.max_minutes`` stops early."""
    cfg = cfg or ProbeTrainConfig()
    cfg.check()
    eps = load_probe_data(data_dirs)
    n_held = cfg.heldout if cfg.heldout is not None else max(1, len(eps) // 10)
    if not 1 <= n_held < len(eps):
        raise ConfigError(f"train_probe: heldout must be in 1..{len(eps) - 1} episodes (found {len(eps)}), "
                          f"got {n_held}")
    train, held = concat_probe_data(eps[:-n_held]), eps[-n_held:]
    grid, keys = train.grid, train.inventory_keys
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    probe = CrafterProbe(grid, cfg.model, train.classes, keys)
    painter = CrafterPainter(grid, train.classes, seed=cfg.seed)
    bank = painter.random_item_bands(keys, 1024, rng) if cfg.synth_inventory > 0 else None
    bt, bl, bb, br = grid.item_band
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(  # cosine to 0 at cfg.steps
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, cfg.steps) / cfg.steps)))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, unit="step", desc="train crafter probe", file=sys.stderr)
    t0, losses, done = time.perf_counter(), [], 0
    probe.train()
    for done in range(1, cfg.steps + 1):
        # 1. a batch of real frames and their labels
        idx = rng.integers(0, len(train.frames), cfg.batch_size)
        frames, cells, inv = train.frames[idx].copy(), train.cells[idx].copy(), train.inventory[idx].copy()
        # 2. painted cells in some frames, rendered item bars with random counts in others
        painter.paint_random(frames, cells, train.daylight[idx], cfg.paint, cfg.paint_cells, rng)
        if bank is not None:
            swap = np.flatnonzero(rng.random(cfg.batch_size) < cfg.synth_inventory)
            pick = rng.integers(0, len(bank[0]), len(swap))
            frames[swap, bt:bb, bl:br] = bank[0][pick]
            inv[swap] = bank[1][pick]
        # 3. one AdamW step on both cross-entropies
        lc, li = probe(torch.from_numpy(frames))
        loss = F.cross_entropy(lc.flatten(0, 2), torch.from_numpy(cells).flatten()) + \
            F.cross_entropy(li.flatten(0, 1), torch.from_numpy(inv).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            if done % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if cfg.max_minutes is not None and time.perf_counter() - t0 > 60.0 * cfg.max_minutes:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    majority = {"cell": int(np.bincount(train.cells.ravel()).argmax()),
                "inventory": [int(np.bincount(col).argmax()) for col in train.inventory.T]}
    metrics = evaluate_probe(probe, held, majority)
    meta = {
        "format": PROBE_FORMAT, "version": PROBE_VERSION, "grid": grid.to_json(),
        "model": dataclasses.asdict(cfg.model), "classes": train.classes, "semantic_ids": train.semantic_ids,
        "inventory_keys": keys, "count_classes": COUNTS, "majority": majority, "metrics": metrics,
        "train": {"data": [str(d) for d in ([data_dirs] if isinstance(data_dirs, (str, os.PathLike))
                                            else data_dirs)],
                  "episodes": len(eps) - n_held, "heldout_episodes": n_held, "frames": int(len(train.frames)),
                  "steps": done, **{k: v for k, v in dataclasses.asdict(cfg).items() if k != "model"},
                  "seconds": round(seconds, 1), "final_loss": float(np.mean(losses[-50:]))},
        "params": int(sum(p.numel() for p in probe.parameters())),
    }
    probe.meta = meta
    from infworld.bench.crafter_probe_io import save_probe  # (the io module imports this one)

    save_probe(probe, out_dir, meta)
    return meta
