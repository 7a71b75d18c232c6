"""VRAG retrieval memory ("vrag"): storage, redundancy eviction, state retrieval, poses, bounds, engine."""

from __future__ import annotations

import math

import pytest
import torch
from synthetic import make_dataset
from test_memory_kv import LAT, actions, out_and_back, run_engine, write_chunks

from infworld.data.action_schema import encode_move
from infworld.errors import MemoryConfigError
from infworld.memory.geometry import pose_distance
from infworld.memory.registry import make_memory, memory_names
from infworld.memory.vrag import VRAGMemory
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask


def line(xs) -> torch.Tensor:
    """Poses (1, n, 5) at x = xs, facing +x."""
    p = torch.zeros(1, len(xs), 5)
    p[0, :, 0] = torch.tensor(xs, dtype=torch.float32)
    return p


def test_registered_with_settings():
    assert "vrag" in memory_names()
    mem = make_memory("vrag", budget=4, local_window=6, capacity=32)
    assert isinstance(mem, VRAGMemory) and mem.local_window == 6 and mem.max_context() == 4
    assert mem.needs_poses and not make_memory("vrag", poses="dead_reckon").needs_poses
    assert mem.read(10, torch.zeros(1, 5)) is None and mem.nbytes() == 0


@pytest.mark.parametrize("bad, match", [
    ({"budget": 0}, "budget"), ({"local_window": 0}, "local_window"), ({"capacity": 0}, "capacity"),
    ({"capacity": 4, "budget": 8}, "capacity"), ({"pose_scale": -1.0}, "pose_scale"),
    ({"angle_weight": math.inf}, "angle_weight"), ({"poses": "slam"}, "poses"),
    ({"topk": 3}, "unknown setting"),
])
def test_bad_settings_are_rejected(bad, match):
    with pytest.raises(MemoryConfigError, match=match) as err:
        make_memory("vrag", **bad)
    assert "'vrag'" in str(err.value)


def test_stores_frames_leaving_the_window_and_retrieves_nearest_states_oldest_first():
    mem = VRAGMemory(budget=4, local_window=3, capacity=32)
    mem.reset()
    lat = torch.randn(1, 12, *LAT)
    write_chunks(mem, lat, line([100.0 * i for i in range(12)]))
    assert mem.count == 10  # frames 10, 11 are still in the local window (the engine's cache)
    ctx = mem.read(12, torch.tensor([[520.0, 0.0, 0.0, 0.0, 0.0]]))
    assert ctx.sources.tolist() == [[4, 5, 6, 7]]  # the 4 nearest to x = 520, oldest first
    assert torch.equal(ctx.latents[0, 0], lat[0, 4]) and ctx.poses[0, 0, 0] == 400.0
    assert ctx.positions.tolist() == [-6.0, -5.0, -4.0, -3.0] and torch.equal(mem.last_sources, ctx.sources)
    # the heading counts: odd frames look back (yaw 180); a camera looking back retrieves those
    turned = VRAGMemory(budget=3, local_window=3, capacity=32)
    turned.reset()
    poses = line([100.0 * i for i in range(12)])
    poses[0, 1::2, 3] = 180.0
    write_chunks(turned, lat, poses)
    assert turned.read(12, torch.tensor([[500.0, 0.0, 0.0, 180.0, 0.0]])).sources.tolist() == [[3, 5, 7]]
    assert turned.read(12, torch.tensor([[500.0, 0.0, 0.0, 0.0, 0.0]])).sources[0, [0, 2]].tolist() == [4, 6]


def test_full_store_evicts_the_most_redundant_frame_oldest_on_ties():
    mem = VRAGMemory(budget=2, local_window=1, capacity=4)
    mem.reset()
    write_chunks(mem, torch.randn(1, 6, *LAT), line([0.0, 1000.0, 2000.0, 5.0, 3000.0, 2003.0]), chunk=3)
    # frame 4 evicted frame 0 (0 and 3 are 5 units apart: a tie, the older goes); frame 5 evicted 2
    assert sorted(mem.store.index[0].tolist()) == [1, 3, 4, 5]


def test_incremental_nearest_neighbours_match_brute_force():
    mem = VRAGMemory(budget=4, local_window=2, capacity=12, angle_weight=0.5)
    mem.reset()
    g = torch.Generator().manual_seed(0)
    poses = torch.rand(2, 80, 5, generator=g) * torch.tensor([800.0, 800.0, 0.0, 360.0, 20.0])
    for start in range(0, 80, 4):
        write_chunks(mem, torch.randn(2, 4, *LAT, generator=g), poses[:, start:start + 4], start=start)
        p = mem.store.poses
        d = pose_distance(p[:, :, None], p[:, None], mem.pose_scale, mem.angle_weight).nan_to_num(math.inf)
        d = d.masked_fill(torch.eye(12, dtype=torch.bool), math.inf)
        d = d.masked_fill((mem.store.index < 0)[:, None], math.inf)
        assert torch.allclose(mem.nn_dist, d.amin(-1), atol=1e-5)


def test_retrieval_finds_the_start_on_a_revisit():
    poses = out_and_back(100)
    g = torch.Generator().manual_seed(2)
    mem = VRAGMemory(budget=4, local_window=4, capacity=16)
    mem.reset()
    write_chunks(mem, torch.randn(1, 100, *LAT, generator=g), poses[None])
    ctx = mem.read(100, poses[:1])
    src = ctx.sources[0].tolist()
    assert src == sorted(src) and all(s < 100 - 3 for s in src)
    assert min(src) < 10, src  # the early frames seen from (almost) the same pose, not the recent ones


def test_missing_poses_are_reported_and_dead_reckoning_needs_none():
    mem = VRAGMemory(budget=2, local_window=2, capacity=8)
    mem.reset()
    lat = torch.randn(1, 4, *LAT)
    with pytest.raises(MemoryConfigError, match="'vrag' needs poses"):
        mem.write(lat, actions(1, 4), None, 0)
    mem.write(lat, actions(1, 4), torch.zeros(1, 4, 5), 0)
    with pytest.raises(MemoryConfigError, match="'vrag' needs poses"):
        mem.read(4, None)
    dr = VRAGMemory(budget=2, local_window=2, capacity=8, poses="dead_reckon")
    dr.reset()
    dr.write(lat, actions(1, 4, move=int(encode_move(1, 0))), None, 0)
    ctx = dr.read(4)
    step = dr.tracker.reckoner.config.forward
    assert ctx.sources.tolist() == [[1, 2]]
    assert ctx.poses[0, :, 0].tolist() == pytest.approx([2 * step, 3 * step])


def test_training_style_write_then_read_flushes_the_window():
    mem = VRAGMemory(budget=4, local_window=4, capacity=64)
    mem.reset()
    lat = torch.randn(2, 10, *LAT, requires_grad=True)
    mem.write(lat, actions(2, 10), line(range(10)).expand(2, -1, -1), 0)
    assert mem.count == 7
    ctx = mem.read(13, torch.tensor([[9.0, 0, 0, 0, 0]]).expand(2, 5))
    assert mem.count == 10 and ctx.sources.tolist() == [[6, 7, 8, 9]] * 2


def test_nbytes_flat_over_a_long_rollout():
    mem = VRAGMemory(budget=4, local_window=4, capacity=32)
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


def test_engine_end_to_end(tmp_path):
    recipe = load_recipe("tiny-test-world", [f"data.root={make_dataset(tmp_path)}"])
    net = WorldTask(recipe.model, recipe).build_model()
    seen = run_engine(net, make_memory("vrag", budget=3, local_window=4, capacity=8))
    assert seen
