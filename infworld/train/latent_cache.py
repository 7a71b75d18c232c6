"""Tokenizer latents of dataset frames, cached in RAM so the frozen tokenizer encodes each frame once."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class LatentCache:
    """Tokenizer latents of dataset frames, each frame encoded once and kept in float16 on the CPU.

    The tokenizer is frozen, so re-encoding the same frames every step (as costly as the DiT step
    itself at CPU scale) is wasted work. Clips carry their ``episode`` and ``start``; per episode we
    keep a (T, C, h, w) latent array and a filled mask. Episodes stop being added once ``budget``
    bytes are used (their clips are then encoded every time).
    """

    def __init__(self, root: str, latent_shape: tuple[int, int, int], budget_bytes: int):
        from infworld.data.episode import list_episodes

        self.paths = list_episodes(root)
        self.latent_shape = tuple(latent_shape)
        self.budget = budget_bytes
        self.used = 0
        self.store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _entry(self, episode: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        from infworld.data.stats import episode_length

        if episode not in self.store:
            if not 0 <= episode < len(self.paths):
                return None
            t = episode_length(self.paths[episode])
            size = t * int(np.prod(self.latent_shape)) * 2
            if self.used + size > self.budget:
                return None
            self.store[episode] = (torch.zeros(t, *self.latent_shape, dtype=torch.float16),
                                   torch.zeros(t, dtype=torch.bool))
            self.used += size
        return self.store[episode]

    def latents(self, net: Any, frames: torch.Tensor, episodes: torch.Tensor, starts: torch.Tensor
                ) -> torch.Tensor:
        """Latents (B, L, C, h, w) of clip frames (B, L, 3, H, W) starting at ``starts`` (B,); float32
        holding float16-rounded values whether they came from the cache or not."""
        b, n = frames.shape[:2]
        entries = [self._entry(int(e)) for e in episodes.tolist()]
        idx = [torch.arange(int(s), int(s) + n) for s in starts.tolist()]
        missing = torch.stack([~e[1][i] if e is not None else torch.ones(n, dtype=torch.bool)
                               for e, i in zip(entries, idx, strict=True)])  # (B, L)
        out = torch.empty(b, n, *self.latent_shape)
        if missing.any():
            # (M, C, h, w): encode only the frames not cached yet
            z = net.encode(frames[missing.to(frames.device)][None]).cpu()[0]
            # rounded like the cached copies, so a loss never depends on what was cached (exact resume)
            out[missing] = z.half().float()
        for j, (entry, i) in enumerate(zip(entries, idx, strict=True)):
            if entry is None:
                continue
            lat, filled = entry
            new = missing[j]
            lat[i[new]] = out[j, new].half()
            filled[i[new]] = True
            out[j, ~new] = lat[i[~new]].float()
        return out.to(frames.device)
