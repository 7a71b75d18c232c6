"""Preallocated per-row frame slots shared by the memory strategies that keep raw latent frames.

A :class:`FrameStore` holds up to ``capacity`` frames per batch row: latents, per-frame actions,
poses (NaN = unknown) and the rollout index each came from (-1 = empty slot). Buffers are allocated
once, at the first write (when the latent shape is known), so the bytes held are flat over any
rollout length. Strategies decide *which* slot a frame goes to (append, replace after pruning) and
which slots to read; the store only keeps them and gathers them into a
:class:`~infworld.memory.base.MemoryContext`.
"""

from __future__ import annotations

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import MemoryContext
from infworld.models.action import NULL_ACTION


class FrameStore:
    """``capacity`` frame slots per batch row (see module docstring)."""

    def __init__(self, capacity: int, dtype: torch.dtype = torch.float32):
        if capacity < 1:
            raise MemoryConfigError(f"frame store: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.dtype = dtype
        self.latents: torch.Tensor | None = None  # (B, cap, C, h, w)
        self.actions: dict[str, torch.Tensor] = {}  # (B, cap[, d])
        self.poses: torch.Tensor | None = None  # (B, cap, 5), NaN = unknown
        self.index: torch.Tensor | None = None  # (B, cap) int64 rollout frame index, -1 = empty

    def clear(self) -> None:
        if self.index is not None:
            self.index.fill_(-1)
            self.poses.fill_(float("nan"))

    def _allocate(self, latents: torch.Tensor, actions: dict[str, torch.Tensor]) -> None:
        b, _, *shape = latents.shape
        cap, dev = self.capacity, latents.device
        self.latents = torch.zeros(b, cap, *shape, dtype=self.dtype, device=dev)
        def null(a: torch.Tensor) -> float:
            return float("nan") if a.dtype.is_floating_point else NULL_ACTION

        self.actions = {k: torch.full((b, cap, *a.shape[2:]), null(a), dtype=a.dtype, device=dev)
                        for k, a in actions.items()}
        self.poses = torch.full((b, cap, 5), float("nan"), device=dev)
        self.index = torch.full((b, cap), -1, dtype=torch.long, device=dev)

    @property
    def batch(self) -> int:
        return 0 if self.index is None else int(self.index.shape[0])

    def count(self) -> torch.Tensor:
        """(B,) filled slots per row."""
        if self.index is None:
            return torch.zeros(0, dtype=torch.long)
        return (self.index >= 0).sum(1)

    def put(self, row: int, slot: int, latent: torch.Tensor, actions: dict[str, torch.Tensor],
            pose: torch.Tensor | None, index: int) -> None:
        """Write one frame: latent (C, h, w), actions {name: () or (d,)}, pose (5,) or None."""
        self.latents[row, slot] = latent.to(self.dtype)
        for k, a in actions.items():
            self.actions[k][row, slot] = a
        self.poses[row, slot] = pose if pose is not None else float("nan")
        self.index[row, slot] = index

    def add(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
            start_index: int) -> None:
        """Append frames (B, n, ...) to the first free slots of every row (same for all rows);
        raises when they do not fit (strategies that prune call :meth:`put` instead)."""
        if self.index is None or self.index.shape[0] != latents.shape[0]:
            self._allocate(latents, actions)
        b, n = latents.shape[:2]
        free = (self.index[0] < 0).nonzero().flatten()
        if free.numel() < n:
            raise MemoryConfigError(f"frame store: {n} frames do not fit in {free.numel()} free slots "
                                    f"(capacity {self.capacity})")
        slots = free[:n]
        self.latents[:, slots] = latents.to(self.dtype)
        for k, a in actions.items():
            self.actions[k][:, slots] = a
        if poses is not None:
            self.poses[:, slots] = poses.float()
        self.index[:, slots] = torch.arange(start_index, start_index + n, device=self.index.device)

    def ensure(self, latents: torch.Tensor, actions: dict[str, torch.Tensor]) -> None:
        """Allocate the buffers for this batch and latent shape if not done yet."""
        if self.index is None or self.index.shape[0] != latents.shape[0]:
            self._allocate(latents, actions)

    def indices_before(self, limit: int) -> torch.Tensor:
        """(B, M) slots holding frames with index < ``limit``, oldest first (all rows alike)."""
        if self.index is None:
            return torch.zeros(0, 0, dtype=torch.long)
        row = self.index[0]
        keep = ((row >= 0) & (row < limit)).nonzero().flatten()
        keep = keep[torch.argsort(row[keep])]
        return keep[None].expand(self.index.shape[0], -1)

    def gather(self, slots: torch.Tensor, valid: torch.Tensor | None = None) -> MemoryContext:
        """Context of the frames in ``slots`` (B, M); ``valid`` (B, M) marks real entries (padding
        slots are gathered as zeros and never attended). Positions are left empty for the caller."""
        b, m = slots.shape
        rows = torch.arange(b, device=slots.device)[:, None].expand(b, m)
        lat = self.latents[rows, slots].float()
        acts = {k: a[rows, slots] for k, a in self.actions.items()}
        poses = self.poses[rows, slots]
        src = self.index[rows, slots]
        if valid is not None:
            lat = lat * valid.view(b, m, *([1] * (lat.dim() - 2))).to(lat.dtype)
            src = torch.where(valid, src, torch.full_like(src, -1))
        return MemoryContext(latents=lat, actions=acts, positions=torch.zeros(m), poses=poses, valid=valid,
                             sources=src)

    def nbytes(self) -> int:
        if self.index is None:
            return 0
        tensors = [self.latents, self.poses, self.index, *self.actions.values()]
        return sum(t.numel() * t.element_size() for t in tensors)
