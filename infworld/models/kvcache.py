"""Per-layer key/value cache for streaming, chunk-by-chunk generation with the block-causal DiT.

Streaming (Self-Forcing, Huang et al. 2025, Sec. 3.3; rolling buffer as in Mistral's sliding-window
attention): clean frames are run through the DiT once at noise level t = 0 and their keys/values
are appended here. Every denoising step of the next chunk attends to the cache plus itself, then the
finished chunk is run once more at t = 0 and appended, and the cache evicts down to the window.

Keys are stored **un-rotated** with the absolute index of their frame; :meth:`KVCache.past` hands
them out with positions relative to a base frame, and the DiT applies RoPE at read time. RoPE scores
only depend on position differences, so this equals rotating at absolute positions, but the angles
stay small forever: the cache has fixed-size buffers and fixed-size positions, so memory and time per
frame are flat over any rollout length.

The cache is a plain data structure that the rollout engine (infworld/world.py) fills and reads;
attention never mutates it (the DiT returns new keys/values, the engine appends them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from infworld.errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class PastKV:
    """Clean keys/values of earlier frames for the frames being computed to attend to.

    keys/values: one tensor per layer, (B, H, P * N, head_dim), keys un-rotated.
    positions:   (P,) frame positions on the same time axis as the current frames' positions.
    pinned:      (P,) bool, visible to every query frame whatever the attention window (memory
                 context); unpinned frames follow the block-causal window rule.
    valid:       (B, P) bool or None (all valid): False marks padding frames of some batch rows
                 (memory rows holding fewer frames than others), which no query attends to.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    positions: torch.Tensor
    pinned: torch.Tensor
    valid: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.positions.shape[0])

    def cat(self, other: PastKV | None) -> PastKV:
        """This context followed by ``other`` (per layer along the token axis)."""
        if other is None:
            return self
        valid = None
        if self.valid is not None or other.valid is not None:
            b = self.keys[0].shape[0]
            parts = [p.valid if p.valid is not None else
                     torch.ones(b, p.num_frames, dtype=torch.bool, device=p.positions.device)
                     for p in (self, other)]
            valid = torch.cat([parts[0], parts[1].to(parts[0].device)], dim=1)
        return PastKV(
            keys=[torch.cat([a, b], dim=2) for a, b in zip(self.keys, other.keys, strict=True)],
            values=[torch.cat([a, b], dim=2) for a, b in zip(self.values, other.values, strict=True)],
            positions=torch.cat([self.positions, other.positions]),
            pinned=torch.cat([self.pinned, other.pinned.to(self.pinned.device)]),
            valid=valid,
        )


@dataclass
class KVCacheConfig:
    """Sizes of the cache buffers; ``capacity`` is in frames (window + largest chunk, see world.py)."""

    num_layers: int
    num_heads: int
    head_dim: int
    tokens_per_frame: int
    capacity: int
    dtype: str = "float32"

    def check(self) -> None:
        for name in ("num_layers", "num_heads", "head_dim", "tokens_per_frame", "capacity"):
            if getattr(self, name) < 1:
                raise ConfigError(f"KVCacheConfig.{name}: expected >= 1, got {getattr(self, name)}")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"KVCacheConfig.dtype: expected one of {sorted(_DTYPES)}, got {self.dtype!r}")


class KVCache:
    """Fixed-capacity per-layer K/V buffers holding the most recent clean frames, oldest first."""

    def __init__(self, cfg: KVCacheConfig, batch_size: int, device: torch.device | str = "cpu"):
        cfg.check()
        self.cfg = cfg
        self.batch_size = batch_size
        shape = (cfg.num_layers, batch_size, cfg.num_heads, cfg.capacity * cfg.tokens_per_frame, cfg.head_dim)
        # Preallocated once: appends and evictions copy into these, never grow them.
        self._k = torch.zeros(shape, dtype=_DTYPES[cfg.dtype], device=device)  # (L, B, H, cap*N, hd)
        self._v = torch.zeros(shape, dtype=_DTYPES[cfg.dtype], device=device)
        self._index = torch.zeros(cfg.capacity, dtype=torch.int64)  # absolute frame index per slot
        self._n = 0  # frames held

    def __len__(self) -> int:
        return self._n

    @property
    def frame_index(self) -> torch.Tensor:
        """(n,) absolute indices of the cached frames, oldest first."""
        return self._index[: self._n].clone()

    def nbytes(self) -> int:
        """Bytes held by the cache buffers (allocated once, so constant over a rollout)."""
        return sum(t.numel() * t.element_size() for t in (self._k, self._v, self._index))

    def reset(self) -> None:
        self._n = 0

    def append(self, kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
               frame_index: Sequence[int] | torch.Tensor) -> None:
        """Add the clean keys/values of ``F`` new frames: ``kv[layer] = (k, v)``, each (B, H, F*N, hd)."""
        idx = torch.as_tensor(frame_index, dtype=torch.int64).reshape(-1)
        f, n_tok = idx.shape[0], self.cfg.tokens_per_frame
        if len(kv) != self.cfg.num_layers:
            raise ConfigError(f"KVCache.append: expected {self.cfg.num_layers} layers, got {len(kv)}")
        if self._n + f > self.cfg.capacity:
            raise ConfigError(f"KVCache.append: capacity {self.cfg.capacity} frames exceeded "
                              f"(holding {self._n}, appending {f}); evict first or raise the capacity")
        want = (self.batch_size, self.cfg.num_heads, f * n_tok, self.cfg.head_dim)
        lo, hi = self._n * n_tok, (self._n + f) * n_tok
        for layer, (k, v) in enumerate(kv):
            if tuple(k.shape) != want or tuple(v.shape) != want:
                raise ConfigError(f"KVCache.append: layer {layer} expected (B, H, F*N, hd) = {want}, "
                                  f"got {tuple(k.shape)} / {tuple(v.shape)}")
            self._k[layer, :, :, lo:hi] = k
            self._v[layer, :, :, lo:hi] = v
        self._index[self._n : self._n + f] = idx
        self._n += f

    def evict(self, keep: int) -> int:
        """Drop the oldest frames so at most ``keep`` remain; returns how many were dropped."""
        if keep < 0:
            raise ConfigError(f"KVCache.evict: keep must be >= 0, got {keep}")
        drop = max(0, self._n - keep)
        if drop == 0:
            return 0
        n_tok = self.cfg.tokens_per_frame
        kept = self._n - drop
        if kept:
            # Shift the survivors to the front (clone: source and destination overlap).
            src = slice(drop * n_tok, self._n * n_tok)
            self._k[:, :, :, : kept * n_tok] = self._k[:, :, :, src].clone()
            self._v[:, :, :, : kept * n_tok] = self._v[:, :, :, src].clone()
            self._index[:kept] = self._index[drop : self._n].clone()
        self._n = kept
        return drop

    def past(self, base: int) -> PastKV | None:
        """Views of the cached frames as a :class:`PastKV` with positions ``index - base``."""
        if self._n == 0:
            return None
        hi = self._n * self.cfg.tokens_per_frame
        return PastKV(
            keys=[self._k[layer, :, :, :hi] for layer in range(self.cfg.num_layers)],
            values=[self._v[layer, :, :, :hi] for layer in range(self.cfg.num_layers)],
            # on the cache's device: a memory prefix (on that device) is concatenated in front of it
            positions=(self._index[: self._n] - base).to(self._k.device, torch.float32),
            pinned=torch.zeros(self._n, dtype=torch.bool, device=self._k.device),
        )
