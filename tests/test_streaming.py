"""infworld/streaming.py: the one free-running rollout and the one teacher-forcing loop over the engine.

A tiny real model checks that :func:`free_rollout` is exactly a hand-written loop over
``WorldModel.step``; a scripted engine that records its context checks what each loop shows the
model (teacher forcing: exactly the real past, never its own frames), the chunking in video mode,
the poses past their end, and the bench's partial rollout on a refusal.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_kvcache import tiny_net

from infworld.bench.variant import run_rollout
from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import DataError, MemoryConfigError
from infworld.memory.registry import make_memory
from infworld.streaming import Chunk, free_rollout, teacher_forcing
from infworld.world import RolloutConfig, WorldModel

KEYS = ("move", "view", "interact")


def trajectory(b: int, t: int, seed: int = 0, size: int = 8) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Random frames (B, T, size, size, 3) uint8 and actions (B, T - 1) per field."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (b, t, size, size, 3), dtype=np.uint8)
    acts = {"move": rng.integers(0, 10, (b, t - 1)), "view": rng.integers(0, 10, (b, t - 1)),
            "interact": rng.integers(0, 2, (b, t - 1))}
    return frames, acts


def tiny_world(chunk: int = 3) -> WorldModel:
    return WorldModel(tiny_net(), make_memory("window", budget=4),
                      RolloutConfig(chunk=chunk, sampler=SamplerConfig(name="euler", steps=2), seed=5))


@pytest.mark.parametrize("chunk", [None, 2])
def test_free_rollout_equals_a_hand_written_step_loop(chunk):
    frames, acts = trajectory(2, 11)  # 3 context frames + 8 generated
    k, f = 3, 8
    seen: list[Chunk] = []
    got = free_rollout(tiny_world(), frames[:, :k], acts, chunk=chunk, on_chunk=seen.append)

    world = tiny_world()
    world.reset(frames[:, :k], {n: a[:, : k - 1] for n, a in acts.items()})
    n = chunk or world.config.chunk
    want = [world.step({name: a[:, k - 1 + lo: k - 1 + min(lo + n, f)] for name, a in acts.items()})
            for lo in range(0, f, n)]
    assert got.shape == (2, f, 8, 8, 3) and got.dtype == np.uint8
    assert np.array_equal(got, np.concatenate(want, axis=1))
    assert [(c.start, c.stop) for c in seen] == [(lo, min(lo + n, f)) for lo in range(0, f, n)]
    assert all(c.seconds > 0 for c in seen)
    assert np.array_equal(np.concatenate([c.frames for c in seen], axis=1), got)


class ScriptedEngine:
    """Records what it is shown. Its context is the list of frames it holds (B, H, W, 3) each; ``step``
    returns frames filled with 200 + their rollout index, so generated frames are told from real ones."""

    def __init__(self, r: int = 1, chunk: int = 2, refuse_at: int | None = None):
        self.frames_per_latent, self.config = r, SimpleNamespace(chunk=chunk)
        self.refuse_at = refuse_at
        self.context: list[np.ndarray] = []
        self.steps: list[dict] = []  # one per step: actions, poses, commit, the context it saw
        self.resets: list[dict] = []
        self.observed_actions: list[dict] = []

    def reset(self, frames, actions, poses=None):
        self.context = list(frames.transpose(1, 0, 2, 3, 4))
        self.resets.append({"actions": {n: a.copy() for n, a in actions.items()}, "poses": poses})

    def step(self, actions, poses=None, commit=True):
        if self.refuse_at is not None and len(self.context) >= self.refuse_at:
            raise MemoryConfigError("scripted refusal")
        n = next(iter(actions.values())).shape[1]
        self.steps.append({"actions": {k: a.copy() for k, a in actions.items()}, "poses": poses,
                           "commit": commit, "context": np.stack(self.context, 1)})
        b, h, w = self.context[0].shape[:3]
        t = len(self.context)
        out = np.stack([np.full((b, h, w, 3), 200 + t + i, np.uint8) for i in range(n)], 1)
        if commit:
            self.context += list(out.transpose(1, 0, 2, 3, 4))
        return out

    def observe(self, frames, actions, poses=None):
        self.observed_actions.append({k: a.copy() for k, a in actions.items()})
        self.context += list(frames.transpose(1, 0, 2, 3, 4))


@pytest.mark.parametrize("r", [1, 2])
def test_teacher_forcing_shows_the_model_exactly_the_real_past(r):
    k = 1 + 2 * r  # 3 latent frames of context
    t_len = k + 3 * r
    frames, acts = trajectory(2, t_len, seed=1)
    engine = ScriptedEngine(r=r)
    pred = teacher_forcing(engine, frames, acts, k)
    assert pred.shape == (2, t_len - k, 8, 8, 3)
    assert [s["commit"] for s in engine.steps] == [False] * 3  # one latent frame (r frames) per step
    assert all(np.array_equal(a, acts[n][:, : k - 1]) for n, a in engine.resets[0]["actions"].items())
    for i, s in enumerate(engine.steps):
        t = k + i * r  # first frame this step predicts
        assert np.array_equal(s["context"], frames[:, :t])  # the real frames, none of its own
        for name in KEYS:  # the transitions into frames t .. t + r - 1, for the step and the observe
            assert np.array_equal(s["actions"][name], acts[name][:, t - 1: t - 1 + r])
            assert np.array_equal(engine.observed_actions[i][name], acts[name][:, t - 1: t - 1 + r])
    # predictions come back in frame order: frame K + i was predicted with K + i real frames before it
    assert [int(pred[0, i, 0, 0, 0]) for i in range(t_len - k)] == [200 + k + (i // r) * r + i % r
                                                                   for i in range(t_len - k)]
    with pytest.raises(DataError, match="multiple of"):
        teacher_forcing(ScriptedEngine(r=2), frames[:, : k + 1], acts, k)
    with pytest.raises(DataError, match="transitions"):
        teacher_forcing(ScriptedEngine(r=r), frames, {n: a[:, :-1] for n, a in acts.items()}, k)


def test_free_rollout_feeds_its_own_frames_in_video_chunks_with_poses_while_known():
    """r = 2 frames per latent frame, chunk 2 latent frames: 4 frames per step; the poses cover the
    trajectory up to frame 10, so the chunk that reaches past them steps without poses."""
    k, f = 3, 10
    frames, acts = trajectory(1, k + f, seed=2)
    poses = np.arange(10 * 5, dtype=np.float32).reshape(1, 10, 5)
    engine = ScriptedEngine(r=2, chunk=2)
    out = free_rollout(engine, frames[:, :k], acts, poses)
    assert out.shape == (1, f, 8, 8, 3)
    assert np.array_equal(engine.resets[0]["poses"], poses[:, :k])
    assert [s["actions"]["move"].shape[1] for s in engine.steps] == [4, 4, 2]
    assert np.array_equal(engine.steps[0]["poses"], poses[:, 3:7])
    assert engine.steps[1]["poses"] is None and engine.steps[2]["poses"] is None  # frames 7..10, 11..12
    last = engine.steps[-1]
    assert np.array_equal(last["context"][:, :k], frames[:, :k])
    assert np.array_equal(last["context"][:, k:], out[:, :8])  # its own frames, never the real ones
    assert np.array_equal(last["actions"]["view"], acts["view"][:, k - 1 + 8:])
    with pytest.raises(DataError, match="transitions"):
        free_rollout(engine, frames[:, :k], {n: a[:, :1] for n, a in acts.items()})


def test_bench_rollout_keeps_the_chunks_made_before_a_refusal():
    frames, acts = trajectory(1, 12, seed=3)
    one = {n: a[0] for n, a in acts.items()}  # (T - 1,) per field, as the bench holds them
    ro = run_rollout(ScriptedEngine(chunk=3, refuse_at=8), frames[0], one, None, context=2)
    assert ro.refused == "scripted refusal" and ro.context == 2
    assert ro.frames.shape == (6, 8, 8, 3) and ro.step_frames.tolist() == [3, 3]
    full = run_rollout(ScriptedEngine(chunk=3), frames[0], one, None, context=2, horizon=7)
    assert full.refused is None and len(full.frames) == 7 and full.step_frames.tolist() == [3, 3, 1]
