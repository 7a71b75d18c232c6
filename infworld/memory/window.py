"""Sliding-window memory: the model remembers only the last ``budget`` frames.

The baseline of every long-horizon comparison (Infinite-World, VRAG). With the engine's KV cache
the window *is* the cache: each frame attends to the ``budget`` most recent frames (itself
included), so this strategy adds no context of its own and holds no state; its memory footprint is
the KV cache, which the engine reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from infworld.errors import MemoryConfigError
from infworld.memory.base import Memory, MemoryConfig, MemoryContext


@dataclass
class WindowConfig(MemoryConfig):
    """The window's memory is the local window itself (it reads nothing), so ``budget`` and
    ``local_window`` are one setting: give either (default 16), or both equal."""

    strategy = "window"

    budget: int | None = None
    local_window: int | None = None

    def __post_init__(self) -> None:
        if self.budget is None:
            self.budget = self.local_window if self.local_window is not None else 16
        super().__post_init__()

    def updated(self, settings: Mapping[str, Any] | None, strategy: str = "") -> WindowConfig:
        """As :meth:`MemoryConfig.updated`; setting one of budget / local_window sets both."""
        new = self._fold(dict(settings or {}), strategy or self.strategy)
        for one, other in (("budget", "local_window"), ("local_window", "budget")):
            if one in new and other not in new:
                new[other] = new[one]
        return super().updated(new, strategy)

    def check(self, strategy: str = "") -> None:
        super().check(strategy)
        if self.local_window != self.budget:
            raise MemoryConfigError(f"memory {strategy or self.strategy!r}: budget ({self.budget}) and "
                                    f"local_window ({self.local_window}) are one setting for the window "
                                    "(its memory is the local window); give one of them")


class WindowMemory(Memory):
    """Local window only; ``budget`` = ``local_window`` = frames of attention span (default 16)."""

    name = "window"
    config_class = WindowConfig

    def __init__(self, config: WindowConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
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
