"""Full-history memory: every frame older than the local window comes back as context.

The oracle of the memory comparison (Infinite-World and VRAG compare against the model that sees
everything it could need): nothing is forgotten, so the gap between ``window`` and ``full`` is what
a bounded strategy can at best close. Unbounded by nature, so ``budget`` caps the frames it may
hold, preallocated at reset (its size is known up front), and a rollout that goes past it is
refused with an error instead of silently forgetting or running out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import MEMORY_KIND, Memory, MemoryConfig, MemoryContext, check_bool, slot_positions
from infworld.memory.store import FrameStore


@dataclass
class FullConfig(MemoryConfig):
    """``budget``: history frames beyond the local window it holds and reads back (all of them);
    ``plain``: show them as ordinary earlier frames (frame kind 0, no poses)."""

    strategy = "full"

    budget: int = 48
    local_window: int | None = 16
    plain: bool = False

    def check(self, strategy: str = "") -> None:
        super().check(strategy)
        check_bool(strategy or self.strategy, "plain", self.plain)


class FullMemory(Memory):
    """All frames before the local window (``budget`` = most history frames it will hold and read)."""

    name = "full"
    config_class = FullConfig

    def __init__(self, config: FullConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.plain = self.config.plain
        self._local = self.config.local_window
        self.store = FrameStore(self.budget + self._local - 1)  # history + the frames still in the cache

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
