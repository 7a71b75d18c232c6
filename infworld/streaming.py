"""The two ways to stream a recorded trajectory through the rollout engine, written once.

Every caller that drives :class:`~infworld.world.WorldModel` over a trajectory (``infworld rollout``,
the bench's rollouts, benchmarks/world_core.py, the world task's evaluation) goes through one of:

* :func:`free_rollout`: seeded with K real frames, the model then follows the actions on its own
  output only, never shown a real frame again, chunk by chunk (the compounding-error setting;
  Self-Forcing, Huang et al. 2025, Algorithm 1 in inference form);
* :func:`teacher_forcing`: every frame predicted from the *real* frames before it
  (``step(commit=False)``), then the real frame is observed in its place (next-frame prediction,
  GameNGen's teacher-forced evaluation).

Both index a trajectory the same way: frames 0..T-1 (B, T, H, W, 3) uint8; actions per field
(B, T-1[, d]), action t leading from frame t to frame t + 1; poses (B, T, 5). Frames are video
frames: with r video frames per latent frame (``world.frames_per_latent``, the Wan VAE in video mode)
the context holds 1 + r k frames and every step r n frames (infworld/video_frames.py).

``world`` is a :class:`~infworld.world.WorldModel` or anything with its ``reset`` / ``step`` /
``observe`` contract and ``config.chunk`` (tests drive a scripted engine). Both loops run under
``torch.no_grad``; the caller may add ``torch.inference_mode`` around them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from infworld.errors import DataError


@dataclass(frozen=True)
class Chunk:
    """One ``step`` of a free rollout, handed to the ``on_chunk`` callback.

    ``start``: the chunk's first generated frame (0 = the first frame after the context);
    ``frames``: (B, n, H, W, 3) uint8, generated frames ``start .. start + n - 1``;
    ``seconds``: wall time of the engine's ``step`` call alone (for speed figures).
    """

    start: int
    frames: np.ndarray
    seconds: float

    @property
    def stop(self) -> int:
        """One past the chunk's last generated frame."""
        return self.start + self.frames.shape[1]


def _transitions(actions: Mapping[str, np.ndarray]) -> int:
    """The number of transitions (second axis) every action field holds; DataError if they differ."""
    if not actions:
        raise DataError("no action fields given", field="actions")
    lengths = {name: np.shape(a)[1] if np.ndim(a) >= 2 else -1 for name, a in actions.items()}
    if len(set(lengths.values())) != 1 or min(lengths.values()) < 0:
        raise DataError(f"expected (B, n[, d]) per field with one n for all, got lengths {lengths}",
                        field="actions")
    return next(iter(lengths.values()))


def _slice(actions: Mapping[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
    """Transitions ``lo .. hi - 1`` of every field: (B, hi - lo[, d])."""
    return {name: a[:, lo:hi] for name, a in actions.items()}


def free_rollout(world: Any, context: np.ndarray, actions: Mapping[str, np.ndarray],
                 poses: np.ndarray | None = None, *, chunk: int | None = None,
                 on_chunk: Callable[[Chunk], None] | None = None) -> np.ndarray:
    """Seed ``world`` with real frames, then generate F frames from its own output, chunk by chunk.

    ``context``: (B, K, H, W, 3) uint8, the real frames 0..K-1 (K = 1 + r k).
    ``actions``: per field (B, K - 1 + F[, d]): the K - 1 transitions between the context frames,
    then one per generated frame (action t leads to frame t + 1), so F = n - (K - 1).
    ``poses``: (B, P, 5) for trajectory frames 0..P-1, or None. The context takes the first K; a
    chunk gets its frames' poses only when they all lie before P, else it steps without poses (a
    memory that needs them then refuses with MemoryConfigError). Poses past the context are the
    recorded ones, never the model's: the caller supplies ground truth or dead reckoning.
    ``chunk``: video frames per ``step`` (default: the engine's most, ``config.chunk`` latent frames
    times r); the last chunk may be shorter. Chunking and the engine's seed fix the noise, so the
    same call gives the same frames. An engine with ``seam="sliding"`` also gets each chunk's
    successor's actions (``next_actions``).
    ``on_chunk``: called after every step with a :class:`Chunk` (progress bars, timing, streaming
    the frames to a video); it may read ``world`` (e.g. ``state_nbytes()``).

    Returns the generated frames (B, F, H, W, 3) uint8. Errors of the engine (a memory refusing,
    bad shapes) propagate; what ``on_chunk`` saw before stays the caller's.
    """
    k = context.shape[1]
    f_total = _transitions(actions) - (k - 1)
    if f_total < 0:
        raise DataError(f"{k} context frames need {k - 1} transitions before the generated frames, got "
                        f"{f_total + k - 1}", field="actions")
    r = int(getattr(world, "frames_per_latent", 1))
    step = chunk or int(world.config.chunk) * r
    p_len = -1 if poses is None else poses.shape[1]
    gen = []
    with torch.no_grad():
        world.reset(context, _slice(actions, 0, k - 1), poses=None if poses is None else poses[:, :k])
        for lo in range(0, f_total, step):
            hi = min(lo + step, f_total)
            # generated frames lo..hi-1 are trajectory frames k + lo .. k + hi - 1
            step_poses = poses[:, k + lo: k + hi] if poses is not None and k + hi <= p_len else None
            extra = {}
            if getattr(getattr(world, "config", None), "seam", "causal") == "sliding":
                # the next chunk starts alongside this one (infworld/sliding.py); none after the last
                nxt = min(hi + step, f_total)
                extra["next_actions"] = _slice(actions, k - 1 + hi, k - 1 + nxt) if hi < f_total else None
            t0 = time.perf_counter()
            # (B, n, H, W, 3)
            out = world.step(_slice(actions, k - 1 + lo, k - 1 + hi), poses=step_poses, **extra)
            seconds = time.perf_counter() - t0
            gen.append(out)
            if on_chunk is not None:
                on_chunk(Chunk(lo, out, seconds))
    if not gen:
        return np.zeros((context.shape[0], 0, *context.shape[2:4], 3), np.uint8)
    return np.concatenate(gen, axis=1)


def teacher_forcing(world: Any, frames: np.ndarray, actions: Mapping[str, np.ndarray], context: int,
                    poses: np.ndarray | None = None) -> np.ndarray:
    """Predict every frame after the first ``context`` from the real frames before it.

    ``frames``: (B, T, H, W, 3) uint8, the real trajectory; ``actions``: per field (B, >= T - 1[, d])
    (action t leads from frame t to t + 1); ``poses``: (B, T, 5) or None. The engine is reset on
    frames 0..K-1 (K = ``context`` = 1 + r k), then, one latent frame (r video frames) at a time,
    generates frames t..t+r-1 without committing them (``step(commit=False)``) and observes the real
    ones with the same actions: the context is always exactly the real past.

    Returns the predictions (B, T - K, H, W, 3) uint8: index i is frame K + i. T - K must be a
    multiple of r.
    """
    t_len, k = frames.shape[1], context
    r = int(getattr(world, "frames_per_latent", 1))
    if not 1 <= k <= t_len or (t_len - k) % r:
        raise DataError(f"teacher forcing: {t_len} frames after a context of {k} must leave a multiple of "
                        f"{r} frames ({r} video frames per latent frame)", field="frames")
    if _transitions(actions) < t_len - 1:
        raise DataError(f"teacher forcing: {t_len} frames need {t_len - 1} transitions, got "
                        f"{_transitions(actions)}", field="actions")
    preds = []
    with torch.no_grad():
        world.reset(frames[:, :k], _slice(actions, 0, k - 1), poses=None if poses is None else poses[:, :k])
        for lo in range(k, t_len, r):
            step = _slice(actions, lo - 1, lo - 1 + r)  # transitions into frames lo .. lo + r - 1
            preds.append(world.step(step, commit=False))  # (B, r, H, W, 3)
            world.observe(frames[:, lo: lo + r], step, poses=None if poses is None else poses[:, lo: lo + r])
    if not preds:
        return np.zeros((frames.shape[0], 0, *frames.shape[2:4], 3), np.uint8)
    return np.concatenate(preds, axis=1)
