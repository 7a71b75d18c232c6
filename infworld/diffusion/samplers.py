"""ODE/SDE samplers for rectified flow, separate from the network (k-diffusion style).

Every sampler is a free function with one signature::

    sampler(velocity_fn, x, ts, generator=None) -> x_0

``velocity_fn(x, t)`` returns dx/dt at scalar time ``t`` (a 0-dim tensor), ``x`` starts as pure
noise at ``ts[0] = 1`` and ``ts`` decreases to ``ts[-1] = 0`` (see :func:`timesteps`). Guidance and
the network wrapper are built outside (:func:`guided`, infworld/world.py), so distillation can swap
the sampler without touching the network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from infworld.diffusion.flow import shift_t
from infworld.errors import ConfigError

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SamplerConfig:
    """Inference settings: sampler name, number of steps, timestep shift, CFG scale on actions,
    and ``eta`` (fresh-noise share per step) of the stochastic sampler."""

    name: str = "euler"
    steps: int = 10
    shift: float = 1.0
    cfg_scale: float = 1.0
    eta: float = 0.5

    def check(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"sampler.name: unknown sampler {self.name!r}; known: {sorted(SAMPLERS)}")
        if self.steps < 1:
            raise ConfigError(f"sampler.steps: expected >= 1, got {self.steps}")
        if self.shift <= 0:
            raise ConfigError(f"sampler.shift: expected > 0, got {self.shift}")
        if self.cfg_scale < 0:
            raise ConfigError(f"sampler.cfg_scale: expected >= 0 (1 = no guidance), got {self.cfg_scale}")
        if not 0.0 <= self.eta <= 1.0:
            raise ConfigError(f"sampler.eta: expected 0..1, got {self.eta}")


def timesteps(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """(steps + 1,) times from 1 to 0: uniform in t, then shifted (t' = s t / (1 + (s - 1) t))."""
    return shift_t(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


def sample_euler(velocity_fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler's method on dx/dt = v(x, t) (first order; exact on straight rectified-flow paths)."""
    for i in range(len(ts) - 1):
        x = euler_step(x, velocity_fn(x, ts[i]), ts[i], ts[i + 1])
    return x


def euler_step(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
    """One step of :func:`sample_euler` from level ``t`` to ``t_next`` given the velocity ``v``; the
    levels are scalars or broadcast against x (per-frame levels, infworld/sliding.py)."""
    return x + (t_next - t) * v


def sample_heun(velocity_fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, "Elucidating the Design Space...", Algorithm 1):
    an Euler predictor, then the trapezoidal corrector; the last step to t = 0 stays Euler."""
    for i in range(len(ts) - 1):
        dt = ts[i + 1] - ts[i]
        v = velocity_fn(x, ts[i])
        x_pred = x + dt * v
        if float(ts[i + 1]) == 0.0:
            x = x_pred
        else:
            x = x + dt * 0.5 * (v + velocity_fn(x_pred, ts[i + 1]))
    return x


def sample_stochastic(velocity_fn: VelocityFn, x: torch.Tensor, ts: torch.Tensor,
                      generator: torch.Generator | None = None, eta: float = 0.5) -> torch.Tensor:
    """Stochastic sampler: predict (x_0, eps) from v, then re-noise to the next time with a share
    ``eta`` of fresh noise, x' = (1 - t') x_0 + t' (sqrt(1 - eta^2) eps + eta z) (a DDIM-style
    ancestral step for rectified flow, Song et al. 2021 eq. 12 in flow form). ``eta = 0`` is Euler."""
    for i in range(len(ts) - 1):
        x = stochastic_step(x, velocity_fn(x, ts[i]), ts[i], ts[i + 1], eta, generator)
    return x


def stochastic_step(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, eta: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """One step of :func:`sample_stochastic` from level ``t`` to ``t_next`` given the velocity ``v``;
    the levels are scalars or broadcast against x (per-frame levels, infworld/sliding.py)."""
    x0 = x - t * v  # clean estimate
    eps = x + (1 - t) * v  # noise estimate
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (1 - t_next) * x0 + t_next * ((1 - eta**2) ** 0.5 * eps + eta * z)


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "euler": sample_euler,
    "heun": sample_heun,
    "stochastic": sample_stochastic,
}


def guided(cond_fn: VelocityFn, uncond_fn: VelocityFn | None, scale: float) -> VelocityFn:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 on velocities): v_u + s (v_c - v_u)."""
    if uncond_fn is None or scale == 1.0:
        return cond_fn

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_u = uncond_fn(x, t)
        return v_u + scale * (cond_fn(x, t) - v_u)

    return fn


def sample(cfg: SamplerConfig, cond_fn: VelocityFn, noise: torch.Tensor, uncond_fn: VelocityFn | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Run the configured sampler from ``noise`` (t = 1) to t = 0, with guidance when configured."""
    cfg.check()
    fn = guided(cond_fn, uncond_fn, cfg.cfg_scale)
    ts = timesteps(cfg.steps, cfg.shift, device=noise.device)
    if cfg.name == "stochastic":
        return sample_stochastic(fn, noise, ts, generator, eta=cfg.eta)
    return SAMPLERS[cfg.name](fn, noise, ts, generator)
