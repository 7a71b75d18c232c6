"""Diffusion-forcing training loss for the block-causal world model.

Diffusion Forcing (Chen et al. 2024, arXiv 2407.01392, Sec. 3.1) trains a causal denoiser with an
**independent noise level per frame**, so one network can denoise a frame given a past that is
clean, partly noisy or pure noise. VRAG (arXiv 2505.21996) trains its retrieval world model the
same way. We mix two regimes per clip:

* independent (probability ``1 - prefix_prob``): t_f drawn i.i.d. for every frame f, loss on all;
* clean prefix (probability ``prefix_prob``): frames 0..P-1 are clean context (t = 0, or a small
  level with ``context_noise``; no loss) and the rest share one noise level, which is exactly what
  streaming inference does (a chunk at one t after cached context frames, see infworld/world.py).

Loss: rectified-flow velocity regression ||v_theta(x_t, t) - (eps - x_0)||^2 (flow.py), averaged over
the frames that carry loss (and, with ``region``, over latent pixels with a weight map).
Classifier-free guidance dropout nulls all actions of a clip with probability ``cfg_dropout``
(Ho & Salimans 2022).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from infworld.diffusion.flow import FlowConfig, add_noise, sample_t, velocity_target
from infworld.errors import ConfigError
from infworld.models.action import drop_actions

ModelFn = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass
class ForcingConfig:
    """Share of clean-prefix clips, the shortest prefix, and the CFG action-dropout probability."""

    prefix_prob: float = 0.5
    min_prefix: int = 1
    cfg_dropout: float = 0.1
    # Context noise augmentation (GameNGen, Valevski et al. 2024, Sec. 3.2.1; DIAMOND's CS:GO model):
    # clean-prefix frames are noised to a level drawn uniformly in 0..context_noise per clip and the
    # network is told that level, so at inference it tolerates its own imperfect past frames.
    context_noise: float = 0.0
    # A part of the frame that weighs more in the loss: [top, bottom, left, right] as fractions of
    # the frame (e.g. Crafter's inventory bar, [0.78, 1, 0, 1]); each of its latent pixels counts
    # ``region_weight`` times, the map normalised to mean 1 so the loss keeps its scale. Why: a
    # changed inventory digit is ~1% of the pixels, so the plain mean barely notices a model that
    # keeps drawing the old count (docs/crafter.md).
    region: tuple[float, ...] = ()
    region_weight: float = 1.0

    def check(self) -> None:
        for name in ("prefix_prob", "cfg_dropout", "context_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                value = getattr(self, name)
                raise ConfigError(f"forcing.{name}: expected a probability in 0..1, got {value}")
        if self.min_prefix < 1:
            raise ConfigError(f"forcing.min_prefix: expected >= 1, got {self.min_prefix}")
        if self.region:
            r = [float(v) for v in self.region]
            if len(r) != 4 or not (0.0 <= r[0] < r[1] <= 1.0 and 0.0 <= r[2] < r[3] <= 1.0):
                raise ConfigError(f"forcing.region: expected [top, bottom, left, right] fractions with "
                                  f"top < bottom and left < right in 0..1, got {list(self.region)}")
        if not float(self.region_weight) > 0:
            raise ConfigError(f"forcing.region_weight: expected > 0, got {self.region_weight}")


def region_map(cfg: ForcingConfig, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor | None:
    """Per-latent-pixel loss weights (h, w), mean 1, or None when no region is weighted. A latent
    pixel belongs to the region when its centre lies inside it."""
    if not cfg.region or float(cfg.region_weight) == 1.0:
        return None
    top, bottom, left, right = (float(v) for v in cfg.region)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    inside = ((ys >= top) & (ys < bottom))[:, None] & ((xs >= left) & (xs < right))[None, :]
    wmap = torch.where(inside, float(cfg.region_weight), 1.0)
    return wmap / wmap.mean()


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_dev = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_dev).to(device)


def forcing_noise_levels(batch: int, frames: int, flow: FlowConfig, cfg: ForcingConfig,
                         generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame noise levels t (B, F) and the loss mask (B, F) (False on clean-prefix frames)."""
    device = torch.device(device)
    t = sample_t((batch, frames), flow, generator, device)  # independent per frame
    loss_mask = torch.ones(batch, frames, dtype=torch.bool, device=device)
    if frames > cfg.min_prefix and cfg.prefix_prob > 0:
        use_prefix = _rand((batch,), generator, device) < cfg.prefix_prob  # (B,)
        # prefix length P uniform in min_prefix..F-1: at least one noisy frame remains.
        span = frames - cfg.min_prefix
        plen = cfg.min_prefix + (_rand((batch,), generator, device) * span).long().clamp(max=span - 1)
        t_chunk = sample_t((batch,), flow, generator, device)  # one level for the noisy part
        ctx = use_prefix[:, None] & (torch.arange(frames, device=device)[None, :] < plen[:, None])  # (B, F)
        t = torch.where(use_prefix[:, None], t_chunk[:, None].expand(-1, frames), t)
        t_ctx = torch.zeros_like(t_chunk)
        if cfg.context_noise > 0:
            t_ctx = _rand((batch,), generator, device) * cfg.context_noise  # (B,)
        t = torch.where(ctx, t_ctx[:, None].expand(-1, frames), t)
        loss_mask = ~ctx
    return t, loss_mask


def forcing_loss(model_fn: ModelFn, x0: torch.Tensor, actions: Mapping[str, torch.Tensor],
                 flow: FlowConfig, cfg: ForcingConfig, generator: torch.Generator | None = None,
                 frame_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Diffusion-forcing flow-matching loss on clean latents ``x0`` (B, F, C, h, w).

    ``actions``: per-frame action fields (B, F) (see action.frame_actions). ``model_fn(x_t, t,
    actions)`` returns the predicted velocity (B, F, C, h, w). ``frame_weight`` (B, F) >= 0, optional:
    only the frames it weighs carry loss (e.g. the frames that return to a place only memory holds,
    memory_train.py); the noise draw is the same with or without it. Returns the scalar loss and
    metrics.
    """
    cfg.check()
    flow.check()
    b, f = x0.shape[:2]
    dev = x0.device
    t, loss_mask = forcing_noise_levels(b, f, flow, cfg, generator, dev)
    gen_dev = generator.device if generator is not None else dev
    eps = torch.randn(x0.shape, generator=generator, device=gen_dev, dtype=x0.dtype).to(dev)
    x_t = add_noise(x0, eps, t)
    drop = _rand((b,), generator, dev) < cfg.cfg_dropout  # (B,)
    v = model_fn(x_t, t, drop_actions(actions, drop))
    sq = (v.float() - velocity_target(x0, eps).float()).pow(2)  # (B, F, C, h, w)
    wmap = region_map(cfg, x0.shape[-2], x0.shape[-1], dev) if x0.dim() == 5 else None
    if wmap is not None:
        sq = sq * wmap  # (h, w) broadcast: the weighted region counts more
    err = sq.mean(dim=tuple(range(2, x0.dim())))  # (B, F)
    w = loss_mask.float()
    if frame_weight is not None:
        if tuple(frame_weight.shape) != (b, f):
            raise ConfigError(f"forcing_loss: frame_weight must be (B, F) = {(b, f)}, "
                              f"got {tuple(frame_weight.shape)}")
        w = w * frame_weight.to(dev, w.dtype)
    # a batch with no weighted frame gives loss 0 and no gradient, rather than NaN
    loss = (err * w).sum() / w.sum().clamp(min=1e-6)
    with torch.no_grad():
        prefix_clip = (~loss_mask).any(dim=1)  # (B,)
        metrics = {
            "loss": float(loss.detach()),
            "t_mean": float((t * w).sum() / w.sum().clamp(min=1.0)),
            "prefix_share": float(prefix_clip.float().mean()),
        }
        for name, sel in (("loss_prefix", prefix_clip), ("loss_indep", ~prefix_clip)):
            ww = w * sel[:, None].float()
            if ww.sum() > 0:
                metrics[name] = float((err * ww).sum() / ww.sum())
    return loss, metrics
