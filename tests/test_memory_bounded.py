"""Every bounded memory strategy over a 10,000-frame rollout: state bytes and time per frame stay flat.

A tiny world network (16x16 frames, 4 tokens per frame) keeps the 2,500 chunks fast; what is measured
is the engine + memory behaviour, which does not depend on the network size.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from infworld.diffusion.samplers import SamplerConfig
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.world import RolloutConfig, WorldModel

FRAMES = 10_000
CHUNK = 4
WINDOW = 6


def tiny_net() -> WorldNet:
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=48, latent_size=(4, 4), patch_size=2, dim=32, depth=1, num_heads=2,
                    mlp_ratio=2.0, freq_dim=32, max_frames=WINDOW, num_frame_kinds=3, pose_dim=6,
                    pose_scale=64.0, actions=ActionConfig(num_interact=2))
    return WorldNet(DiT(cfg), PixelTokenizer(4, (16, 16)), (16, 16), {})


SETTINGS = {
    "window": {"budget": WINDOW},
    "kv": {"budget": 4, "local_window": WINDOW, "pool": 32},
    "vrag": {"budget": 4, "local_window": WINDOW, "capacity": 64},  # full (steady state) before frame 100
    "hpmc": {"budget": 6, "local_window": WINDOW},
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_bounded_memory_is_flat_over_10000_frames(name):
    world = WorldModel(tiny_net(), make_memory(name, **SETTINGS[name]),
                       RolloutConfig(chunk=CHUNK, sampler=SamplerConfig(name="euler", steps=1)))
    rng = np.random.default_rng(0)
    world.reset(rng.integers(0, 255, (1, 2, 16, 16, 3), dtype=np.uint8), poses=np.zeros((1, 2, 5)))
    nbytes, secs, pose = {}, [], np.zeros(5)
    with torch.inference_mode():
        for lo in range(2, FRAMES, CHUNK):
            move = rng.integers(0, 9, (1, CHUNK))
            view = rng.integers(0, 9, (1, CHUNK))
            # a walk on a 20 x 20 grid of rooms that keeps coming back (poses wrap), so the pool,
            # gate and pruning keep working at every frame
            steps = np.zeros((1, CHUNK, 5))
            for j in range(CHUNK):
                turn = 15.0 * (view[0, j] // 3 - 1)
                pose = pose + np.array([rng.integers(-8, 9), rng.integers(-8, 9), 0.0, turn, 0.0])
                pose[:2] %= 640.0
                steps[0, j] = pose
            t0 = time.thread_time()
            world.step({"move": move, "view": view, "interact": np.zeros((1, CHUNK), int)}, poses=steps)
            secs.append(time.thread_time() - t0)
            for mark in (100, 1000, FRAMES - CHUNK):
                if lo <= mark < lo + CHUNK:
                    nbytes[mark] = world.state_nbytes()
    assert world.index >= FRAMES
    assert len(set(nbytes.values())) == 1, nbytes  # bytes held: exactly flat
    # Other work on the machine only ever adds time, so the cost of a chunk is read as a low
    # percentile of each span (a median still moved by >10% when a neighbour ran for a while).
    early = float(np.percentile(secs[25:250], 20))  # chunks around frames 100..1000
    late = float(np.percentile(secs[-225:], 20))  # the last ~900 frames before 10,000
    # A cost that grew with the history would be many times larger after 10,000 frames than after
    # 1,000; 1.3x leaves room for CPU frequency and cache effects on a ~4 ms chunk (a clean-clone CI
    # run measured 1.10x for hpmc with nothing else running).
    assert late <= 1.3 * early, (early, late)
