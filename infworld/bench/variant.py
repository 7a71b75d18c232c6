"""The rollouts the bench protocols read: one memory variant on one suite, generated once, cached.

A rollout seeds the public engine (:class:`infworld.world.WorldModel`) with the first K ground-truth
frames of a trajectory (and their actions and poses), then steps with the trajectory's true actions
and ground-truth poses, chunk by chunk, through the shared :func:`infworld.streaming.free_rollout`.
:class:`VariantRun` generates each (trajectory, action mode) once and keeps it in memory and on disk,
so the five protocols (protocols.py) and an interrupted run's resume share it. A memory may refuse a
rollout (the full-context oracle past its budget): the :class:`Rollout` then carries the reason.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infworld.bench.suites import Suite, Trajectory, latent_revisits
from infworld.bench.trajectories import dead_reckon, random_actions
from infworld.data.episode import atomic_write_bytes
from infworld.errors import MemoryConfigError
from infworld.streaming import Chunk, free_rollout

MAX_EVENTS = 64  # revisit events kept per trajectory (evenly spaced), so no trajectory dominates


@dataclass
class Rollout:
    """Generated frames (n, H, W, 3) for trajectory frames ``context .. context + n - 1``, the
    seconds and frames of every step call; ``refused`` holds the memory's error when it refused."""

    frames: np.ndarray
    context: int
    step_seconds: np.ndarray
    step_frames: np.ndarray
    refused: str | None = None


def run_rollout(world: Any, frames: np.ndarray, actions: dict[str, np.ndarray], poses: np.ndarray | None,
                context: int, horizon: int | None = None, progress: Callable[[int], None] | None = None
                ) -> Rollout:
    """Seed ``world`` with ``frames[:context]`` (T, H, W, 3) and generate up to ``horizon`` frames
    (default: to the end) following ``actions`` (T-1,) per field (action t leads from frame t to t + 1)
    and ``poses`` (T, 5). A refusal keeps the frames and timings of the chunks made before it."""
    k, t_len = context, len(frames)
    end = t_len if horizon is None else min(t_len, k + horizon)
    gen, secs, counts = [], [], []

    def on_chunk(c: Chunk) -> None:
        gen.append(c.frames[0])  # (n, H, W, 3)
        secs.append(c.seconds)
        counts.append(c.stop - c.start)
        if progress is not None:
            progress(c.stop - c.start)

    refused = None
    try:
        free_rollout(world, frames[None, :k], {n: a[None, : end - 1] for n, a in actions.items()},
                     None if poses is None else poses[None], on_chunk=on_chunk)
    except MemoryConfigError as exc:  # e.g. the full-context oracle past its budget
        refused = str(exc)
    h, w = frames.shape[1:3]
    return Rollout(np.concatenate(gen) if gen else np.zeros((0, h, w, 3), np.uint8), k,
                   np.asarray(secs, np.float64), np.asarray(counts, np.int64), refused)


class VariantRun:
    """One memory variant on one suite: the world model, the ground truth at the model's frame size,
    and the rollouts (kept in memory and as ``cache_dir/<trajectory>.<mode>.npz``)."""

    def __init__(self, name: str, world: Any, suite: Suite, context: int, cache_dir: Path, seed: int = 0,
                 idm: Any = None, features: Any = None, inception: Any = None,
                 progress: Callable[[int], None] | None = None):
        from infworld.data.frames import resize_frames

        self.name, self.world, self.suite, self.context = name, world, suite, context
        self.cache_dir, self.seed, self.progress = cache_dir, seed, progress
        self.idm, self.features, self.inception = idm, features, inception
        size = tuple(world.frame_size)
        self.trajs = [t for t in suite.trajectories if t.frames > context]
        self.truth = {t.name: resize_frames(t.episode.frames, size) for t in self.trajs}  # (T, H, W, 3)
        self._rollouts: dict[tuple[str, str], Rollout] = {}
        self._events: dict[str, np.ndarray] = {}

    @staticmethod
    def actions(traj: Trajectory) -> dict[str, np.ndarray]:
        ep = traj.episode
        return {"move": ep.move, "view": ep.view, "interact": ep.interact}

    def rollout(self, traj: Trajectory, mode: str = "true") -> Rollout:
        """The ``true``-action rollout over the whole trajectory, or the ``random``-action one over the
        suite's action horizon (same context, same noise seed)."""
        key = (traj.name, mode)
        if key in self._rollouts:
            return self._rollouts[key]
        path = self.cache_dir / f"{traj.name}.{mode}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                ro = Rollout(z["frames"], int(z["context"]), z["step_seconds"], z["step_frames"],
                             str(z["refused"]) or None)
            if self.progress is not None:
                self.progress(len(ro.frames))  # done by an earlier run: count it on the bar
        else:
            ro = self._generate(traj, mode)
            buf = io.BytesIO()
            np.savez_compressed(buf, frames=ro.frames, context=ro.context, step_seconds=ro.step_seconds,
                                step_frames=ro.step_frames, refused=ro.refused or "")
            atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
        self._rollouts[key] = ro
        return ro

    def _generate(self, traj: Trajectory, mode: str) -> Rollout:
        """Run the rollout of ``mode``: random actions (seeded per trajectory) replace the true ones after
        the context, with poses dead-reckoned along them."""
        acts, poses = self.actions(traj), traj.episode.pose
        horizon = None
        if mode == "random":
            horizon = self.suite.action_horizon
            n = min(horizon, traj.frames - self.context)
            rnd = random_actions(acts, n, seed=self.seed + 7919 * self.trajs.index(traj))
            acts = {k: np.concatenate([a[: self.context - 1], rnd[k]]) for k, a in acts.items()}
            if poses is not None:
                poses = np.concatenate([poses[: self.context - 1],
                                        dead_reckon(poses, self.actions(traj), self.context - 1, rnd)])
        return run_rollout(self.world, self.truth[traj.name], acts, poses, self.context, horizon,
                           self.progress)

    def history(self, traj: Trajectory, ro: Rollout) -> np.ndarray:
        """What the model has shown at every frame: the real context, then its own frames."""
        return np.concatenate([self.truth[traj.name][: ro.context], ro.frames])

    def events(self, traj: Trajectory) -> np.ndarray:
        """Revisit events (E, 2) [t, s] with s at least a local window before t, t generated; from
        the suite, or for pose-free data from frame similarity in the model's latent space."""
        if traj.name not in self._events:
            ev = traj.events
            if ev is None:
                with torch.no_grad():
                    x = torch.from_numpy(self.truth[traj.name]).permute(0, 3, 1, 2)[None]  # (1, T, 3, H, W)
                    z = self.world.net.encode(x)[0].float().numpy()  # (T, C, h, w)
                ev = latent_revisits(z, min_gap=self.world.window)
            ev = ev[(ev[:, 0] >= self.context) & (ev[:, 0] - ev[:, 1] >= self.world.window)]
            if len(ev) > MAX_EVENTS:
                ev = ev[np.unique(np.linspace(0, len(ev) - 1, MAX_EVENTS).round().astype(int))]
            self._events[traj.name] = ev
        return self._events[traj.name]

    def usable(self, mode: str = "true") -> tuple[list[tuple[Trajectory, Rollout]], dict[str, str]]:
        """(trajectory, rollout) pairs the memory did not refuse, and the refused ones with reasons."""
        ok, skipped = [], {}
        for t in self.trajs:
            ro = self.rollout(t, mode)
            if ro.refused:
                skipped[t.name] = ro.refused
            else:
                ok.append((t, ro))
        return ok, skipped
