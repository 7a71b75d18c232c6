"""Sliding-window memory: the model remembers only the last ``budget`` frames.

The baseline of every long-horizon comparison (Infinite-World, VRAG). With the engine's KV cache
the window *is* the cache: each frame attends to the ``budget`` most recent frames (itself
included), so this strategy adds no context of its own and holds no state; its memory footprint is
the KV cache, which the engine reports.
"""

from __future__ import annotations

import torch

from infworld.memory.base import Memory, MemoryContext


class WindowMemory(Memory):
    """Local window only; ``budget`` = frames of attention span (default 16)."""

    name = "window"

    def __init__(self, budget: int = 16):
        super().__init__(budget)
        self.frames_seen = 0

    def frame_kinds(self) -> set[int]:
        return set()

    def reset(self) -> None:
        self.frames_seen = 0

    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        self.frames_seen = start_index + int(latents.shape[1])

    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        return None

    def nbytes(self) -> int:
        return 0
