"""HPMC ("hpmc"): fixed budget, whole history covered, chunked == one write, gradients, engine run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.errors import MemoryConfigError
from infworld.memory.base import COMPRESSED_KIND, MEMORY_KIND, slot_positions
from infworld.memory.compressor import CompressorConfig, TemporalCompressor
from infworld.memory.hpmc import HPMCMemory, merge_start
from infworld.memory.registry import make_memory
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel

SHAPE = (2, 2, 2)  # (C, h, w): tiny latents keep 10,000-frame rollouts in seconds
TINY = {"hidden": 8, "depth": 1}


def frames(n: int, b: int = 1, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(b, n, *SHAPE, generator=g)
    acts = {"move": torch.randint(0, 9, (b, n), generator=g),
            "view": torch.randint(0, 9, (b, n), generator=g)}
    return lat, acts


def chunked(mem: HPMCMemory, lat: torch.Tensor, acts: dict[str, torch.Tensor],
            sizes: tuple[int, ...]) -> None:
    """Write ``lat`` in chunks cycling through ``sizes`` (the engine's way)."""
    i, k = 0, 0
    while i < lat.shape[1]:
        j = min(i + sizes[k % len(sizes)], lat.shape[1])
        mem.write(lat[:, i:j], {n: a[:, i:j] for n, a in acts.items()}, None, i)
        i, k = j, k + 1


def randomised(mem: HPMCMemory, seed: int = 1) -> TemporalCompressor:
    """A compressor that is not average pooling (as after training), attached to ``mem``."""
    module = HPMCMemory.build_module({"factor": mem.factor, **TINY}, SHAPE)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    mem.attach(module)
    return module


@pytest.mark.parametrize("n", [100, 1000, 5000])
def test_fixed_budget_covers_the_whole_history(n):
    mem = make_memory("hpmc", budget=8, local_window=4, **TINY)
    lat, acts = frames(n)
    with torch.no_grad():
        chunked(mem, lat, acts, (4,))
        ctx = mem.read(n)  # the engine reads right after writing
    assert ctx.latents.shape == (1, 8, *SHAPE) and mem.max_context() == 8  # whatever the history length
    spans = mem.spans()
    limit = n - 3  # frames n-3.. are in the engine's cache (local_window - 1 = 3)
    assert spans[0][0] == 0 and spans[-1][1] == limit - 1  # reaches back to frame 0, up to the window
    assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:], strict=False))  # no gaps, no overlap
    levels = mem.levels()
    assert levels == sorted(levels, reverse=True)  # older history is more compressed
    assert max(levels) <= 2 + int(np.log(n) / np.log(4)) * 2  # logarithmic, not a running sum
    real = ctx.valid[0] if ctx.valid is not None else torch.ones(8, dtype=torch.bool)
    assert int(real.sum()) == len(spans)
    kinds, src = ctx.kinds[0][real], ctx.sources[0][real]
    for (first, _), lv, kind, s in zip(spans, levels, kinds.tolist(), src.tolist(), strict=True):
        assert kind == (COMPRESSED_KIND if lv else MEMORY_KIND) and s == (first if lv == 0 else -1)
    moves = ctx.actions["move"][0][real]
    for (first, _), lv, mv in zip(spans, levels, moves.tolist(), strict=True):
        assert mv == (int(acts["move"][0, first]) if lv == 0 else -1)  # raw frames keep their action
    assert torch.equal(ctx.positions, slot_positions(8, 4)) and ctx.poses is None and not mem.needs_poses


def test_merge_schedule():
    # The schedule: a clean 4x merge when a run of one level exists, never the giant oldest slot.
    assert merge_start([0] * 9, 4) == 0
    assert merge_start([2, 2, 2, 2, 1, 0, 0, 0, 0], 4) == 0
    assert merge_start([3, 1, 0, 0, 0, 0, 0, 0, 0], 4) == 2
    assert merge_start([2, 2, 2, 1, 1, 1, 0, 0, 0], 4) == 3  # no run: lowest level reaching the newest 4


def test_frame_zero_reaches_the_context():
    n = 300
    lat, acts = frames(n)
    outs = []
    for first in (lat[:, :1], lat[:, :1] + 1.0):
        mem = make_memory("hpmc", budget=8, local_window=4, **TINY)
        randomised(mem)
        x = torch.cat([first, lat[:, 1:]], dim=1)
        with torch.no_grad():
            chunked(mem, x, acts, (4,))
            outs.append(mem.read(n).latents)
    diff = (outs[0] - outs[1]).abs().flatten(2).amax(-1)[0]  # (M,)
    real = len(mem.spans())
    assert diff[-real] > 1e-4  # the oldest slot holds frame 0
    assert torch.all(diff[-real + 1:] == 0)  # the others do not depend on it


@pytest.mark.parametrize("n", [5, 37, 57])
def test_chunked_writes_equal_one_write(n):
    lw = 4
    lat, acts = frames(n + lw - 1, b=2)
    contexts, spans = [], []
    for how in ("one", "chunks", "engine"):
        mem = make_memory("hpmc", budget=8, local_window=lw, **TINY)
        randomised(mem)
        with torch.no_grad():
            if how == "one":  # training: one write of the history, read after the clip's window
                mem.write(lat[:, :n], {k: a[:, :n] for k, a in acts.items()}, None, 0)
            elif how == "chunks":
                chunked(mem, lat[:, :n], {k: a[:, :n] for k, a in acts.items()}, (4, 3, 1))
            else:  # the engine wrote n + lw - 1 frames; its cache holds the newest lw - 1
                chunked(mem, lat, acts, (2,))
            spans.append(mem.spans(n + lw - 1))
            contexts.append(mem.read(n + lw - 1))
    assert spans[0] == spans[1] == spans[2] and spans[0][-1][1] == n - 1
    assert all(last < n - 2 for _, last in mem.spans(n + lw - 3))  # reading behind: nothing newer
    for ctx in contexts[1:]:
        torch.testing.assert_close(ctx.latents, contexts[0].latents, atol=1e-5, rtol=0)
        assert torch.equal(ctx.sources, contexts[0].sources) and torch.equal(ctx.kinds, contexts[0].kinds)
        for k in acts:
            assert torch.equal(ctx.actions[k], contexts[0].actions[k])


def test_gradients_reach_the_compressor_and_the_latents():
    n, lw = 40, 4
    mem = make_memory("hpmc", budget=8, local_window=lw, **TINY)
    module = randomised(mem)
    lat, acts = frames(n + lw - 1)
    lat.requires_grad_(True)
    mem.write(lat, acts, None, 0)  # grad enabled, as in training
    ctx = mem.read(n + lw - 1)
    ctx.latents.pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    g = lat.grad.flatten(2).abs().sum(-1)[0]  # (frames,)
    assert g[0] > 0 and torch.all(g[:n] > 0)  # every history frame, frame 0 included
    assert torch.all(g[n:] == 0)  # the clip's local window is not memory


def test_untrained_compressor_is_average_pooling():
    mem = make_memory("hpmc", budget=4, local_window=1, factor=4)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        mem.write(x[:, None].expand(3, 5, *SHAPE), {}, None, 0)  # 5 identical frames: one merge
    assert mem.levels() == [1, 0]
    ctx = mem.read(5)
    torch.testing.assert_close(ctx.latents[:, -2], x, atol=1e-6, rtol=0)
    module = TemporalCompressor(CompressorConfig(channels=2, hidden=8, depth=1))
    a = torch.randn(2, 4, *SHAPE)
    torch.testing.assert_close(module(a, torch.zeros(2, 4, dtype=torch.long)), a.mean(1))


def test_bad_settings_are_rejected():
    with pytest.raises(MemoryConfigError, match="hpmc.*budget 3 must be >= factor 4"):
        make_memory("hpmc", budget=3)
    with pytest.raises(MemoryConfigError, match="hpmc.*factor"):
        make_memory("hpmc", factor=1)
    with pytest.raises(MemoryConfigError, match="hpmc.*local_window"):
        make_memory("hpmc", local_window=0)
    with pytest.raises(MemoryConfigError, match="hpmc.*hidden"):
        make_memory("hpmc", compressor={"hidden": 0})
    with pytest.raises(MemoryConfigError, match="hpmc.*unknown compressor"):
        make_memory("hpmc", compressor={"width": 8})
    with pytest.raises(MemoryConfigError, match="hpmc.*factor"):
        make_memory("hpmc", factor=2, budget=4).attach(HPMCMemory.build_module({}, SHAPE))
    mem = make_memory("hpmc", budget=4, local_window=2)
    lat, acts = frames(6)
    with pytest.raises(MemoryConfigError, match="hpmc.*contiguous"):
        mem.write(lat, acts, None, 3)
    mem.attach(HPMCMemory.build_module({"compressor": {"hidden": 8}}, (5, 2, 2)))
    with pytest.raises(MemoryConfigError, match="hpmc.*5 latent channels"):
        mem.write(lat, acts, None, 0)


def test_bytes_and_work_flat_over_10000_frames():
    mem = make_memory("hpmc", budget=8, local_window=4, **TINY)
    calls = []
    mem.attach(HPMCMemory.build_module(TINY, SHAPE))
    mem.module().register_forward_hook(lambda *_: calls.append(1))
    record = {}
    with torch.no_grad():
        for start in range(0, 10_000, 4):
            lat = torch.randn(1, 4, *SHAPE)  # a new chunk each time, as the engine's
            mem.write(lat, {"move": torch.zeros(1, 4, dtype=torch.long)}, None, start)
            if start + 4 in (100, 10_000):
                record[start + 4] = (mem.nbytes(), mem.held_nbytes(), len(calls))
            if start + 4 == 9_700:
                calls_at = len(calls)
    assert record[100][0] == record[10_000][0] > 0
    assert record[100][1] <= record[100][0] and record[10_000][1] <= record[10_000][0]  # honest bound
    assert len(calls) - calls_at <= 300 // 3 + 1  # one 4 -> 1 merge per 3 frames, late as early
    mem.reset()
    with torch.no_grad():  # a long observed prefix in one write: slots must not keep the chunk alive
        lat, acts = frames(64)
        mem.write(lat, acts, None, 0)
    assert 0 < mem.held_nbytes() <= mem.nbytes()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("hpmc_data"))


def test_world_model_runs_40_frames_with_hpmc(data_root):
    recipe = load_recipe("tiny-test-world", [f"data.root={data_root}", "model.dit.num_frame_kinds=3"])
    task = WorldTask(recipe.model, recipe)
    torch.manual_seed(0)
    net = task.build_model()
    settings = {"budget": 4, "local_window": 4, **TINY}
    mem = make_memory("hpmc", **settings)
    module = HPMCMemory.build_module(settings, (net.dit.cfg.in_channels, *net.dit.cfg.latent_size))
    mem.attach(module)
    world = WorldModel(net, mem, RolloutConfig(chunk=2))
    rng = np.random.default_rng(0)
    world.reset(rng.integers(0, 256, (1, 2, 32, 32, 3), dtype=np.uint8))
    act = {"move": [[1, 2]], "view": [[3, 4]], "interact": [[0, 1]]}
    sizes = []
    while world.index < 40:
        out = world.step(act)
        assert out.shape == (1, 2, 32, 32, 3)
        sizes.append(world.state_nbytes())
    assert mem.module() is module and world.last_context.latents.shape[1] == 4
    assert mem.spans()[0][0] == 0 and mem.spans()[-1][1] == 40 - 4  # frame 0 .. just before the cache
    assert COMPRESSED_KIND in world.last_context.kinds.tolist()[0]
    assert sizes[-1] == sizes[len(sizes) // 2]  # flat state over the rollout
