"""WorldScape's three-level KV memory: permanent anchors, a gated global pool, the local window.

WorldScape (technical report) keeps three levels of past frames:

1. **anchors**: the first frames of the rollout, permanent and always read;
2. a **global pool** of past frames, retrieved by a **geometric similarity score** between the
   current and the past camera poses (view-frustum overlap, :func:`~infworld.memory.geometry.
   frustum_overlap`). A frame enters the pool through a **surprise gate** (a minimum-description-
   length idea: store only what the stored frames do not already describe). When the pool is full,
   **farthest point sampling** over poses (translation and rotation) keeps the most spread-out views;
3. the **local sliding window**, which is the engine's KV cache (infworld/models/kvcache.py).

Frames reach levels 1 and 2 when they leave the local window (index < next_index - (local_window - 1));
until then this memory holds them in a small bounded buffer (:class:`WindowBuffer`). All buffers are
allocated once, at the first write, so the bytes held are flat over any rollout length.

Where the paper keeps keys/values of the stored frames, we keep their clean latents and the engine
recomputes keys/values once per chunk (infworld/memory/context.py): the same attention context, with
positions independent of the frames' age (:func:`~infworld.memory.base.slot_positions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import (
    MEMORY_KIND,
    Memory,
    MemoryConfig,
    MemoryContext,
    check_bool,
    check_float,
    check_int,
    slot_positions,
)
from infworld.memory.deadreckon import PoseTracker, check_pose_mode
from infworld.memory.geometry import farthest_point_sampling, frustum_overlap
from infworld.memory.store import FrameStore
from infworld.models.action import NULL_ACTION

Frames = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]  # latents, acts, poses, idx


class WindowBuffer:
    """The newest ``size`` (= local_window - 1) frames, held until they leave the local window.

    Preallocated at the first push: latents (B, size, C, h, w), actions (B, size[, d]), poses
    (B, size, 5) and rollout indices (size,) (the same for every batch row).
    """

    def __init__(self, size: int):
        self.size = size
        self.latents: torch.Tensor | None = None
        self.actions: dict[str, torch.Tensor] = {}
        self.poses: torch.Tensor | None = None
        self.index: torch.Tensor | None = None
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def _allocate(self, latents: torch.Tensor, actions: dict[str, torch.Tensor]) -> None:
        b, _, *shape = latents.shape
        dev = latents.device
        self.latents = torch.zeros(b, self.size, *shape, device=dev)
        self.actions = {k: torch.zeros(b, self.size, *a.shape[2:], dtype=a.dtype, device=dev)
                        for k, a in actions.items()}
        self.poses = torch.zeros(b, self.size, 5, device=dev)
        self.index = torch.zeros(self.size, dtype=torch.long, device=dev)
        self.count = 0

    def _held(self) -> Frames:
        c = self.count
        return (self.latents[:, :c], {k: a[:, :c] for k, a in self.actions.items()}, self.poses[:, :c],
                self.index[:c])

    def _keep(self, frames: Frames, start: int) -> None:
        lat, acts, poses, idx = frames
        c = int(idx.shape[0]) - start
        self.latents[:, :c] = lat[:, start:]
        for k, a in acts.items():
            self.actions[k][:, :c] = a[:, start:]
        self.poses[:, :c] = poses[:, start:]
        self.index[:c] = idx[start:]
        self.count = c

    def push(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor,
             start_index: int, limit: int) -> Frames | None:
        """Add frames (B, n, ...) and return the held frames with index < ``limit`` (oldest first)
        plus any that no longer fit, or None."""
        if self.latents is None or self.latents.shape[0] != latents.shape[0]:
            self._allocate(latents, actions)
        n = int(latents.shape[1])
        idx = torch.arange(start_index, start_index + n, device=latents.device)
        lat, acts, pos, held_idx = self._held()
        frames = (torch.cat([lat, latents.detach().float()], 1),
                  {k: torch.cat([a, actions[k].to(a.dtype)], 1) for k, a in acts.items()},
                  torch.cat([pos, poses], 1), torch.cat([held_idx, idx]))
        return self._split(frames, limit)

    def pop_before(self, limit: int) -> Frames | None:
        """Remove and return the held frames with index < ``limit`` (or None)."""
        if self.latents is None or self.count == 0:
            return None
        return self._split(tuple(t.clone() if torch.is_tensor(t) else {k: a.clone() for k, a in t.items()}
                                 for t in self._held()), limit)

    def _split(self, frames: Frames, limit: int) -> Frames | None:
        idx = frames[3]
        total = int(idx.shape[0])
        out = max(int((idx < limit).sum()), total - self.size)  # indices increase along the buffer
        self._keep(frames, out)
        if out == 0:
            return None
        lat, acts, poses, _ = frames
        return lat[:, :out], {k: a[:, :out] for k, a in acts.items()}, poses[:, :out], idx[:out]

    def nbytes(self) -> int:
        if self.latents is None:
            return 0
        tensors = [self.latents, self.poses, self.index, *self.actions.values()]
        return sum(t.numel() * t.element_size() for t in tensors)


def oldest_first_context(store: FrameStore, slots: torch.Tensor, valid: torch.Tensor,
                         local_window: int) -> MemoryContext | None:
    """Context of the chosen ``slots`` (B, K) where ``valid``, oldest first, padded to the longest row.

    Rows with fewer entries are padded (valid False); None when no row has any entry.
    """
    src = torch.gather(store.index, 1, slots)  # (B, K)
    key = torch.where(valid, src, torch.full_like(src, torch.iinfo(torch.long).max))
    order = torch.argsort(key, dim=1, stable=True)
    slots, valid = torch.gather(slots, 1, order), torch.gather(valid, 1, order)
    m = int(valid.sum(1).max()) if valid.numel() else 0
    if m == 0:
        return None
    slots, valid = slots[:, :m], valid[:, :m]
    ctx = store.gather(slots, valid)
    ctx.poses = torch.where(valid[..., None], ctx.poses, torch.full_like(ctx.poses, float("nan")))
    for k, a in ctx.actions.items():  # padding rows carry the null action
        mask = valid.view(*valid.shape, *([1] * (a.dim() - 2)))
        fill = float("nan") if a.dtype.is_floating_point else NULL_ACTION
        ctx.actions[k] = torch.where(mask, a, torch.full_like(a, fill))
    ctx.positions = slot_positions(m, local_window)
    ctx.kinds = torch.full((slots.shape[0], m), MEMORY_KIND, dtype=torch.long, device=slots.device)
    return ctx


@dataclass
class PosedConfig(MemoryConfig):
    """Settings of the raw-frame, pose-based strategies (kv, vrag).

    poses:        "given" (the engine passes camera poses with every write) or "dead_reckon"
                  (integrated from the actions from the origin at reset; memory/deadreckon.py).
    plain:        stored frames enter the DiT as ordinary earlier frames (frame kind 0, no poses).
    pose_scale:   environment units per unit of pose distance (translation / pose_scale).
    angle_weight: weight of the angle differences (degrees / 180) in the pose distance.
    """

    budget: int = 8
    local_window: int | None = 16
    poses: str = "given"
    plain: bool = False
    pose_scale: float = 256.0
    angle_weight: float = 1.0

    def check(self, strategy: str = "") -> None:
        super().check(strategy)
        n = strategy or self.strategy
        check_pose_mode(self.poses, n)
        check_bool(n, "plain", self.plain)
        check_float(n, "pose_scale", self.pose_scale, 0.0, low_open=True)
        check_float(n, "angle_weight", self.angle_weight, 0.0)


@dataclass
class KVMemoryConfig(PosedConfig):
    """WorldScape's memory (:class:`KVMemory`): ``budget`` frames read per chunk (the anchors plus the
    pool frames of largest frustum overlap); ``anchors`` first frames kept for ever and always read;
    ``pool`` global-pool capacity; ``gate`` surprise threshold; ``min_overlap`` least frustum overlap
    for a pool frame to be read; ``fov_deg`` camera field of view."""

    strategy = "kv"

    anchors: int = 1
    pool: int = 64
    gate: float = 1.1
    min_overlap: float = 0.05
    fov_deg: float = 90.0

    def check(self, strategy: str = "") -> None:
        super().check(strategy)
        n = strategy or self.strategy
        check_int(n, "anchors", self.anchors, 0)
        if self.anchors > self.budget:
            raise MemoryConfigError(f"memory {n!r}: anchors ({self.anchors}) must be <= budget "
                                    f"({self.budget}): anchors are always read")
        check_int(n, "pool", self.pool, 1)
        check_float(n, "gate", self.gate, 0.0)
        check_float(n, "min_overlap", self.min_overlap, 0.0, 1.0)
        check_float(n, "fov_deg", self.fov_deg, 0.0, 179.0, low_open=True)


class PosedFrameMemory(Memory):
    """Shared parts of the raw-frame, pose-based strategies (kv, vrag): the engine's local window,
    a :class:`~infworld.memory.deadreckon.PoseTracker` (``self.tracker``), the ``plain`` setting,
    the pose metric and ``budget`` frames per read (:class:`PosedConfig`)."""

    config_class = PosedConfig

    def __init__(self, config: PosedConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        cfg = self.config
        self._local = cfg.local_window
        self.tracker = PoseTracker(cfg.poses, self.name)
        self.plain = cfg.plain
        self.pose_scale = cfg.pose_scale
        self.angle_weight = cfg.angle_weight

    @property
    def local_window(self) -> int:
        return self._local

    @property
    def needs_poses(self) -> bool:
        return self.tracker.needs_poses

    def max_context(self) -> int:
        return self.budget


class KVMemory(PosedFrameMemory):
    """WorldScape's three-level memory (module docstring); ``budget`` = frames returned per read.

    Settings (:class:`KVMemoryConfig`): ``anchors`` first frames kept for ever and always read;
    ``pool`` global-pool capacity; ``gate`` surprise threshold; ``min_overlap`` least frustum overlap
    for a pool frame to be read; ``fov_deg`` camera field of view; ``pose_scale``/``angle_weight`` the
    pose metric of farthest point sampling; ``poses`` "given" (the engine passes poses) or
    "dead_reckon" (integrated from the actions from the origin at reset; see
    infworld/memory/deadreckon.py).

    Surprise of a frame z = min over the stored frames (anchors + pool) of mean((z - z_s)^2) over
    the latent; the frame enters the pool only if it exceeds ``gate`` (an identical frame has
    surprise 0 and is refused). The default gate 1.1 is calibrated for the shipped tokenizer's
    standardised latents (unit variance, ``doom-tiny-tokenizer``) on 928 frames of data/doom-train
    (the first 100 frames of the first 10 episodes): the mean squared difference between consecutive
    latents has quantiles 0.80 (50%), 0.90 (60%), 1.11 (70%), 1.57 (80%), so at gate 1.1, 30% of
    consecutive frames pass, and streaming each episode through the gate (against everything
    accepted so far) accepts 31%. Measure the same quantiles to rescale it for another
    tokenizer (e.g. "pixels:N" latents are not standardised).
    """

    name = "kv"
    config_class = KVMemoryConfig

    def __init__(self, config: KVMemoryConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        cfg = self.config
        self.anchors, self.pool, self.gate = cfg.anchors, cfg.pool, cfg.gate
        self.min_overlap, self.fov_deg = cfg.min_overlap, cfg.fov_deg
        self.store = FrameStore(self.anchors + self.pool)  # slots [0, anchors) anchors, then the pool
        self.window = WindowBuffer(self._local - 1)
        self.seen = 0  # frames that left the local window since reset
        self.offered: torch.Tensor | None = None  # (B,) frames offered to the pool gate
        self.accepted: torch.Tensor | None = None  # (B,) frames the gate let in
        self.last_sources: torch.Tensor | None = None  # (B, M) frame indices of the last read

    def reset(self) -> None:
        self.store.clear()
        self.window.reset()
        self.tracker.reset()
        self.seen = 0
        self.offered = self.accepted = None
        self.last_sources = None

    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        p = self.tracker.poses(latents, actions, poses)  # (B, n, 5), raises when poses are missing
        end = start_index + int(latents.shape[1])
        self._enter(self.window.push(latents, actions, p, start_index, end - (self._local - 1)))

    def _enter(self, frames: Frames | None) -> None:
        """Frames that left the local window go to the anchors or through the gate into the pool."""
        if frames is None:
            return
        lat, acts, poses, idx = frames
        self.store.ensure(lat, acts)
        if self.offered is None or self.offered.shape[0] != lat.shape[0]:
            self.offered = torch.zeros(lat.shape[0], dtype=torch.long, device=lat.device)
            self.accepted = torch.zeros_like(self.offered)
        for j, i in enumerate(idx.tolist()):
            self._insert(lat[:, j], {k: a[:, j] for k, a in acts.items()}, poses[:, j], i)

    def _insert(self, z: torch.Tensor, acts: dict[str, torch.Tensor], pose: torch.Tensor, index: int) -> None:
        """One frame z (B, C, h, w) with its actions {k: (B,)}, pose (B, 5), rollout index."""
        st, a_n, p_n = self.store, self.anchors, self.pool
        b = z.shape[0]
        if self.seen < a_n:  # level 1: the first frames are anchors, unconditionally
            slot = torch.full((b,), self.seen, dtype=torch.long, device=z.device)
            accept = torch.ones(b, dtype=torch.bool, device=z.device)
        else:
            stored = st.index >= 0  # (B, S)
            mse = (st.latents - z[:, None]).pow(2).flatten(2).mean(-1)  # (B, S)
            surprise = mse.masked_fill(~stored, math.inf).amin(1)  # (B,), inf when nothing is stored
            accept = surprise > self.gate
            count = stored[:, a_n:].sum(1)  # (B,) pool slots in use (the pool fills without holes)
            full = count >= p_n
            slot = a_n + count.clamp(max=p_n - 1)
            if bool((full & accept).any()):
                drop = self._fps_drop(pose)  # (B,) 0..pool-1 = a pool slot, pool = the new frame
                slot = torch.where(full, a_n + drop.clamp(max=p_n - 1), slot)
                accept = accept & ~(full & (drop == p_n))
            self.offered += 1
            self.accepted += accept.long()
        self.seen += 1
        sel = accept.nonzero().flatten()  # rows that store the frame
        if sel.numel():
            s = slot[sel]
            st.latents[sel, s] = z[sel].to(st.dtype)
            for k, a in acts.items():
                st.actions[k][sel, s] = a[sel].to(st.actions[k].dtype)
            st.poses[sel, s] = pose[sel].float()
            st.index[sel, s] = index

    def _fps_drop(self, pose: torch.Tensor) -> torch.Tensor:
        """Which of (pool + new frame) farthest point sampling leaves out, per row (B,).

        FPS starts from the first anchor's pose when there is one (the pool should spread away from
        what the anchors already show), then keeps ``pool`` of the pool + new frame; the one left out
        (index ``pool`` = the new frame) is dropped.
        """
        st, a_n, p_n = self.store, self.anchors, self.pool
        pts = torch.cat([st.poses[:, a_n:], pose[:, None].float()], 1)  # (B, P + 1, 5)
        seed = 1 if a_n > 0 else 0
        if seed:
            pts = torch.cat([st.poses[:, :1], pts], 1)  # (B, P + 2, 5)
        keep = farthest_point_sampling(pts, p_n + seed, self.pose_scale, self.angle_weight)  # (B, P [+1])
        left = torch.ones(pts.shape[:2], dtype=torch.bool, device=pts.device)
        left.scatter_(1, keep, False)
        left[:, :seed] = False
        return left.float().argmax(1) - seed

    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        limit = next_index - (self._local - 1)
        self._enter(self.window.pop_before(limit))
        self.last_sources = None
        st = self.store
        if st.index is None or not bool((st.index >= 0).any()):
            return None
        a_n, b = self.anchors, st.index.shape[0]
        ref = self.tracker.reference(pose).to(st.poses.device)  # (B, 5)
        ok = (st.index >= 0) & (st.index < limit)  # (B, S)
        slots = torch.arange(a_n, device=ok.device)[None].expand(b, a_n)
        valid = ok[:, :a_n]
        k = min(self.budget - a_n, self.pool)
        if k > 0:
            overlap = frustum_overlap(ref, st.poses[:, a_n:], fov_deg=self.fov_deg)  # (B, P)
            good = ok[:, a_n:] & (overlap >= self.min_overlap)
            # ties (overlap is a fraction of a fixed point set) go to the most recent frame
            recency = st.index[:, a_n:].float() / float(max(limit, 1)) * 1e-4
            score = torch.where(good, overlap + recency, torch.full_like(overlap, -1.0))
            top, top_slots = score.topk(k, dim=1)
            slots = torch.cat([slots, top_slots + a_n], 1)
            valid = torch.cat([valid, top >= 0], 1)
        ctx = oldest_first_context(st, slots, valid, self._local)
        if ctx is None:
            return None
        if self.tracker.mode == "dead_reckon" and pose is not None:
            # the engine's poses live in another frame than the dead-reckoned ones: withhold them
            ctx.poses = torch.full_like(ctx.poses, float("nan"))
        self.last_sources = ctx.sources.clone()
        return self.present(ctx)

    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.offered, self.accepted, self.tracker.current)
                    if t is not None)
        return self.store.nbytes() + self.window.nbytes() + extra
