"""Sliding-window denoising across chunk seams (infworld/sliding.py, RolloutConfig.seam)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fold_commit import conv_net

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError, DataError
from infworld.memory.registry import make_memory
from infworld.streaming import free_rollout
from infworld.world import RolloutConfig, WorldModel


def engine(seam: str, steps: int = 4, name: str = "euler", **kw) -> WorldModel:
    cfg = RolloutConfig(chunk=2, sampler=SamplerConfig(name=name, steps=steps), seed=5, seam=seam, **kw)
    return WorldModel(conv_net(), make_memory("window", budget=4), cfg)


def inputs(frames: int, batch: int = 2) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, (batch, 2, 8, 8, 3), dtype=np.uint8)
    acts = {k: rng.integers(0, 9, (batch, 1 + frames)) for k in ("move", "view")}
    acts["interact"] = np.zeros((batch, 1 + frames), int)
    return context, acts


def latents_of(world: WorldModel, context: np.ndarray, acts: dict[str, np.ndarray]) -> torch.Tensor:
    out = []
    free_rollout(world, context, acts, on_chunk=lambda c: out.append(world.last_latents))
    return torch.cat(out, 1)


@pytest.mark.parametrize("name", ["euler", "stochastic"])
def test_a_single_chunk_is_the_causal_one(name):
    """With no next chunk the two halves of the grid run back to back: strict causality, step for step."""
    context, acts = inputs(2)
    ref = latents_of(engine("causal", name=name), context, acts)
    slid = latents_of(engine("sliding", name=name), context, acts)
    assert torch.allclose(slid, ref, atol=1e-5), float((slid - ref).abs().max())


def test_the_next_chunk_changes_nothing_before_it_but_is_seen_by_it():
    """Chunk 0 finishes alongside chunk 1 yet equals its strict-causal self (block causality holds in
    the joint calls); chunk 1, started while chunk 0 was still noisy, differs from strict causality."""
    context, acts = inputs(4)
    ref = latents_of(engine("causal"), context, acts)
    slid = latents_of(engine("sliding"), context, acts)
    assert torch.allclose(slid[:, :2], ref[:, :2], atol=1e-5)
    assert (slid[:, 2:] - ref[:, 2:]).abs().max() > 1e-3


def test_a_sliding_rollout_is_reproducible_and_any_length():
    context, acts = inputs(7)  # 3 full chunks and a last one of 1 frame
    a = free_rollout(engine("sliding", context_noise=0.1), context, acts)
    b = free_rollout(engine("sliding", context_noise=0.1), context, acts)
    assert a.shape == (2, 7, 8, 8, 3)
    assert np.array_equal(a, b)


def test_a_chunk_must_keep_the_actions_it_was_started_with():
    world = engine("sliding")
    context, acts = inputs(4)
    world.reset(context, {k: a[:, :1] for k, a in acts.items()})
    first = {k: a[:, 1:3] for k, a in acts.items()}
    world.step(first, next_actions={k: a[:, 3:5] for k, a in acts.items()})
    other = {k: (a[:, 3:5] + 1) % 9 for k, a in acts.items()}
    with pytest.raises(DataError, match="started with other actions"):
        world.step(other)


@pytest.mark.parametrize("kw,match", [
    ({"steps": 3}, "even"),
    ({"name": "heun"}, "euler or stochastic"),
    ({"fold_commit": True}, "fold_commit"),
])
def test_sliding_settings_it_cannot_run_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        engine("sliding", **kw)


def test_unknown_seams_and_stray_next_actions_are_refused():
    with pytest.raises(ConfigError, match="seam"):
        engine("diagonal")
    world = engine("causal")
    context, acts = inputs(2)
    world.reset(context, {k: a[:, :1] for k, a in acts.items()})
    with pytest.raises(ConfigError, match="next_actions"):
        step = {k: a[:, 1:3] for k, a in acts.items()}
        world.step(step, next_actions=step)
