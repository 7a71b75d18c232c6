"""Memory keys/values kept between chunks for the causal layout: the longest unchanged prefix.

With the ``causal`` memory layout (memory/context.py) memory frame i runs through the DiT in the
context of frames 0..i-1 (block-causal, at consecutive slot positions). Its keys/values therefore
depend on what frames 0..i are (latent, actions, frame kind, pose features) and on their positions
*relative to each other*: keys are kept un-rotated and RoPE only sees position differences, so the
engine moving the whole block every chunk changes nothing (up to float rounding).

The strategies return their frames oldest first (vrag, kv, full; HPMC's slots depend only on the
frame count), so from one chunk to the next a read usually returns the same frames, or the same
frames with the newest changed. :class:`CausalKVCache` keeps the keys/values of the last read and,
for the next one, finds the longest prefix of frames that is unchanged in every batch row (same
frame, same conditioning, same relative position, same padding); only the frames after it run through
the DiT, attending to the kept prefix as past context. When nothing changed, nothing runs. It holds
one read's keys/values at most (``budget`` frames per batch row), whatever the rollout length, and
the result equals a full recompute up to float rounding (a different number of frames per matrix
product, ~1e-7). This is the memory-context part of the play profile (docs/play.md) that the
isolated layout's :class:`~infworld.memory.kv_reuse.FrameKVCache` could not serve.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping

import torch

from infworld.memory.frame_keys import frame_keys
from infworld.models.kvcache import PastKV

# per layer (k, v), each (B, H, F * N, hd): keys/values of F consecutive memory frames
BlockKV = list[tuple[torch.Tensor, torch.Tensor]]


class CausalKVCache:
    """Keys/values of the last read's memory frames (causal layout), reused up to the first change.

    ``reused`` and ``computed`` count frames (over all batch rows) served from the cache and run
    through the DiT since the last :meth:`reset`.
    """

    encoding = "causal"  # the memory layout this cache serves (memory/context.py)

    def __init__(self) -> None:
        self._keys: list[list[Hashable]] | None = None  # per batch row, one key per frame
        self._kv: BlockKV = []
        self.reused = 0
        self.computed = 0

    def __len__(self) -> int:
        """Frames kept, over all batch rows."""
        return sum(len(row) for row in self._keys) if self._keys else 0

    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self._kv)

    def clear(self) -> None:
        """Drop what is kept (the latest read returned nothing); the counters stay."""
        self._keys, self._kv = None, []

    def reset(self) -> None:
        """Drop what is kept and zero the counters (a new rollout)."""
        self.clear()
        self.reused = self.computed = 0

    def encode(self, latents: torch.Tensor, sources: torch.Tensor | None, kinds: torch.Tensor,
               actions: Mapping[str, torch.Tensor], poses: torch.Tensor | None, positions: torch.Tensor,
               valid: torch.Tensor | None, run: Callable[[int, PastKV | None], BlockKV]
               ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Keys and values per layer, each (B, H, M * N, hd), of the M memory frames of one read.

        latents (B, M, C, h, w); sources (B, M) rollout frame indices (-1 = none); kinds (B, M);
        actions {name: (B, M) or (B, M, d)}; poses (B, M, P) the pose features the DiT sees or None;
        positions (M,) the frames' (fitted) positions; valid (B, M) or None (all valid).
        ``run(first, prefix)`` encodes frames ``first..M-1`` attending to ``prefix`` (the kept keys/
        values of frames 0..first-1, or None) and returns their keys/values per layer.
        """
        b, m = latents.shape[:2]
        flat = frame_keys(latents, sources, kinds, actions, poses)
        rel = (positions.detach().float().cpu() - float(positions[0])).numpy()  # (M,) relative positions
        ok = valid.detach().cpu().tolist() if valid is not None else [[True] * m for _ in range(b)]
        keys = [[(flat[r * m + c], rel[c].tobytes(), bool(ok[r][c])) for c in range(m)] for r in range(b)]
        p = self._common_prefix(keys)
        kept: BlockKV = []
        if p > 0:  # the kept keys/values of frames 0..p-1 (N tokens a frame)
            n = self._kv[0][0].shape[2] // len(self._keys[0])
            kept = [(k[:, :, :p * n], v[:, :, :p * n]) for k, v in self._kv]
        if p == m:  # the same frames (or the first m of the kept ones): nothing runs
            kv = kept
        elif p == 0:
            kv = run(0, None)
        else:
            prefix = PastKV([k for k, _ in kept], [v for _, v in kept], positions[:p],
                            torch.zeros(p, dtype=torch.bool, device=positions.device),
                            valid=valid[:, :p] if valid is not None else None)
            kv = [(torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2))
                  for (pk, pv), (k, v) in zip(kept, run(p, prefix), strict=True)]
        self.reused += b * p
        self.computed += b * (m - p)
        self._keys, self._kv = keys, [(k.detach(), v.detach()) for k, v in kv]
        return [k for k, _ in kv], [v for _, v in kv]

    def _common_prefix(self, keys: list[list[Hashable]]) -> int:
        """Frames unchanged from the start in every batch row (0 when nothing is kept)."""
        if self._keys is None or len(self._keys) != len(keys):
            return 0
        p = min(len(keys[0]), len(self._keys[0]))
        for old, new in zip(self._keys, keys, strict=True):
            i = 0
            while i < p and old[i] == new[i]:
                i += 1
            p = i
        return p
