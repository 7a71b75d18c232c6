"""Memory frames' keys/values kept between chunks (infworld/memory/kv_reuse.py): a rollout with reuse
equals one without, frames are really reused, and the kept set never grows past one read."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError
from infworld.memory.base import MemoryContext, slot_positions
from infworld.memory.context import MemoryLayout, memory_past
from infworld.memory.kv_reuse import FrameKVCache, frame_keys
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.world import RolloutConfig, WorldModel


def iso_net(encoding: str = "isolated", pose_dim: int = 0) -> WorldNet:
    """A tiny random-weight world model with the given memory layout (as test_memory_v2.span_net)."""
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=12, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=4, freq_dim=16, num_frame_kinds=3, pose_dim=pose_dim,
                    actions=ActionConfig(num_interact=2))
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():  # random everywhere: every input matters
            p.normal_(0.0, 0.15)
    return WorldNet(dit, PixelTokenizer(2, (8, 8)), (8, 8),
                    {"memory_encoding": encoding, "memory_span": 4, "memory_slots": 64})


def rollout(net: WorldNet, memory: str, settings: dict, reuse: bool, chunks: int, batch: int = 1,
            moving: bool = True, check=None) -> tuple[np.ndarray, torch.Tensor, WorldModel]:
    """``chunks`` chunks of 2 frames from random starts and actions (the same for every call); poses
    walk (``moving``) or stand still. ``check(world)`` runs after every step."""
    torch.manual_seed(1)  # an untrained HPMC compressor is built from the global RNG
    world = WorldModel(net, make_memory(memory, **settings),
                       RolloutConfig(chunk=2, sampler=SamplerConfig(steps=2), seed=3, reuse_memory_kv=reuse))
    rng = np.random.default_rng(0)

    def poses(n: int, start: int) -> np.ndarray:
        p = np.zeros((batch, n, 5))
        if moving:
            p[..., 0] = 10.0 * (start + np.arange(n))
            p[..., 3] = 15.0 * (start + np.arange(n))
        return p

    def act(n: int) -> dict[str, np.ndarray]:
        return {"move": rng.integers(0, 9, (batch, n)), "view": rng.integers(0, 9, (batch, n)),
                "interact": np.zeros((batch, n), int)}

    world.reset(rng.integers(0, 256, (batch, 2, 8, 8, 3), dtype=np.uint8), act(1), poses=poses(2, 0))
    frames, latents = [], []
    for _ in range(chunks):
        frames.append(world.step(act(2), poses=poses(2, world.index)))
        latents.append(world.last_latents)
        if check is not None:
            check(world)
    return np.concatenate(frames, 1), torch.cat(latents, 1), world


@pytest.mark.parametrize("memory,settings", [
    ("full", {"budget": 40, "local_window": 4, "plain": True}),
    ("vrag", {"budget": 6, "capacity": 32, "local_window": 4, "plain": True}),
    ("hpmc", {"budget": 6, "local_window": 4}),
])
def test_reuse_gives_the_rollout_of_a_full_recompute(memory, settings):
    net = iso_net()
    off_frames, off_lat, off = rollout(net, memory, settings, False, chunks=20, batch=2)
    on_frames, on_lat, on = rollout(net, memory, settings, True, chunks=20, batch=2)
    assert off.prefix.cache is None and on.prefix.cache is not None
    assert off.last_context.num_frames > 1  # the memory really fed context
    # equal up to float rounding (a frame encoded in a smaller batch rounds differently, ~1e-7)
    assert torch.allclose(on_lat, off_lat, atol=1e-4), float((on_lat - off_lat).abs().max())
    assert np.abs(on_frames.astype(int) - off_frames.astype(int)).max() <= 1
    cache = on.prefix.cache
    assert cache.reused > cache.computed > 0  # most frames came from the cache
    if memory == "full":  # every frame ran once per batch row, when it left the local window
        assert cache.computed == 2 * on.last_context.num_frames


def test_full_reuse_counts():
    """``full``: each chunk, only the frames that just left the local window run through the DiT."""
    net = iso_net()
    _, _, world = rollout(net, "full", {"budget": 40, "local_window": 4, "plain": True}, True, chunks=10)
    cache = world.prefix.cache
    reads = [1 + 2 * i for i in range(9)]  # frames read per chunk after the first: 1, 3, 5, ... 17
    assert cache.computed == reads[-1] and cache.reused == sum(reads) - reads[-1]
    assert len(cache) == reads[-1]


def test_kept_frames_stay_within_the_budget_over_a_long_rollout():
    budget, batch = 5, 2
    sizes = []

    def check(world: WorldModel) -> None:
        cache = world.prefix.cache
        assert len(cache) <= budget * batch  # one entry per (row, frame) of the last read at most
        sizes.append(cache.nbytes())

    _, _, world = rollout(iso_net(), "vrag", {"budget": budget, "capacity": 16, "local_window": 4,
                                              "plain": True, "poses": "dead_reckon"},
                          True, chunks=80, batch=batch, check=check)
    assert world.index > 150 and world.prefix.cache.reused > 0
    per_frame = sizes[-1] // len(world.prefix.cache)
    assert max(sizes) <= budget * batch * per_frame and sizes[-1] == sizes[len(sizes) // 2]
    assert world.state_nbytes() >= world.prefix.nbytes() > 0  # counted as rollout state
    world.reset(np.zeros((batch, 2, 8, 8, 3), np.uint8), poses=np.zeros((batch, 2, 5)))
    assert len(world.prefix.cache) == 0 and world.prefix.cache.reused == 0 and world.last_context is None


def test_pose_conditioned_frames_are_reused_only_while_the_camera_is_still():
    """With pose features (relative to the current camera) a moving camera changes every memory
    frame's conditioning: recomputed; a still one does not: reused. Equal to no reuse either way."""
    net = iso_net(pose_dim=6)
    settings = {"budget": 40, "local_window": 4}  # marked frames with their poses
    for moving in (True, False):
        _, off_lat, _ = rollout(net, "full", settings, False, chunks=8, moving=moving)
        _, on_lat, on = rollout(net, "full", settings, True, chunks=8, moving=moving)
        assert torch.allclose(on_lat, off_lat, atol=1e-4)
        assert on.last_context.poses is not None
        assert (on.prefix.cache.reused == 0) == moving


def test_reuse_off_keeps_nothing():
    for encoding in ("isolated", "causal"):
        w = WorldModel(iso_net(encoding), make_memory("full", budget=8, local_window=4, plain=True),
                       RolloutConfig(reuse_memory_kv=False))
        assert w.prefix.cache is None and w.prefix.nbytes() == 0
    with pytest.raises(ConfigError, match="reuse_memory_kv"):
        RolloutConfig(reuse_memory_kv="yes").check()


@pytest.mark.parametrize("memory,settings", [
    ("full", {"budget": 40, "local_window": 4, "plain": True}),
    ("vrag", {"budget": 4, "capacity": 32, "local_window": 4, "plain": True}),
    ("kv", {"budget": 4, "pool": 8, "local_window": 4, "plain": True}),
    ("hpmc", {"budget": 4, "local_window": 4}),
])
def test_causal_reuse_gives_the_rollout_of_a_full_recompute(memory, settings):
    """Causal layout (memory/causal_reuse.py): the unchanged prefix of a read is kept; the rollout
    equals re-encoding every chunk, and frames were really reused."""
    net = iso_net("causal")
    _, off_lat, off = rollout(net, memory, settings, False, chunks=16, batch=2)
    _, on_lat, on = rollout(net, memory, settings, True, chunks=16, batch=2)
    assert off.prefix.cache is None and type(on.prefix.cache).__name__ == "CausalKVCache"
    assert off.last_context.num_frames > 1
    assert torch.allclose(on_lat, off_lat, atol=1e-4), float((on_lat - off_lat).abs().max())
    cache = on.prefix.cache
    assert cache.reused > 0 and cache.computed > 0
    assert len(cache) <= 2 * on.memory.max_context() and on.prefix.nbytes() > 0  # one read at most


def test_causal_cache_runs_only_the_frames_after_the_first_change():
    from infworld.memory.causal_reuse import CausalKVCache

    dit = iso_net("causal").dit
    g = torch.Generator().manual_seed(0)
    b, m = 2, 5
    lat = torch.randn(b, m, 12, 4, 4, generator=g)
    acts = {"move": torch.randint(0, 9, (b, m), generator=g), "view": torch.zeros(b, m, dtype=torch.long),
            "interact": torch.zeros(b, m, dtype=torch.long)}
    layout = MemoryLayout("causal", 0)

    def ctx_of(latents: torch.Tensor, sources: torch.Tensor, shift: float) -> MemoryContext:
        return MemoryContext(latents=latents, actions=acts, sources=sources,
                             positions=torch.arange(m, dtype=torch.float32) - m + shift)

    src = torch.arange(m).repeat(b, 1)
    cache = CausalKVCache()
    with torch.no_grad():
        memory_past(dit, ctx_of(lat, src, 0.0), None, layout=layout, reuse=cache)
        assert (cache.computed, cache.reused) == (b * m, 0)
        # the block moved by 3 positions (the engine's shift), nothing else changed: nothing runs
        same = memory_past(dit, ctx_of(lat, src, 3.0), None, layout=layout, reuse=cache)
        assert (cache.computed, cache.reused) == (b * m, b * m)
        # frame 3 replaced in one row: frames 3 and 4 run again, in both rows
        lat2, src2 = lat.clone(), src.clone()
        lat2[1, 3], src2[1, 3] = torch.randn(12, 4, 4, generator=g), 99
        got = memory_past(dit, ctx_of(lat2, src2, 7.0), None, layout=layout, reuse=cache)
        assert (cache.computed, cache.reused) == (b * m + b * 2, b * m + b * 3)
        want = memory_past(dit, ctx_of(lat2, src2, 7.0), None, layout=layout)
        base = memory_past(dit, ctx_of(lat, src, 3.0), None, layout=layout)
    for k_got, k_want in zip(got.keys + got.values, want.keys + want.values, strict=True):
        torch.testing.assert_close(k_got, k_want, atol=1e-5, rtol=1e-4)
    for k_got, k_want in zip(same.keys, base.keys, strict=True):
        torch.testing.assert_close(k_got, k_want, atol=1e-5, rtol=1e-4)


def test_frame_cache_computes_only_what_it_lacks_and_evicts_the_rest():
    calls = []

    def compute(idx: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        calls.append(idx.tolist())
        x = idx.float()[:, None, None, None].expand(-1, 1, 2, 3)  # (F, H, N, hd) = the frame's number
        return [(x, -x), (2 * x, -2 * x)]

    cache = FrameKVCache()
    out = cache.lookup(["a", "b", "a", "c"], compute)
    assert calls == [[0, 1, 3]]  # "a" twice: computed once
    assert out[1][0][:, 0, 0, 0].tolist() == [0.0, 2.0, 0.0, 6.0]
    out = cache.lookup(["c", "d"], compute)
    assert calls[-1] == [1] and len(cache) == 2  # "a", "b" evicted
    assert out[0][1][:, 0, 0, 0].tolist() == [-3.0, -1.0]  # "c" as first computed, "d" fresh
    assert (cache.reused, cache.computed) == (2, 4)


def test_frame_keys_name_raw_frames_by_source_and_the_rest_by_content():
    lat = torch.randn(2, 3, 4, 2, 2)
    acts = {"move": torch.tensor([[1, 2, 3], [1, 2, 3]])}
    kinds = torch.ones(2, 3, dtype=torch.long)
    src = torch.tensor([[5, 6, -1], [5, 6, -1]])
    keys = frame_keys(lat, src, kinds, acts, None)
    assert keys[0] != keys[3]  # same source, another batch row
    moved = frame_keys(lat + 1, src, kinds, acts, None)
    assert moved[:2] == keys[:2] and moved[2] != keys[2]  # raw: by source; summary: by content
    other = frame_keys(lat, src, kinds, {"move": torch.tensor([[1, 7, 3], [1, 2, 3]])}, None)
    assert other[1] != keys[1] and other[0] == keys[0]  # the conditioning is part of the key
    nan = torch.full((2, 3, 6), float("nan"))
    assert frame_keys(lat, src, kinds, acts, nan) == frame_keys(lat, src, kinds, acts, nan.clone())


def test_training_with_gradients_never_reads_the_cache():
    dit = iso_net().dit
    g = torch.Generator().manual_seed(0)
    ctx = MemoryContext(torch.randn(1, 3, 12, 4, 4, generator=g),
                        {"move": torch.tensor([[1, 2, 3]]), "view": torch.tensor([[0, 1, 2]]),
                         "interact": torch.zeros(1, 3, dtype=torch.long)},
                        slot_positions(3, 4), sources=torch.tensor([[0, 1, 2]]))
    cache = FrameKVCache()
    past = memory_past(dit, ctx, None, layout=MemoryLayout("isolated", 4), reuse=cache)
    assert len(cache) == 0 and past.keys[0].requires_grad
    with torch.no_grad():
        memory_past(dit, ctx, None, layout=MemoryLayout("isolated", 4), reuse=cache)
    assert len(cache) == 3
