"""Sliding-window denoising across chunk seams (WorldScape's seam option; issue #12).

With strict chunk causality (the default, ``RolloutConfig.seam = "causal"``) chunk k is denoised
from pure noise to clean while attending only to finished frames; chunk k + 1 starts from noise
once chunk k is in the cache, so nothing ties the two while either is being drawn, and a jump can
show at the seam. Sliding-window denoising keeps two chunks in flight, staggered by half the
sampler's grid ts[0] = 1 > ts[1] > ... > ts[S] = 0 (S even):

    one engine step:   chunk k      ts[S/2] -> ts[S]   (its second half: it finishes)
                       chunk k + 1  ts[0]   -> ts[S/2] (its first half: it starts)

Both run in the same DiT calls, chunk k + 1 attending block-causally to chunk k *while chunk k is
still being denoised* (neighbouring chunks see each other in the making, as in WorldScape's
sliding-window denoising and Diffusion Forcing's staggered levels, Chen et al. 2024 Sec. 3.3).
A diffusion-forcing model is trained with an independent noise level per frame
(diffusion/forcing.py), so staggered levels are inputs it knows.

The price is one chunk of action lookahead: to finish chunk k the engine must already know chunk
k + 1's actions. That suits offline rollouts and the benchmark (``free_rollout`` passes them), not
live play, where the next key is not yet pressed. The per-frame update is the stochastic sampler's
(samplers.stochastic_step) or Euler's, each with one level per frame, so the ``euler`` and
``stochastic`` samplers work; ``heun`` (two evaluations per step) does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from infworld.diffusion.samplers import SamplerConfig, euler_step, guided, stochastic_step, timesteps
from infworld.errors import ConfigError, DataError
from infworld.models.action import null_like

if TYPE_CHECKING:  # the engine imports this module
    from infworld.world import WorldModel

SEAMS = ("causal", "sliding")


def check_sliding(seam: str, sampler_name: str, steps: int, fold_commit: bool) -> None:
    """ConfigError unless ``seam`` is known and, for "sliding", the sampler can be split in halves."""
    if seam not in SEAMS:
        raise ConfigError(f"rollout seam: expected one of {list(SEAMS)}, got {seam!r}")
    if seam != "sliding":
        return
    if sampler_name not in ("euler", "stochastic"):
        raise ConfigError(f"rollout seam 'sliding': needs the euler or stochastic sampler (one evaluation "
                          f"per step), got {sampler_name!r}")
    if steps < 2 or steps % 2:
        raise ConfigError(f"rollout seam 'sliding': two chunks in flight split the sampler's steps in "
                          f"halves, so they must be even, got {steps}")
    if fold_commit:
        raise ConfigError("rollout seam 'sliding' and fold_commit: choose one (sliding needs the next "
                          "chunk's actions, which play does not have)")


def _update(x: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, sampler: SamplerConfig,
            generator: torch.Generator) -> torch.Tensor:
    """One sampler step per frame: x (B, F, C, h, w), v its velocity, t / t_next (F,) levels; the
    samplers' own step (samplers.py) with the levels broadcast per frame."""
    t, t_next = t.view(1, -1, 1, 1, 1).to(x.dtype), t_next.view(1, -1, 1, 1, 1).to(x.dtype)
    if sampler.name == "stochastic":
        return stochastic_step(x, v, t, t_next, sampler.eta, generator)
    return euler_step(x, v, t, t_next)


def _denoise(world: WorldModel, x: torch.Tensor, acts: dict[str, torch.Tensor],
             levels: list[torch.Tensor]) -> torch.Tensor:
    """Run ``x`` (B, F, ...) through the per-frame level schedule ``levels`` [(F,) per step, first =
    x's levels], attending to the engine's context; returns x at ``levels[-1]``."""
    s = world.config.sampler
    n = x.shape[1]
    cond = world._velocity(acts, n)
    uncond = world._velocity(null_like(acts), n) if s.cfg_scale != 1.0 else None
    fn = guided(cond, uncond, s.cfg_scale)
    for t, t_next in zip(levels[:-1], levels[1:], strict=True):
        x = _update(x, fn(x, t), t, t_next, s, world.generator)
    return x


def sliding_generate(world: WorldModel, acts: dict[str, torch.Tensor],
                     next_acts: dict[str, torch.Tensor] | None) -> torch.Tensor:
    """The latents (B, n, C, h, w) of the chunk that ``acts`` (B, n) lead to, with the next chunk
    (``next_acts``, (B, n2); None = there is none: the chunk finishes alone) started alongside.

    The chunk itself was started by the previous call (``world._ahead``) unless this is the first
    chunk after a reset or observed frames."""
    s = world.config.sampler
    d = world.dit.cfg
    ts = timesteps(s.steps, s.shift)  # (S + 1,) from 1 to 0
    half = s.steps // 2
    n = next(iter(acts.values())).shape[1]

    def noise(m: int) -> torch.Tensor:
        return torch.randn((world.batch, m, d.in_channels, *d.latent_size), generator=world.generator
                           ).to(world.device)

    ahead = world._ahead
    if ahead is None:  # nothing in flight: this chunk's first half alone, as strict causality would
        x = _denoise(world, noise(n), acts, [ts[i].expand(n) for i in range(half + 1)])
    else:
        x, started = ahead
        if any(not torch.equal(started[k], a) for k, a in acts.items()):
            raise DataError("sliding-window denoising: this chunk was started with other actions than "
                            "the ones given now (pass the same next_actions the step before)",
                            field="actions")
    world._ahead = None
    if next_acts is None:
        return _denoise(world, x, acts, [ts[i].expand(n) for i in range(half, s.steps + 1)])
    m = next(iter(next_acts.values())).shape[1]
    joined = {k: torch.cat([a, next_acts[k]], dim=1) for k, a in acts.items()}
    levels = [torch.cat([ts[half + i].expand(n), ts[i].expand(m)]) for i in range(half + 1)]
    both = _denoise(world, torch.cat([x, noise(m)], dim=1), joined, levels)
    world._ahead = (both[:, n:], {k: a.clone() for k, a in next_acts.items()})
    return both[:, :n]


def grouped_next(world: WorldModel, next_actions: Mapping[str, object] | None
                 ) -> dict[str, torch.Tensor] | None:
    """``next_actions`` (B, n2) per field as the engine's grouped action tensors, or None."""
    if next_actions is None:
        return None
    first = next(iter(next_actions.values()))
    n2 = int(torch.as_tensor(first).shape[-1])
    return world.video.group(world._actions(next_actions, n2))
