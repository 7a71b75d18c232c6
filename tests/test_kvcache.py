"""KV cache: append/evict/reset, and streaming rollouts that equal a full recompute, with flat memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.kvcache import KVCache, KVCacheConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.world import RolloutConfig, WorldModel


def kv(frames: int, value: float, cfg: KVCacheConfig, batch: int = 2):
    shape = (batch, cfg.num_heads, frames * cfg.tokens_per_frame, cfg.head_dim)
    return [
        (torch.full(shape, value + layer), torch.full(shape, -value - layer))
        for layer in range(cfg.num_layers)
    ]


def test_append_evict_reset_len_bytes():
    cfg = KVCacheConfig(num_layers=2, num_heads=2, head_dim=4, tokens_per_frame=3, capacity=5)
    cache = KVCache(cfg, batch_size=2)
    nbytes = cache.nbytes()
    assert len(cache) == 0 and cache.past(0) is None
    assert nbytes == 2 * (2 * 2 * 2 * 5 * 3 * 4) * 4 + 5 * 8  # K and V float32 buffers + frame indices
    cache.append(kv(2, 10.0, cfg), [0, 1])
    cache.append(kv(3, 20.0, cfg), [2, 3, 4])
    assert len(cache) == 5 and cache.frame_index.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="capacity"):
        cache.append(kv(1, 30.0, cfg), [5])
    assert cache.evict(keep=2) == 3
    assert cache.frame_index.tolist() == [3, 4]
    past = cache.past(base=3)
    assert past.positions.tolist() == [0.0, 1.0] and not past.pinned.any()
    assert past.keys[1].shape == (2, 2, 2 * 3, 4)
    assert torch.all(past.keys[0] == 20.0) and torch.all(past.values[1] == -21.0)  # survivors moved to front
    cache.append(kv(1, 30.0, cfg), [5])
    assert torch.all(cache.past(0).keys[0][:, :, -3:] == 30.0)
    assert cache.evict(keep=10) == 0
    assert cache.nbytes() == nbytes  # fixed buffers
    cache.reset()
    assert len(cache) == 0
    with pytest.raises(ConfigError, match="layers"):
        cache.append(kv(1, 1.0, cfg)[:1], [0])
    with pytest.raises(ConfigError, match="expected"):
        cache.append(kv(1, 1.0, cfg, batch=3), [0])
    with pytest.raises(ConfigError, match="capacity"):
        KVCacheConfig(1, 1, 4, 1, capacity=0).check()


def tiny_net(seed: int = 0, max_frames: int = 8) -> WorldNet:
    torch.manual_seed(seed)
    cfg = DiTConfig(
        in_channels=12,
        latent_size=(4, 4),
        patch_size=2,
        dim=32,
        depth=2,
        num_heads=2,
        max_frames=max_frames,
        freq_dim=16,
        actions=ActionConfig(num_interact=2),
    )
    dit = DiT(cfg)
    with torch.no_grad():  # random weights everywhere, so every input matters
        for p in dit.parameters():
            p.normal_(0.0, 0.15)
    return WorldNet(dit, PixelTokenizer(2, (8, 8)), (8, 8), {})


def rollout(net: WorldNet, use_cache: bool, window: int, chunk: int, chunks: int, sampler: str = "euler"):
    world = WorldModel(
        net,
        make_memory("window", budget=window),
        RolloutConfig(chunk=chunk, sampler=SamplerConfig(name=sampler, steps=3), use_cache=use_cache, seed=7),
    )
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
    world.reset(
        ctx,
        {
            "move": rng.integers(0, 10, (2, 2)),
            "view": rng.integers(0, 10, (2, 2)),
            "interact": rng.integers(0, 2, (2, 2)),
        },
    )
    latents, nbytes = [], []
    for _ in range(chunks):
        world.step(
            {
                "move": rng.integers(0, 10, (2, chunk)),
                "view": rng.integers(0, 10, (2, chunk)),
                "interact": rng.integers(0, 2, (2, chunk)),
            }
        )
        latents.append(world.last_latents)
        nbytes.append(world.state_nbytes())
    return torch.cat(latents, dim=1), nbytes, world


@pytest.mark.parametrize(
    "window,chunk,sampler", [(4, 2, "euler"), (5, 3, "heun"), (1, 1, "euler"), (8, 4, "stochastic")]
)
def test_cached_rollout_equals_full_recompute_including_evictions(window, chunk, sampler):
    net = tiny_net()
    cached, _, world = rollout(net, True, window, chunk, chunks=5, sampler=sampler)
    full, _, _ = rollout(net, False, window, chunk, chunks=5, sampler=sampler)
    assert world.index == 3 + 5 * chunk > window  # the cache has evicted frames
    assert len(world.cache) == window - 1
    assert torch.allclose(cached, full, atol=1e-4), float((cached - full).abs().max())


def test_window_matters_and_cache_bug_would_be_caught():
    net = tiny_net()
    a, _, _ = rollout(net, True, 2, 2, chunks=4)
    b, _, _ = rollout(net, True, 6, 2, chunks=4)
    assert not torch.allclose(a, b, atol=1e-3)  # a different window is a different model input


def test_memory_state_is_flat_over_a_long_rollout():
    net = tiny_net(max_frames=4)
    _, nbytes, world = rollout(net, True, window=4, chunk=2, chunks=60)
    assert world.index == 123
    assert len(set(nbytes)) == 1 and nbytes[0] == world.cache.nbytes()
    _, grow, _ = rollout(net, False, window=4, chunk=2, chunks=6)
    assert grow[-1] > grow[0]  # the uncached reference keeps the whole history
