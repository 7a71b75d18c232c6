"""WorldScape's three-level KV memory ("kv"): gate, pool pruning, retrieval, poses, bounds, engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.data.action_schema import encode_move, encode_view
from infworld.errors import MemoryConfigError
from infworld.memory.base import MEMORY_KIND
from infworld.memory.kvmemory import KVMemory
from infworld.memory.registry import make_memory, memory_names
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel

LAT = (4, 4, 4)  # (C, h, w) of the test latents


def actions(b: int, n: int, move: int = 4, view: int = 4) -> dict[str, torch.Tensor]:
    return {"move": torch.full((b, n), move), "view": torch.full((b, n), view),
            "interact": torch.zeros(b, n, dtype=torch.long)}


def out_and_back(n: int = 100, seed: int = 0) -> torch.Tensor:
    """Poses (n, 5): walk ~20 units a step along +x for n/2 steps, turn round, walk back to the start."""
    g = torch.Generator().manual_seed(seed)
    half = n // 2
    steps = 20.0 + torch.rand(half, generator=g) * 4.0
    x = torch.cat([torch.zeros(1), torch.cumsum(steps, 0)[:-1]])
    out = torch.stack([x, torch.zeros(half), torch.zeros(half), torch.zeros(half), torch.zeros(half)], 1)
    back = out.flip(0).clone()
    back[:, 3] = 180.0
    poses = torch.cat([out, back])
    poses[:, 3] += torch.rand(n, generator=g) * 2.0 - 1.0  # a little heading jitter
    return poses


def write_chunks(mem, latents: torch.Tensor, poses: torch.Tensor | None, chunk: int = 4,
                 start: int = 0) -> None:
    """Write latents (B, T, ...) and poses (B, T, 5) in chunks, as the engine does."""
    b, t = latents.shape[:2]
    for lo in range(0, t, chunk):
        hi = min(lo + chunk, t)
        mem.write(latents[:, lo:hi], actions(b, hi - lo), None if poses is None else poses[:, lo:hi],
                  start + lo)


def test_registered_with_settings():
    assert "kv" in memory_names()
    mem = make_memory("kv", budget=4, local_window=6, pool=8)
    assert isinstance(mem, KVMemory) and mem.local_window == 6 and mem.max_context() == 4
    assert mem.needs_poses and not make_memory("kv", poses="dead_reckon").needs_poses
    assert mem.read(10, torch.zeros(1, 5)) is None and mem.nbytes() == 0


@pytest.mark.parametrize("bad, match", [
    ({"budget": 0}, "budget"), ({"local_window": 0}, "local_window"), ({"anchors": -1}, "anchors"),
    ({"anchors": 9, "budget": 8}, "anchors"), ({"pool": 0}, "pool"), ({"gate": -0.1}, "gate"),
    ({"gate": math.nan}, "gate"), ({"min_overlap": 1.5}, "min_overlap"), ({"fov_deg": 180}, "fov_deg"),
    ({"pose_scale": 0}, "pose_scale"), ({"angle_weight": -1}, "angle_weight"),
    ({"poses": "gps"}, "poses"), ({"pool": "8"}, "pool"), ({"nope": 1}, "unknown setting"),
])
def test_bad_settings_are_rejected(bad, match):
    with pytest.raises(MemoryConfigError, match=match) as err:
        make_memory("kv", **bad)
    assert "'kv'" in str(err.value)


def test_gate_refuses_an_identical_frame_and_accepts_a_different_one():
    mem = KVMemory(budget=4, local_window=2, anchors=1, pool=4, gate=0.5)
    mem.reset()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(*LAT, generator=g)
    lat = torch.stack([a, a, a + 3.0, torch.randn(*LAT, generator=g)])[None].repeat(2, 1, 1, 1, 1)
    lat[1, 1] = a + 3.0  # row 1: its frame 1 is new, then frame 2 repeats it
    mem.write(lat, actions(2, 4), torch.zeros(2, 4, 5), 0)  # frames 0..2 leave the 2-frame window
    ctx = mem.read(4, torch.zeros(2, 5))
    assert ctx.sources.tolist() == [[0, 2], [0, 1]]  # anchor + the surprising frame, oldest first
    assert mem.offered.tolist() == [2, 2] and mem.accepted.tolist() == [1, 1]
    assert torch.equal(ctx.latents[0, 1], a + 3.0) and (ctx.kinds == MEMORY_KIND).all()
    assert ctx.positions.tolist() == [-3.0, -2.0]  # slots right before the local window
    assert torch.equal(mem.last_sources, ctx.sources)


def test_full_pool_keeps_spread_out_poses():
    mem = KVMemory(budget=3, local_window=1, anchors=0, pool=3, gate=0.0)
    mem.reset()
    centres = torch.tensor([[0.0, 0, 0, 0, 0], [3000.0, 0, 0, 0, 0], [0.0, 3000.0, 0, 90, 0]])
    cluster = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 2, 0, 0])
    g = torch.Generator().manual_seed(1)
    poses = centres[cluster] + torch.randn(len(cluster), 5, generator=g) * torch.tensor([4.0, 4, 0, 1, 0])
    lat = torch.randn(1, len(cluster), *LAT, generator=g)
    write_chunks(mem, lat, poses[None], chunk=4)
    held = mem.store.index[0]
    assert (held >= 0).all()
    assert sorted(cluster[held].tolist()) == [0, 1, 2]  # one view per cluster survives


def test_retrieval_finds_the_start_on_a_revisit():
    poses = out_and_back(100)
    start = poses[0].clone()
    g = torch.Generator().manual_seed(2)
    mem = KVMemory(budget=4, local_window=4, anchors=0, pool=16, gate=0.0)
    mem.reset()
    write_chunks(mem, torch.randn(1, 100, *LAT, generator=g), poses[None])
    ctx = mem.read(100, start[None])
    src = ctx.sources[0][ctx.valid[0]].tolist()
    assert src == sorted(src) and all(s < 100 - 3 for s in src)
    assert min(src) < 10, src  # the early frames seen from (almost) the same pose
    far = mem.read(100, torch.tensor([[5000.0, 0, 0, 0, 0]]))  # nowhere near anything seen
    assert far is None and mem.last_sources is None


def test_missing_poses_are_reported():
    mem = KVMemory(budget=2, local_window=2, pool=4)
    mem.reset()
    lat = torch.randn(1, 4, *LAT)
    with pytest.raises(MemoryConfigError, match="'kv' needs poses"):
        mem.write(lat, actions(1, 4), None, 0)
    mem.write(lat, actions(1, 4), torch.zeros(1, 4, 5), 0)
    with pytest.raises(MemoryConfigError, match="'kv' needs poses"):
        mem.read(4, None)


def test_dead_reckoned_poses_need_no_engine_poses():
    mem = KVMemory(budget=3, local_window=2, anchors=1, pool=4, gate=0.0, poses="dead_reckon")
    mem.reset()
    fwd = int(encode_move(1, 0))
    lat = torch.randn(1, 6, *LAT)
    mem.write(lat, actions(1, 6, move=fwd, view=int(encode_view(0, 0))), None, 0)
    step = mem.tracker.reckoner.config.forward
    assert mem.tracker.current[0, 0] == pytest.approx(6 * step)
    ctx = mem.read(6)
    assert ctx is not None and torch.isfinite(ctx.poses[ctx.valid]).all()
    assert ctx.poses[0, 0, 0] == pytest.approx(step)  # frame 0 moved by its (first) action
    with_engine_pose = mem.read(6, torch.zeros(1, 5))
    assert torch.isnan(with_engine_pose.poses).all()  # another frame of reference: withheld


def test_training_style_write_then_read_flushes_the_window_and_keeps_no_graph():
    mem = KVMemory(budget=8, local_window=4, anchors=1, pool=64, gate=0.0)
    mem.reset()
    h = 12
    lat = torch.randn(2, h, *LAT, requires_grad=True)
    mem.write(lat, actions(2, h), torch.zeros(2, h, 5), 0)
    assert mem.seen == h - 3
    ctx = mem.read(h + 3, torch.zeros(2, 5))
    assert mem.seen == h and int(ctx.sources.max()) == h - 1  # all of the history is out of the clip


def test_nbytes_flat_over_a_long_rollout():
    mem = KVMemory(budget=4, local_window=4, anchors=1, pool=8, gate=0.0)
    mem.reset()
    g = torch.Generator().manual_seed(3)
    sizes = {}
    for start in range(0, 5000, 4):
        mem.write(torch.randn(2, 4, *LAT, generator=g), actions(2, 4),
                  torch.rand(2, 4, 5, generator=g) * torch.tensor([2000.0, 2000, 0, 360, 0]), start)
        if start % 200 == 0:
            mem.read(start + 4, torch.zeros(2, 5))
        if start + 4 in (100, 5000):
            sizes[start + 4] = mem.nbytes()
    assert sizes[100] == sizes[5000] > 0


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("kv_world_data"))
    recipe = load_recipe("tiny-test-world", [f"data.root={root}"])
    return WorldTask(recipe.model, recipe).build_model()


def run_engine(net, mem, frames: int = 40) -> list[int]:
    """Roll a tiny world model with ``mem`` for ``frames`` frames; check what the memory returned."""
    world = WorldModel(net, mem, RolloutConfig(chunk=2, seed=0))
    rng = np.random.default_rng(0)
    poses = out_and_back(frames + 4).numpy()[None]
    world.reset(rng.integers(0, 256, (1, 3, 32, 32, 3), dtype=np.uint8), poses=poses[:, :3])
    seen = []
    while world.index < frames:
        i = world.index
        world.step({"move": [[7, 7]], "view": [[4, 4]], "interact": [[0, 0]]}, poses=poses[:, i:i + 2])
        ctx = world.last_context
        if ctx is not None:
            src = ctx.sources[ctx.valid]
            assert (src >= 0).all() and (src < i - (world.window - 1)).all()
            seen += src.tolist()
    return seen


def test_engine_end_to_end(tiny_net):
    mem = make_memory("kv", budget=3, local_window=4, anchors=1, pool=6, gate=0.0)
    seen = run_engine(tiny_net, mem)
    assert seen and 0 in seen  # the anchor is always read
