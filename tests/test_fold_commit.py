"""Play-speed settings of the engine (issue #12): the finished frames' cache pass folded into the next
chunk's first DiT call (``fold_commit``, infworld/pending_commit.py) and memory reads once per
``memory_every`` frames (infworld/memory/kv_reuse.py MemoryPrefix)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.latent_conv import LatentConvConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.world import RolloutConfig, WorldModel


def conv_net() -> WorldNet:
    """A tiny random-weight v2 world model: conv path with the action shift (it reads the frame before
    each frame, so a folded call must hand the pending frames their predecessor)."""
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=12, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=4, freq_dim=16, action_adaln=True, actions=ActionConfig(num_interact=2),
                    conv=LatentConvConfig(width=8, groups=4, shift_kernel=3))
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():  # random everywhere: every input matters
            p.normal_(0.0, 0.15)
    return WorldNet(dit, PixelTokenizer(2, (8, 8)), (8, 8), {"memory_slots": 64})


def rollout(net: WorldNet, memory: str = "window", frames: int = 12, per_step: int = 1, observe_at: int = -1,
            **config) -> tuple[torch.Tensor, WorldModel]:
    """``frames`` generated frames, ``per_step`` at a time, from a fixed start and fixed random actions;
    real frames observed once at step ``observe_at``. Returns the generated latents (B, F, C, h, w)."""
    settings = ({"budget": 3, "capacity": 32, "local_window": 3, "plain": True} if memory == "vrag"
                else {"budget": 4})
    cfg = {"chunk": 2, "sampler": SamplerConfig(steps=2), "seed": 3, "context_noise": 0.1, **config}
    world = WorldModel(net, make_memory(memory, **settings), RolloutConfig(**cfg))
    rng = np.random.default_rng(0)

    def act(n: int) -> dict[str, np.ndarray]:
        return {"move": rng.integers(0, 9, (1, n)), "view": rng.integers(0, 9, (1, n)),
                "interact": np.zeros((1, n), int)}

    def poses(n: int) -> np.ndarray | None:
        if memory != "vrag":
            return None
        p = np.zeros((1, n, 5))
        p[..., 3] = 40.0 * (world.index + np.arange(n))  # turning: the nearest states keep changing
        return p

    world.reset(rng.integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8), act(1), poses=poses(2))
    out = []
    for i in range(frames // per_step):
        if i == observe_at:
            world.observe(rng.integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8), act(2), poses=poses(2))
        world.step(act(per_step), poses=poses(per_step))
        out.append(world.last_latents)
    return torch.cat(out, 1), world


@pytest.mark.parametrize("per_step,steps,observe_at,cfg", [(1, 1, -1, 1.0), (1, 2, -1, 1.0), (2, 2, -1, 1.0),
                                                            (1, 2, 5, 1.0), (1, 2, -1, 2.0)])
def test_folded_commit_gives_the_rollout_of_separate_commits(per_step, steps, observe_at, cfg):
    net = conv_net()
    sampler = SamplerConfig(steps=steps, cfg_scale=cfg)  # with CFG both velocity fns see the folded frame
    ref, _ = rollout(net, per_step=per_step, observe_at=observe_at, sampler=sampler)
    folded, world = rollout(net, per_step=per_step, observe_at=observe_at, sampler=sampler, fold_commit=True)
    assert world._pending is not None  # the last frame's cache pass really was deferred
    # equal up to float rounding (the pending frames ran in a larger call)
    assert torch.allclose(folded, ref, atol=1e-4), float((folded - ref).abs().max())


def test_folded_commit_saves_a_dit_call_per_step():
    net = conv_net()
    calls = []
    hook = net.dit.register_forward_pre_hook(lambda m, a: calls.append(1))
    rollout(net, frames=8, sampler=SamplerConfig(steps=1))
    separate = len(calls)
    calls.clear()
    rollout(net, frames=8, sampler=SamplerConfig(steps=1), fold_commit=True)
    hook.remove()
    # 8 commit passes fewer: 7 rode along the next step's call, the last one is still pending
    assert len(calls) == separate - 8


def test_folded_state_stays_bounded():
    _, world = rollout(conv_net(), frames=30, fold_commit=True)
    assert len(world.cache) <= world.window - 1 + world.config.chunk
    first = world.state_nbytes()
    for _ in range(10):
        world.step({"move": [[4]], "view": [[4]], "interact": [[0]]})
    assert world.state_nbytes() == first


def test_folded_commit_with_a_memory_stays_close():
    """With a memory the pending frames attend to the next chunk's read, not their own: not exact, but
    the frames must stay close (a wrong position or cache would move them far)."""
    net = conv_net()
    ref, _ = rollout(net, memory="vrag", frames=10)
    folded, _ = rollout(net, memory="vrag", frames=10, fold_commit=True)
    assert (folded - ref).abs().mean() < 0.1 * ref.abs().mean()


def test_memory_every_reads_the_memory_once_per_that_many_frames():
    net = conv_net()
    reads = []
    for every in (1, 4):
        world_reads: list[int] = []
        torch.manual_seed(1)
        memory = make_memory("vrag", budget=3, capacity=32, local_window=3, plain=True)

        def counted(*a, _read=memory.read, _log=world_reads, **k):
            _log.append(a[0])
            return _read(*a, **k)

        memory.read = counted
        world = WorldModel(net, memory, RolloutConfig(chunk=2, sampler=SamplerConfig(steps=1),
                                                      memory_every=every))
        world.reset(np.zeros((1, 2, 8, 8, 3), np.uint8), poses=np.zeros((1, 2, 5)))
        for i in range(12):
            world.step({"move": [[4]], "view": [[7]], "interact": [[0]]}, poses=np.full((1, 1, 5), 40.0 * i))
        reads.append(world_reads)
    # one read per step (at the index of the step's first frame), after the one for the start's commit
    assert reads[0] == [0] + list(range(2, 14))
    assert reads[1] == [0, 4, 8, 12]


def test_memory_every_defaults_to_the_chunk_and_rejects_bad_values():
    net = conv_net()
    world = WorldModel(net, make_memory("window", budget=4), RolloutConfig(chunk=2))
    assert world.prefix.every == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="memory_every"):
            WorldModel(net, make_memory("window", budget=4), RolloutConfig(chunk=2, memory_every=bad))
    with pytest.raises(ConfigError, match="fold_commit"):
        WorldModel(net, make_memory("window", budget=4), RolloutConfig(chunk=2, fold_commit="yes"))
