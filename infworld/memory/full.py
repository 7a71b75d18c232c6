"""Full-history memory: every frame older than the local window comes back as context.

The oracle of the memory comparison (Infinite-World and VRAG compare against the model that sees
everything it could need): nothing is forgotten, so the gap between ``window`` and ``full`` is what
a bounded strategy can at best close. Unbounded by nature, so ``budget`` caps the frames it may
hold, preallocated at reset (its size is known up front), and a rollout that goes past it is
refused with an error instead of silently forgetting or running out of memory.
"""

from __future__ import annotations

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import MEMORY_KIND, Memory, MemoryContext, slot_positions
from infworld.memory.store import FrameStore


class FullMemory(Memory):
    """All frames before the local window (``budget`` = most history frames it will hold)."""

    name = "full"

    def __init__(self, budget: int = 48, local_window: int = 16, plain: bool = False):
        super().__init__(budget)
        if not isinstance(plain, bool):
            raise MemoryConfigError(f"memory 'full': plain must be true or false, got {plain!r}")
        self.plain = plain
        if local_window < 1:
            raise MemoryConfigError(f"memory 'full': local_window must be >= 1, got {local_window}")
        self._local = local_window
        self.store = FrameStore(budget + local_window - 1)  # history + the frames still in the cache

    @property
    def local_window(self) -> int:
        return self._local

    def max_context(self) -> int:
        return self.budget

    def reset(self) -> None:
        self.store.clear()

    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        # After this write the next read needs every frame before end - (local_window - 1): more than
        # the budget is refused (an oracle that forgets is not an oracle).
        end = start_index + int(latents.shape[1])
        if end - (self._local - 1) > self.budget:
            raise MemoryConfigError(f"memory 'full': the rollout reached frame {end}; its history beyond the "
                                    f"local window ({end - self._local + 1} frames) exceeds the budget of "
                                    f"{self.budget}; raise the budget (as far as the model's memory slots "
                                    "allow) or use a bounded strategy (window, hpmc, kv, vrag)")
        self.store.add(latents, actions, poses, start_index)

    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        limit = next_index - (self._local - 1)
        idx = self.store.indices_before(limit)
        if idx.numel() == 0:
            return None
        ctx = self.store.gather(idx)
        m = ctx.latents.shape[1]
        ctx.positions = slot_positions(m, self._local)
        ctx.kinds = torch.full(ctx.latents.shape[:2], MEMORY_KIND, dtype=torch.long)
        return self.present(ctx)

    def nbytes(self) -> int:
        return self.store.nbytes()
