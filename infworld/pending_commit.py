"""A deferred cache commit: finished frames whose keys/values ride along the next chunk's first DiT call.

After a chunk is sampled, the engine (world.py) runs the finished frames through the DiT once more
at the context noise level to cache their keys/values (the commit pass of CausVid / Self-Forcing
inference). At one frame per step that pass costs as much as the one-step denoising itself: the DiT
over 16 tokens is dominated by per-call overhead. With ``RolloutConfig.fold_commit`` the pass is
deferred: the next chunk's first velocity call runs ``[finished frames, noisy frames]`` together,
and the block-causal mask keeps the finished frames from seeing the noisy ones, so their keys/values
are those of the separate pass (same positions, levels, actions, conv-path predecessor).

What differs is only the memory prefix: the finished frames attend to the memory read made for the
next chunk instead of their own chunk's (with the window memory there is none, and a folded rollout
equals the separate one; tests/test_fold_commit.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # the engine imports this module
    from infworld.models.kvcache import PastKV
    from infworld.world import WorldModel


@dataclass
class PendingCommit:
    """Frames ``start .. start + m - 1`` of a rollout, in the context but not yet in the KV cache."""

    latents: torch.Tensor  # (B, m, C, h, w) as they enter the context (context noise applied)
    actions: dict[str, torch.Tensor]  # (B, m) per field, the actions leading into them
    level: float  # their noise level (the rollout's context noise)
    prev: torch.Tensor | None  # (B, 1, C, h, w) the frame before latents[:, 0] (conv path), or None
    prev_t: torch.Tensor | None  # (B, 1) its noise level, or None
    start: int  # rollout frame index of latents[:, 0]

    @property
    def frames(self) -> int:
        return int(self.latents.shape[1])

    def join(self, x: torch.Tensor, t: torch.Tensor, actions: dict[str, torch.Tensor], positions: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """The inputs of one DiT call over [these frames, the chunk]: x (B, n, C, h, w) at levels t (B, n),
        actions (B, n) per field, positions (n,) -> the same with m + n frames (positions of these
        frames: the m just before the chunk's first)."""
        m = self.frames
        lat = self.latents.to(x.dtype)
        t_all = torch.cat([torch.full((x.shape[0], m), self.level, dtype=t.dtype, device=t.device), t], dim=1)
        acts = {k: torch.cat([self.actions[k].to(a.device), a], dim=1) for k, a in actions.items()}
        before = torch.arange(m, 0, -1, dtype=positions.dtype, device=positions.device)  # m .. 1
        pos = torch.cat([positions[:1] - before, positions])
        return torch.cat([lat, x], dim=1), t_all, acts, pos

    def own_kv(self, kv: list[tuple[torch.Tensor, torch.Tensor]], tokens_per_frame: int
               ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """These frames' keys/values out of a joined call's (each (B, H, (m + n) * N, hd))."""
        hi = self.frames * tokens_per_frame
        return [(k[:, :, :hi], v[:, :, :hi]) for k, v in kv]


def folded_call(world: WorldModel, x: torch.Tensor, tt: torch.Tensor, acts: dict[str, torch.Tensor],
                pos: torch.Tensor, past: PastKV | None) -> torch.Tensor:
    """One DiT call over [``world``'s pending frames, the chunk x (B, n, C, h, w) at levels tt (B, n)]:
    caches the pending frames' keys/values (the cache is trimmed by the next flush) and returns the
    chunk's velocity (B, n, C, h, w)."""
    pend = world._pending
    x_all, t_all, a_all, p_all = pend.join(x, tt, acts, pos)
    out, kv = world.dit(x_all, t_all, a_all, positions=p_all, past=past, window=world.window,
                        return_kv=True, prev=pend.prev, prev_t=pend.prev_t)
    world.cache.append(pend.own_kv(kv, world.dit.cfg.tokens_per_frame),
                       range(pend.start, pend.start + pend.frames))
    world._pending = None
    return out[:, pend.frames:]


def flush_pending(world: WorldModel) -> None:
    """Run ``world``'s pending commit's cache pass on its own (the commit pass; deferred ones before
    real frames are observed), and trim the cache to the window (a folded call adds its frames
    untrimmed). Nothing without the cache."""
    if not world.config.use_cache:
        return
    world.cache.evict(world.window - 1)
    pend, world._pending = world._pending, None
    if pend is None:
        return
    base, past = world._context()
    pos = torch.arange(pend.start, pend.start + pend.frames, device=world.device).float() - base
    t0 = torch.full((world.batch, pend.frames), pend.level, device=world.device)
    _, kv = world.dit(pend.latents, t0, pend.actions, positions=pos, past=past, window=world.window,
                      return_kv=True, prev=pend.prev, prev_t=pend.prev_t)
    world.cache.append(kv, range(pend.start, pend.start + pend.frames))
    world.cache.evict(world.window - 1)
