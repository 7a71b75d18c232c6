"""VRAG retrieval memory (Chen et al., arXiv 2505.21996, "Learning World Models for Interactive Video
Generation"): retrieve past frames by their global state, condition on the state explicitly.

VRAG stores past frames with the agent's **global state** (position and angle) and, before
generating, retrieves the ``budget`` frames whose state is nearest to the current one (weighted
state distance, :func:`~infworld.memory.geometry.pose_distance`); they are concatenated with the
recent frames as clean context. The explicit state conditioning is done by the DiT from the
context's poses (relative pose features, infworld/memory/context.py), so this memory only returns
the frames with their absolute poses.

Every frame enters the store when it leaves the local window (the engine's KV cache). The store is
preallocated (``capacity`` frames per row); when it is full the **most redundant** frame is evicted:
the stored frame nearest in state to another frame, stored or incoming (ties: the oldest, so a
revisited view is refreshed rather than duplicated). Nearest-neighbour
distances are maintained incrementally, so a write costs O(capacity) per frame, not O(capacity^2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import MemoryContext, check_int
from infworld.memory.geometry import pose_distance
from infworld.memory.kvmemory import Frames, PosedConfig, PosedFrameMemory, WindowBuffer, oldest_first_context
from infworld.memory.store import FrameStore


@dataclass
class VRAGConfig(PosedConfig):
    """VRAG retrieval (:class:`VRAGMemory`): ``budget`` = top-k frames read per chunk; ``capacity``
    stored frames per row (preallocated, >= budget); ``pose_scale``/``angle_weight`` the state metric
    (``|dxyz| / pose_scale + angle_weight * (|dyaw| + |dpitch|) / 180``)."""

    strategy = "vrag"

    capacity: int = 1024

    def check(self, strategy: str = "") -> None:
        super().check(strategy)
        n = strategy or self.strategy
        check_int(n, "capacity", self.capacity, 1)
        if self.capacity < self.budget:
            raise MemoryConfigError(f"memory {n!r}: capacity ({self.capacity}) must be >= budget "
                                    f"({self.budget})")


class VRAGMemory(PosedFrameMemory):
    """State-based retrieval (module docstring); ``budget`` = top-k frames returned per read.

    Settings (:class:`VRAGConfig`): ``capacity`` stored frames per row (preallocated);
    ``pose_scale``/``angle_weight`` the state metric; ``poses`` "given" or "dead_reckon"
    (integrated from the actions; infworld/memory/deadreckon.py).
    """

    name = "vrag"
    config_class = VRAGConfig

    def __init__(self, config: VRAGConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.capacity = self.config.capacity
        self.store = FrameStore(self.capacity)
        self.window = WindowBuffer(self._local - 1)
        self.count = 0  # filled slots (every row stores every frame, so the same for all rows)
        self.nn_dist: torch.Tensor | None = None  # (B, cap) state distance to the nearest other frame
        self.nn_slot: torch.Tensor | None = None  # (B, cap) slot of that frame (-1 = none)
        self.last_sources: torch.Tensor | None = None  # (B, M) frame indices of the last read

    def reset(self) -> None:
        self.store.clear()
        self.window.reset()
        self.tracker.reset()
        self.count = 0
        if self.nn_dist is not None:
            self.nn_dist.fill_(math.inf)
            self.nn_slot.fill_(-1)
        self.last_sources = None

    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        p = self.tracker.poses(latents, actions, poses)  # (B, n, 5), raises when poses are missing
        end = start_index + int(latents.shape[1])
        self._enter(self.window.push(latents, actions, p, start_index, end - (self._local - 1)))

    def _dist(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """State distance, unknown (NaN) poses infinitely far (never retrieved, never 'redundant')."""
        return pose_distance(a, b, self.pose_scale, self.angle_weight).nan_to_num(math.inf, math.inf)

    def _enter(self, frames: Frames | None) -> None:
        if frames is None:
            return
        lat, acts, poses, idx = frames
        b = lat.shape[0]
        self.store.ensure(lat, acts)
        if self.nn_dist is None or self.nn_dist.shape[0] != b:
            self.nn_dist = torch.full((b, self.capacity), math.inf, device=lat.device)
            self.nn_slot = torch.full((b, self.capacity), -1, dtype=torch.long, device=lat.device)
        for j, i in enumerate(idx.tolist()):
            self._insert(lat[:, j], {k: a[:, j] for k, a in acts.items()}, poses[:, j], i)

    def _insert(self, z: torch.Tensor, acts: dict[str, torch.Tensor], pose: torch.Tensor, index: int) -> None:
        """Store one frame z (B, C, h, w) with actions {k: (B,)}, pose (B, 5), rollout index."""
        st = self.store
        b = z.shape[0]
        rows = torch.arange(b, device=z.device)
        affected = None
        if self.count < self.capacity:
            slot = torch.full((b,), self.count, dtype=torch.long, device=z.device)
            self.count += 1
        else:
            # Evict the most redundant frame: the smallest distance to its nearest other frame, the
            # new frame included; ties -> the oldest. The new frame never goes: its nearest stored
            # frame is at least as redundant and older.
            d_new = self._dist(pose[:, None].float(), st.poses)  # (B, cap)
            red = torch.minimum(self.nn_dist, d_new)
            tied = red == red.amin(1, keepdim=True)  # (B, cap); all inf -> all tied
            key = torch.where(tied, st.index, torch.full_like(st.index, torch.iinfo(torch.long).max))
            slot = key.argmin(1)  # (B,)
            affected = self.nn_slot == slot[:, None]  # frames whose nearest neighbour is evicted
            affected[rows, slot] = False
        st.latents[rows, slot] = z.to(st.dtype)
        for k, a in acts.items():
            st.actions[k][rows, slot] = a.to(st.actions[k].dtype)
        st.poses[rows, slot] = pose.float()
        st.index[rows, slot] = index
        # distances from the new frame to every stored frame (B, cap)
        d = self._dist(pose[:, None].float(), st.poses).masked_fill(st.index < 0, math.inf)
        d[rows, slot] = math.inf
        best, arg = d.min(1)
        closer = d < self.nn_dist
        self.nn_dist = torch.where(closer, d, self.nn_dist)
        self.nn_slot = torch.where(closer, slot[:, None].expand_as(self.nn_slot), self.nn_slot)
        self.nn_dist[rows, slot] = best
        self.nn_slot[rows, slot] = torch.where(torch.isfinite(best), arg, torch.full_like(arg, -1))
        if affected is not None and bool(affected.any()):
            rb, rs = affected.nonzero(as_tuple=True)  # (K,) rows and slots to recompute
            dd = self._dist(st.poses[rb, rs][:, None], st.poses[rb])  # (K, cap)
            dd = dd.masked_fill(st.index[rb] < 0, math.inf)
            dd[torch.arange(rs.shape[0], device=rs.device), rs] = math.inf
            v, j = dd.min(1)
            self.nn_dist[rb, rs] = v
            self.nn_slot[rb, rs] = torch.where(torch.isfinite(v), j, torch.full_like(j, -1))

    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        limit = next_index - (self._local - 1)
        self._enter(self.window.pop_before(limit))
        self.last_sources = None
        st = self.store
        if st.index is None or self.count == 0:
            return None
        ref = self.tracker.reference(pose).to(st.poses.device)  # (B, 5)
        ok = (st.index >= 0) & (st.index < limit)
        d = self._dist(ref[:, None], st.poses).masked_fill(~ok, math.inf)  # (B, cap)
        k = min(self.budget, self.capacity)
        neg, slots = (-d).topk(k, dim=1)  # nearest k states
        ctx = oldest_first_context(st, slots, torch.isfinite(neg), self._local)
        if ctx is None:
            return None
        if self.tracker.mode == "dead_reckon" and pose is not None:
            # the engine's poses live in another frame than the dead-reckoned ones: withhold them
            ctx.poses = torch.full_like(ctx.poses, float("nan"))
        self.last_sources = ctx.sources.clone()
        return self.present(ctx)

    def nbytes(self) -> int:
        extra = sum(t.numel() * t.element_size() for t in (self.nn_dist, self.nn_slot, self.tracker.current)
                    if t is not None)
        return self.store.nbytes() + self.window.nbytes() + extra
