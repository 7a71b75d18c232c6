"""Task ``tokenizer``: train the frame autoencoder (infworld/models/autoencoder.py).

Data are single random frames, not clips: each rank keeps a pool of up to ``pool_frames`` training
frames in memory (evenly spaced over the training episodes; consecutive game frames are nearly
duplicates, so spacing them out loses little), and sample ``i`` of rank ``r`` is frame
``default_rng([seed, r, i]).integers(len(pool))``, so the stream depends only on ``(seed, r, i)``
and resumes exactly. ``data.clip_len`` and ``data.workers`` are not used.

Loss (per pixel, frames in [-1, 1]): ``MSE + l1_weight * L1 + edge_weight * |grad(x^) - grad(x)|
+ latent_l2 * mean(z^2)``; the last term keeps the raw latents well scaled (the running
statistics then standardise them). Evaluation: PSNR of encode -> decode, on uint8-quantised frames
of the held-out ``val`` episodes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from infworld.config import build_dataclass, to_dict
from infworld.data.episode import list_episodes, read_meta
from infworld.data.stats import episode_length, load_arrays
from infworld.errors import ConfigError, DataError
from infworld.eval.video import psnr, psnr_from_mse
from infworld.models.autoencoder import AutoencoderConfig, FrameAutoencoder
from infworld.train.task import register_task


@dataclass
class TokenizerConfig(AutoencoderConfig):
    """The autoencoder's architecture plus the training-only settings of this task."""

    l1_weight: float = 0.1
    edge_weight: float = 0.0
    latent_l2: float = 1e-4
    latent_noise: float = 0.0  # decoder input noise, in latent standard deviations
    pool_frames: int = 20000  # training frames kept in memory per rank (uint8)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("l1_weight", "edge_weight", "latent_l2", "latent_noise"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}: expected a float >= 0, got {getattr(self, name)}")
        if self.pool_frames < 1:
            raise ConfigError(f"model.pool_frames: expected an int >= 1, got {self.pool_frames}")


def _spaced(n: int, k: int) -> np.ndarray:
    """``k`` evenly spaced indices in ``range(n)`` (all of them if ``k >= n``)."""
    if k >= n:
        return np.arange(n)
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


def load_frame_pool(root: str | Path, split: str, val_episodes: int, max_frames: int,
                    image_size: tuple[int, int]) -> torch.Tensor:
    """Up to ``max_frames`` frames (N, 3, H, W) uint8 of a split, evenly spaced over its episodes.

    Splits follow ClipDataset: episodes sorted by name, the last ``val_episodes`` are ``val``.
    """
    meta = read_meta(root)
    if tuple(meta.size) != tuple(image_size):
        raise ConfigError(f"model.image_size {tuple(image_size)} differs from the dataset's frame size "
                          f"{tuple(meta.size)} ({Path(root) / 'meta.json'})")
    paths = list_episodes(root)
    n_train = max(len(paths) - val_episodes, 0)
    chosen = paths[:n_train] if split == "train" else paths[n_train:]
    if not chosen:
        raise DataError(f"split {split!r} is empty: {len(paths)} episodes with data.val_episodes="
                        f"{val_episodes}", path=str(root))
    lengths = np.array([episode_length(p) for p in chosen])
    # Spread the frame budget over episodes in proportion to their lengths.
    keep = _spaced(int(lengths.sum()), max_frames)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    parts = []
    for e, path in enumerate(chosen):
        local = keep[(keep >= offsets[e]) & (keep < offsets[e + 1])] - offsets[e]
        if len(local) == 0:
            continue
        frames = load_arrays(path, ("frames",)).get("frames")
        if frames is None or frames.ndim != 4 or frames.shape[0] != lengths[e]:
            raise DataError(f"expected frames (T={lengths[e]}, H, W, 3)", path=str(path), field="frames")
        parts.append(np.ascontiguousarray(frames[local].transpose(0, 3, 1, 2)))  # (k, 3, H, W)
    return torch.from_numpy(np.concatenate(parts))


def _edge_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontal and vertical image gradients, (N, C, H, W) each."""
    dxa, dxb = a[..., :, 1:] - a[..., :, :-1], b[..., :, 1:] - b[..., :, :-1]
    dya, dyb = a[..., 1:, :] - a[..., :-1, :], b[..., 1:, :] - b[..., :-1, :]
    return (dxa - dxb).abs().mean() + (dya - dyb).abs().mean()


class TokenizerTask:
    """Trains :class:`FrameAutoencoder` on random frames of a dataset (see the module docstring)."""

    name = "tokenizer"

    def __init__(self, config: TokenizerConfig, recipe: Any):
        self.config = config
        self.recipe = recipe
        if not recipe.data.root:
            raise ConfigError("data.root is empty: set it in the recipe or with --set data.root=DIR")
        if recipe.data.val_episodes < 1:
            raise ConfigError("data.val_episodes: the tokenizer needs >= 1 held-out episode for its PSNR")
        self._pools: dict[str, torch.Tensor] = {}

    def _pool(self, split: str) -> torch.Tensor:
        if split not in self._pools:
            limit = self.config.pool_frames if split == "train" else max(self.config.pool_frames // 8, 1)
            self._pools[split] = load_frame_pool(self.recipe.data.root, split, self.recipe.data.val_episodes,
                                                 limit, self.config.image_size)
        return self._pools[split]

    # -- Task protocol ----------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        return FrameAutoencoder(self.export_model_config())

    def export_model_config(self) -> AutoencoderConfig:
        names = [f.name for f in fields(AutoencoderConfig)]
        return AutoencoderConfig(**{n: getattr(self.config, n) for n in names})

    def batches(self, split: str, batch_size: int, seed: int, rank: int, world_size: int,
                start_sample: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        pool = self._pool(split)
        n = len(pool)
        i = start_sample
        while True:
            # Sample j of this rank is pool frame default_rng([seed, rank, j]).integers(n).
            idx = [int(np.random.default_rng([seed, rank, j]).integers(n)) for j in range(i, i + batch_size)]
            yield {"frames": pool[idx]}  # (B, 3, H, W) uint8
            i += batch_size

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        frames = batch["frames"]
        x = FrameAutoencoder.to_float(frames.reshape(-1, *frames.shape[-3:]))  # (N, 3, H, W) in [-1, 1]
        recon, z = model(x, latent_noise=cfg.latent_noise, generator=generator)
        recon, z = recon.float(), z.float()
        mse = (recon - x).pow(2).mean()
        l1 = (recon - x).abs().mean()
        latent = z.pow(2).mean()
        loss = mse + cfg.l1_weight * l1 + cfg.latent_l2 * latent
        metrics = {"mse": float(mse.detach()), "l1": float(l1.detach()),
                   "latent_rms": math.sqrt(float(latent.detach())),
                   # of the batch MSE on frames in [-1, 1]: peak-to-peak 2, the PSNR of those frames in 0..255
                   "psnr": float(psnr_from_mse(float(mse.detach()), peak=2.0))}
        if cfg.edge_weight > 0:
            edge = _edge_loss(recon, x)
            loss = loss + cfg.edge_weight * edge
            metrics["edge"] = float(edge.detach())
        return loss, metrics

    @torch.no_grad()
    def calibrate(self, model: nn.Module, max_frames: int = 4096) -> None:
        """Exact latent statistics of ``model`` (the final EMA weights) on up to ``max_frames``
        training frames (a fixed subset), replacing the running estimates."""
        pool = self._pool("train")
        order = np.random.default_rng(1).permutation(len(pool))[:max_frames]
        device = next(model.parameters()).device
        bs = self.recipe.train.batch_size
        model.calibrate(pool[order[s:s + bs]].to(device) for s in range(0, len(order), bs))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, max_batches: int = 8) -> dict[str, float]:
        """Reconstruction PSNR (dB, uint8-quantised) on a fixed set of held-out frames."""
        pool = self._pool("val")
        bs = self.recipe.train.batch_size
        order = np.random.default_rng(0).permutation(len(pool))[: max_batches * bs]
        device = next(model.parameters()).device
        psnrs, stds, means = [], [], []
        for start in range(0, len(order), bs):
            frames = pool[order[start:start + bs]].to(device)  # (B, 3, H, W) uint8
            lat = model.encode(frames)  # (B, C, h, w) standardised
            recon = model.to_uint8(model.decode(lat))
            psnrs.append(psnr(recon.cpu().numpy(), frames.cpu().numpy()))  # (B,) dB
            stds.append(lat.float().std(dim=(0, 2, 3)))
            means.append(lat.float().mean(dim=(0, 2, 3)))
        db = np.concatenate(psnrs)
        return {"psnr": float(db.mean()), "psnr_p10": float(np.quantile(db, 0.1)),
                "latent_std": float(torch.stack(stds).mean()),
                "latent_mean_abs": float(torch.stack(means).mean(0).abs().mean())}

    def export_config(self) -> dict[str, Any]:
        return to_dict(self.export_model_config())

    @classmethod
    def build_inference_model(cls, model_config: dict[str, Any]) -> nn.Module:
        return FrameAutoencoder(build_dataclass(AutoencoderConfig, model_config, "model_config"))


register_task("tokenizer", TokenizerConfig, TokenizerTask)
