"""Self-Forcing: the student generates chunk after chunk from its own outputs, as at inference.

Self-Forcing (Huang et al. 2025, arXiv 2506.08009, Algorithm 1): during training the autoregressive
student rolls out exactly as it will at inference, each chunk conditioned on the keys/values of its
own earlier (generated) chunks, so train and test see the same inputs (no exposure bias). The few-step
student denoises a chunk with a fixed grid t_0 = 1 > t_1 > ... > t_{N-1} and fresh noise between
steps (x_{i+1} = (1 - t_{i+1}) x0_i + t_{i+1} z, the ``stochastic`` sampler with eta = 1). Training
draws one exit step s per chunk: steps before s run without gradient, step s runs with it and its
clean estimate x0_s is the chunk's output ("gradient through one randomly chosen denoising step").
The finished chunk enters the KV cache without gradient (the paper's truncated cache gradient).

This module drives the inference engine (infworld/world.py) itself: the context (KV cache, memory
prefix, the previous frame for the shift path, context noise) and every random draw come from
:class:`~infworld.world.WorldModel`, so with ``exit = N - 1`` the rollout returns bit for bit the
frames that ``WorldModel.step`` returns for the same seed (tests/test_distill.py checks it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from infworld.diffusion.samplers import SamplerConfig, timesteps
from infworld.errors import ConfigError


def student_sampler(steps: int, shift: float = 1.0) -> SamplerConfig:
    """The few-step student's sampler: fresh noise between steps (eta = 1), no guidance (distilled in)."""
    return SamplerConfig(name="stochastic", steps=steps, shift=shift, cfg_scale=1.0, eta=1.0)


def distilled_steps(steps: int) -> list[int]:
    """Step counts a student trained on the ``steps``-point grid can run: the divisors of ``steps``.

    The grid of d steps, linspace(1, 0, d + 1) shifted, is a subset of the grid of ``steps`` exactly
    when d divides ``steps`` (e.g. 4 -> 1, 2, 4), so each of its times was trained.
    """
    if steps < 1:
        raise ConfigError(f"distill.steps: expected >= 1, got {steps}")
    return [d for d in range(1, steps + 1) if steps % d == 0]


def check_student_steps(model_config: Mapping[str, Any], steps: int, source: str) -> None:
    """ConfigError when a distilled student (``distilled_steps`` in its export) is asked for a step
    count outside its grid; models without that key (teachers) run any step count."""
    allowed = model_config.get("distilled_steps")
    if allowed and steps not in allowed:
        raise ConfigError(f"{source}: a student distilled for {list(allowed)} sampling steps cannot run "
                          f"{steps} (its few-step grid has no other times); choose one of {list(allowed)}")


def denoise_chunk(engine: Any, acts: Mapping[str, torch.Tensor], exit_step: int, grad: bool) -> torch.Tensor:
    """One chunk of the student's few-step sampler through ``engine``; returns x0 at ``exit_step``.

    ``acts``: grouped, checked actions (B, n) of the chunk (``engine.video.group(engine._actions(...))``).
    Draws the same noise in the same order as ``WorldModel.step`` with the ``stochastic`` sampler
    (eta = 1): the initial noise, then one fresh draw per step run. Only the network evaluation at
    ``exit_step`` is recorded for autograd (when ``grad``).
    """
    cfg = engine.config.sampler
    if cfg.name != "stochastic" or cfg.eta != 1.0 or cfg.cfg_scale != 1.0:
        raise ConfigError("self-forcing: the engine's sampler must be the student's (stochastic, eta 1, "
                          f"cfg_scale 1), got {cfg}")
    if not 0 <= exit_step < cfg.steps:
        raise ConfigError(f"self-forcing: exit step {exit_step} outside 0..{cfg.steps - 1}")
    n = next(iter(acts.values())).shape[1]
    d = engine.dit.cfg
    noise = torch.randn((engine.batch, n, d.in_channels, *d.latent_size), generator=engine.generator)
    with torch.no_grad():
        fn = engine._velocity(acts, n)  # the context keys/values, computed once, without gradient
    ts = timesteps(cfg.steps, cfg.shift, device=engine.device)
    x = noise.to(engine.device)
    for i in range(cfg.steps):
        t, t_next = ts[i], ts[i + 1]
        with torch.set_grad_enabled(grad and i == exit_step):
            x0 = x - t * fn(x, t)
        z = torch.randn(x.shape, generator=engine.generator, device=x.device, dtype=x.dtype)
        if i == exit_step:
            return x0
        x = (1 - t_next) * x0.detach() + t_next * z
    raise AssertionError("unreachable")


def self_forcing_rollout(engine: Any, context_frames: Any, context_actions: Mapping[str, Any] | None,
                         chunk_actions: Sequence[Mapping[str, Any]], exit_steps: Sequence[int],
                         grad: bool = True, context_poses: Any = None,
                         chunk_poses: Sequence[Any] | None = None) -> list[torch.Tensor]:
    """Reset ``engine`` on real context frames, then generate one chunk per entry of ``chunk_actions``.

    ``context_frames``: (B, K, H, W, 3) uint8; ``chunk_actions``: per chunk, per-frame action fields
    (B, n); ``exit_steps``: the exit step of each chunk. Returns the chunks' clean latents (B, n, C,
    h, w), each a function of the student's parameters through its exit step when ``grad``; the
    engine's cache and memory hold the detached chunks afterwards (ready for more).
    """
    if len(exit_steps) != len(chunk_actions):
        raise ConfigError(f"self-forcing: {len(exit_steps)} exit steps for {len(chunk_actions)} chunks")
    engine.reset(context_frames, context_actions, context_poses)
    out = []
    for c, (actions, s) in enumerate(zip(chunk_actions, exit_steps, strict=True)):
        n = int(next(iter(actions.values())).shape[1])
        acts = engine.video.group(engine._actions(actions, n))
        poses = chunk_poses[c] if chunk_poses is not None else None
        p = engine.video.poses(engine._poses(poses, n))
        latents = denoise_chunk(engine, acts, int(s), grad)
        if engine.frames_per_latent > 1:  # a streaming video decoder keeps its state as at inference
            engine.video.decode(latents.detach(), True)
        engine._commit(latents.detach(), acts, p)
        out.append(latents)
    return out
