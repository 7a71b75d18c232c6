"""Inverse dynamics model (IDM): which action turned frame t into frame t + 1?

The action-control protocol of the benchmark (protocols.py) needs a judge that reads actions off
frames, as Genie (Bruce et al. 2024, the latent-action "controllability" metric) and VPT (Baker et al.
2022, the IDM that labels videos) do. This is a small CNN trained on *real* environment episodes in
our format: it sees a pair of frames and predicts the ``move`` and ``view`` ids of the unified action
schema (docs/actions.md; 9 classes each, the uncertain id 9 is never a target). Its accuracy on real
frames is the ceiling of what it can say about generated ones.

Input: frames ``f0, f1`` (3, H, W) each, stacked with their difference ``f1 - f0`` (9 channels, in
[-1, 1]): the difference makes motion explicit for a network this small. Four stride-2 3x3 convs
(H -> H / 16), a linear layer, two linear heads. Training uses horizontal flips as augmentation: a
mirrored pair is the same motion with ``right`` and ``yaw`` negated, so labels are remapped.

Export: ``OUT/model.safetensors`` + ``OUT/config.json`` (format ``infworld-idm``) holding the
config, the held-out accuracy per axis (and the majority-class baseline) and how it was trained.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infworld.data.action_schema import UNCERTAIN, decode_pair, encode_pair
from infworld.data.episode import atomic_write_json, list_episodes, make_shareable, read_episode, read_meta
from infworld.data.frames import resize_frames
from infworld.errors import CheckpointError, ConfigError, DataError

IDM_FORMAT = "infworld-idm"
IDM_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
DEFAULT_IDM = "doom-idm"  # name under checkpoints/ (or $INFWORLD_MODELS)
NUM_CLASSES = 9  # tri-state pairs; the uncertain id is ignored


@dataclass
class IDMConfig:
    """Network shape. ``size`` (H, W): frames are resized to it (H and W divisible by 16)."""

    size: tuple[int, int] = (64, 64)
    channels: tuple[int, ...] = (32, 48, 64, 64)
    hidden: int = 128

    def check(self) -> None:
        down = 2 ** len(self.channels)
        if len(self.size) != 2 or min(self.size) < down or self.size[0] % down or self.size[1] % down:
            raise ConfigError(f"idm size {tuple(self.size)}: expected (H, W) divisible by {down}")
        if not self.channels or min(self.channels) < 1 or self.hidden < 1:
            raise ConfigError(f"idm channels {self.channels} / hidden {self.hidden}: expected positive sizes")


class IDMNet(nn.Module):
    """Frame pair (B, 2, 3, H, W) in [-1, 1] -> (move logits (B, 9), view logits (B, 9))."""

    def __init__(self, cfg: IDMConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = 9  # f0, f1, f1 - f0
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU()]
            c_in = c
        self.convs = nn.Sequential(*layers)
        down = 2 ** len(cfg.channels)
        flat = c_in * (cfg.size[0] // down) * (cfg.size[1] // down)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(flat, cfg.hidden), nn.SiLU())
        self.move = nn.Linear(cfg.hidden, NUM_CLASSES)
        self.view = nn.Linear(cfg.hidden, NUM_CLASSES)

    def forward(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f0, f1 = pairs[:, 0], pairs[:, 1]  # (B, 3, H, W) each
        h = self.fc(self.convs(torch.cat([f0, f1, f1 - f0], dim=1)))  # (B, hidden)
        return self.move(h), self.view(h)


def _to_pairs(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) -> float pairs (T-1, 2, 3, h, w) in [-1, 1] at ``size``."""
    x = torch.from_numpy(np.ascontiguousarray(resize_frames(frames, size)))  # (T, h, w, 3)
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (T, 3, h, w)
    return torch.stack([x[:-1], x[1:]], dim=1)


def _mirror_move(ids: np.ndarray) -> np.ndarray:
    forward, right, unc = decode_pair(ids)
    return np.where(unc, UNCERTAIN, encode_pair(forward, -right))


def _mirror_view(ids: np.ndarray) -> np.ndarray:
    yaw, pitch, unc = decode_pair(ids)
    return np.where(unc, UNCERTAIN, encode_pair(-yaw, pitch))


class IDM:
    """A trained IDM ready to label frames (see :func:`load_idm`)."""

    def __init__(self, net: IDMNet, meta: dict[str, Any] | None = None, path: str = ""):
        self.net = net.eval()
        self.meta = meta or {}
        self.path = path

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.net.cfg.size)

    @torch.no_grad()
    def predict(self, frames: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Predicted (move, view) ids (T-1,) each for the transitions of uint8 frames (T, H, W, 3)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) < 2:
            raise DataError(f"idm: expected uint8 frames (T >= 2, H, W, 3), got {frames.shape} "
                            f"{frames.dtype}", field="frames")
        moves, views = [], []
        for lo in range(0, len(frames) - 1, batch):
            pairs = _to_pairs(frames[lo: lo + batch + 1], self.size)  # (n, 2, 3, h, w)
            m, v = self.net(pairs)
            moves.append(m.argmax(-1).numpy())
            views.append(v.argmax(-1).numpy())
        return np.concatenate(moves).astype(np.int64), np.concatenate(views).astype(np.int64)


def accuracy(pred: np.ndarray, label: np.ndarray) -> float | None:
    """Share of ``pred == label`` over certain labels (label != 9); None when there are none."""
    keep = np.asarray(label) != UNCERTAIN
    return float((np.asarray(pred)[keep] == np.asarray(label)[keep]).mean()) if keep.any() else None


# ---------------------------------------------------------------------------------------------
# training


def _load_episodes(data_dir: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(frames, move, view) per episode of a dataset, in name order."""
    meta = read_meta(data_dir)
    paths = list_episodes(data_dir)
    if len(paths) < 2:
        raise DataError(f"idm training needs at least 2 episodes (one held out), found {len(paths)}",
                        path=str(data_dir))
    out = []
    for p in paths:
        ep = read_episode(p, meta=meta)
        out.append((ep.frames, ep.move, ep.view))
    return out


def _batch(eps, index: np.ndarray, rng: np.random.Generator, size: tuple[int, int], flip: bool):
    """A training batch from (episode, t) pairs: pairs (B, 2, 3, h, w), move (B,), view (B,)."""
    pairs, move, view = [], [], []
    for e, t in index:
        frames, m, v = eps[e]
        pairs.append(_to_pairs(frames[t: t + 2], size)[0])
        move.append(m[t])
        view.append(v[t])
    x = torch.stack(pairs)
    move, view = np.asarray(move), np.asarray(view)
    if flip:
        mirror = rng.random(len(x)) < 0.5
        x[mirror] = x[mirror].flip(-1)
        move = np.where(mirror, _mirror_move(move), move)
        view = np.where(mirror, _mirror_view(view), view)
    return x, torch.from_numpy(move.astype(np.int64)), torch.from_numpy(view.astype(np.int64))


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    keep = labels != UNCERTAIN  # uncertain labels carry no target
    if not keep.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


def evaluate_idm(idm: IDM, episodes) -> dict[str, float | None]:
    """Held-out accuracy per axis over every transition of ``episodes``."""
    pm, pv, lm, lv = [], [], [], []
    for frames, m, v in episodes:
        a, b = idm.predict(frames)
        pm.append(a)
        pv.append(b)
        lm.append(m)
        lv.append(v)
    pm, pv, lm, lv = (np.concatenate(x) for x in (pm, pv, lm, lv))
    return {"move": accuracy(pm, lm), "view": accuracy(pv, lv)}


def _majority(labels: np.ndarray) -> float | None:
    keep = labels[labels != UNCERTAIN]
    return float(np.bincount(keep).max() / len(keep)) if len(keep) else None


def train_idm(data_dir: str | Path, out_dir: str | Path, steps: int = 2000, seed: int = 0,
              batch_size: int = 64, lr: float = 2e-3, max_minutes: float | None = None,
              heldout: int | None = None, config: IDMConfig | None = None, progress: bool = True
              ) -> dict[str, Any]:
    """Train an IDM on the episodes of ``data_dir`` and export it to ``out_dir``; returns config.json.

    The last ``heldout`` episodes (default: a tenth, at least one) are never trained on; the
    accuracy on them is measured at the end and stored in config.json. AdamW with a cosine schedule;
    ``max_minutes`` stops early (the schedule still assumes ``steps``).
    """
    if steps < 1 or batch_size < 1:
        raise ConfigError(f"train_idm: steps and batch_size must be >= 1, got {steps} / {batch_size}")
    cfg = config or IDMConfig()
    cfg.check()
    eps = _load_episodes(data_dir)
    n_held = heldout if heldout is not None else max(1, len(eps) // 10)
    if not 1 <= n_held < len(eps):
        raise ConfigError(f"train_idm: heldout must be in 1..{len(eps) - 1} episodes, got {n_held}")
    train, held = eps[:-n_held], eps[-n_held:]
    # Every transition with at least one certain label is a training sample: (episode, t).
    index = np.array([(e, t) for e, (_, m, v) in enumerate(train) for t in range(len(m))
                      if m[t] != UNCERTAIN or v[t] != UNCERTAIN], dtype=np.int64)
    if len(index) == 0:
        raise DataError("no transition with a certain move or view label to train on", path=str(data_dir))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = IDMNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + np.cos(np.pi * min(s, steps) / steps)))  # cosine to 0 at ``steps``
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, unit="step", desc="train idm", file=sys.stderr)
    t0 = time.perf_counter()
    done, losses = 0, []
    net.train()
    for done in range(1, steps + 1):
        x, move, view = _batch(train, index[rng.integers(0, len(index), batch_size)], rng, cfg.size, True)
        lm, lv = net(x)
        loss = _loss(lm, move) + _loss(lv, view)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            if done % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if max_minutes is not None and time.perf_counter() - t0 > 60.0 * max_minutes:
            break
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    idm = IDM(net.eval())
    acc = evaluate_idm(idm, held)
    labels_m = np.concatenate([m for _, m, _ in held])
    labels_v = np.concatenate([v for _, _, v in held])
    meta = {
        "format": IDM_FORMAT,
        "version": IDM_VERSION,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()},
        "heldout_accuracy": acc,
        "heldout_majority_baseline": {"move": _majority(labels_m), "view": _majority(labels_v)},
        "heldout_transitions": int(len(labels_m)),
        "train": {"data": str(data_dir), "episodes": len(train), "heldout_episodes": n_held,
                  "transitions": int(len(index)), "steps": done, "steps_planned": steps,
                  "batch_size": batch_size, "lr": lr, "seed": seed, "seconds": round(seconds, 1),
                  "final_loss": float(np.mean(losses[-50:]))},
        "params": int(sum(p.numel() for p in net.parameters())),
    }
    save_idm(idm, out_dir, meta)
    return meta


def save_idm(idm: IDM, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` (temp file + rename) then ``config.json`` (atomic)."""
    import os

    from safetensors.torch import save_model

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{WEIGHTS}.tmp"
        try:
            save_model(idm.net, str(tmp), metadata={"format": IDM_FORMAT})
            make_shareable(tmp)
            os.replace(tmp, out / WEIGHTS)
        finally:
            if tmp.exists():
                tmp.unlink()
        atomic_write_json(out / CONFIG, meta)
    except OSError as exc:
        raise CheckpointError(f"{out}: cannot write the idm export ({exc.strerror or exc})") from exc
    return out


def load_idm(path: str | Path = DEFAULT_IDM) -> IDM:
    """Load an exported IDM from a folder or by name (``checkpoints/NAME``, see models/loading.py)."""
    from safetensors.torch import load_model

    from infworld.models.loading import read_export_json, resolve_model_dir

    model_dir = resolve_model_dir(path)
    cpath = model_dir / CONFIG
    meta = read_export_json(cpath, IDM_FORMAT, "inverse dynamics model",
                            "train one with `infworld bench train-idm --data DIR --out DIR`")
    try:
        raw = dict(meta.get("config") or {})
        cfg = IDMConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        net = IDMNet(cfg)
        load_model(net, str(model_dir / WEIGHTS), strict=True)
    except (TypeError, ConfigError) as exc:
        raise CheckpointError(f"{cpath}: bad idm config ({exc})") from exc
    except Exception as exc:  # safetensors raises its own types for missing/corrupt files
        raise CheckpointError(f"{model_dir / WEIGHTS}: cannot load the idm weights "
                              f"({type(exc).__name__}: {exc})") from exc
    return IDM(net, meta, str(model_dir))
