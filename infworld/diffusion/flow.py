"""Rectified flow (flow matching) on latent frames.

Rectified flow (Liu et al. 2022, "Flow Straight and Fast"; Lipman et al. 2022, "Flow Matching"),
with the conventions of SD3 (Esser et al. 2024) and Wan2.1:

* forward process  x_t = (1 - t) x_0 + t * eps,   eps ~ N(0, I),  t in [0, 1], t = 0 clean;
* the network predicts the velocity  v = dx_t/dt = eps - x_0  (loss: ||v_theta - (eps - x_0)||^2);
* timestep shift  t' = s t / (1 + (s - 1) t)  (SD3 eq. 23 in this form; s > 1 spends more steps and
  more training at high noise, which larger latents need);
* training t: logit-normal (SD3 Sec. 3.1, "lognorm(m, s)": t = sigmoid(m + s * n)) or uniform,
  then shifted.

Every function broadcasts a per-frame t (B, F) over latents (B, F, C, h, w), which is what
diffusion forcing (forcing.py) needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from infworld.errors import ConfigError


@dataclass
class FlowConfig:
    """How training noise levels are drawn."""

    t_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 1.0

    def check(self) -> None:
        if self.logit_std <= 0:
            raise ConfigError(f"flow.logit_std: expected > 0, got {self.logit_std}")
        if self.shift <= 0:
            raise ConfigError(f"flow.shift: expected > 0, got {self.shift}")


def expand_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Append singleton dims so ``t`` (B, F) or () broadcasts against ``x`` (B, F, C, h, w)."""
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim()))).to(x.dtype)


def shift_t(t: torch.Tensor, shift: float) -> torch.Tensor:
    """Timestep shift t' = s t / (1 + (s - 1) t); identity for s = 1, keeps 0 -> 0 and 1 -> 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def sample_t(shape: tuple[int, ...], cfg: FlowConfig, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Training noise levels of the given shape, in (0, 1).

    Drawn on the generator's device (so a CPU generator reproduces the same values whatever
    ``device`` is), then moved to ``device``.
    """
    gen_dev = generator.device if generator is not None else device
    if cfg.t_sampling == "logit_normal":
        n = torch.randn(shape, generator=generator, device=gen_dev)
        t = torch.sigmoid(cfg.logit_mean + cfg.logit_std * n)
    elif cfg.t_sampling == "uniform":
        t = torch.rand(shape, generator=generator, device=gen_dev)
    else:
        raise ConfigError(f"flow.t_sampling: expected 'logit_normal' or 'uniform', got {cfg.t_sampling!r}")
    return shift_t(t, cfg.shift).to(device)


def add_noise(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps."""
    tt = expand_t(t, x0)
    return (1 - tt) * x0 + tt * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The regression target v = eps - x_0 (constant along each straight path)."""
    return eps - x0


def predict_x0(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Clean estimate x_0 = x_t - t v."""
    return x_t - expand_t(t, x_t) * v


def predict_eps(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Noise estimate eps = x_t + (1 - t) v."""
    return x_t + (1 - expand_t(t, x_t)) * v
