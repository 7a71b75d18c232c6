"""The memory's context for each chunk of a rollout, with memory frames' keys/values kept between chunks.

Every chunk the rollout engine (infworld/world.py, step 1) asks its memory for clean context and
runs it through the DiT at t = 0 (:func:`~infworld.memory.context.memory_past`).
:class:`MemoryPrefix` does that once per chunk for the engine.

With the ``isolated`` memory layout a memory frame's keys/values depend only on what the frame is:
its latent, its actions, its frame kind and its pose features; not on its position (keys are kept
un-rotated, RoPE is applied at attention time from the positions) nor on the other memory frames.
A strategy that reads mostly the same frames chunk after chunk (``full`` adds a few per chunk,
``vrag`` retrieves mostly the same neighbours) would recompute the same keys/values every chunk.
:class:`FrameKVCache` keeps them, keyed by exactly what determines them:

* a raw frame (``sources >= 0``): (batch row, rollout frame index, conditioning), where the
  conditioning is the bytes of its frame kind, action values and pose features. A stored frame's
  latent never changes, so its row and index name it. Pose features are relative to the current
  camera, so a pose-conditioned frame is reused only while they are identical (camera still); the
  plain presentation and pose-free strategies pass no poses, a constant "no pose", and always reuse;
* an entry without a source (an HPMC compressed summary, padding): its latent's bytes and the
  conditioning, so content seen before is not recomputed.

Only the frames not in the cache run through the DiT, in one batched call. Entries the latest read
did not return are dropped, so the cache holds one read's frames at most (<= the memory's budget per
batch row) whatever the rollout length. The result equals a full recompute up to float rounding:
the DiT's matrix products round differently for another number of frames in the batch (~1e-7).
The causal layout encodes every frame in the context of the ones before it: there the unchanged
prefix of a read is reused instead (memory/causal_reuse.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import torch

from infworld.memory.base import Memory, MemoryContext
from infworld.memory.causal_reuse import CausalKVCache
from infworld.memory.context import MemoryLayout, memory_past
from infworld.memory.frame_keys import frame_keys
from infworld.models.kvcache import PastKV

# keys/values of some frames: per layer (k, v), each (F, H, N, hd)
FramesKV = list[tuple[torch.Tensor, torch.Tensor]]


class FrameKVCache:
    """Keys/values of single memory frames (isolated layout), kept from one chunk's read to the next.

    ``reused`` and ``computed`` count the frames served from the cache and those run through the
    DiT since the last :meth:`reset` (for tests and benchmarks).
    """

    encoding = "isolated"  # the memory layout this cache serves (memory/context.py)

    def __init__(self) -> None:
        self._entries: dict[Hashable, torch.Tensor] = {}  # key -> (L, 2, H, N, hd): one frame's k, v
        self.reused = 0
        self.computed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._entries.values())

    def clear(self) -> None:
        """Drop every entry (the latest read returned nothing); the counters stay."""
        self._entries = {}

    def reset(self) -> None:
        """Drop every entry and zero the counters (a new rollout)."""
        self.clear()
        self.reused = self.computed = 0

    def frames_kv(self, latents: torch.Tensor, sources: torch.Tensor | None, kinds: torch.Tensor,
                  actions: Mapping[str, torch.Tensor], poses: torch.Tensor | None,
                  compute: Callable[[torch.Tensor], FramesKV]) -> FramesKV:
        """Keys/values of the F = B * M memory frames (inputs as :func:`frame_keys`), row-major: per
        layer (k, v), each (F, H, N, hd). ``compute(idx)`` encodes the frames ``idx`` (F',) (int64,
        into the F) the same way; it is called once, for the frames the cache lacks (frames with one
        key once). Afterwards the cache holds exactly these frames."""
        return self.lookup(frame_keys(latents, sources, kinds, actions, poses), compute)

    def lookup(self, keys: Sequence[Hashable], compute: Callable[[torch.Tensor], FramesKV]) -> FramesKV:
        """:meth:`frames_kv` for frames already named by their ``keys``."""
        first: dict[Hashable, int] = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        missing = [key for key in first if key not in self._entries]
        entries = {key: self._entries[key] for key in first if key in self._entries}
        if missing:
            kv = compute(torch.tensor([first[key] for key in missing], dtype=torch.long))
            stacked = torch.stack([torch.stack([k, v], dim=1) for k, v in kv], dim=1)  # (F', L, 2, H, N, hd)
            # copies: a view would keep all of ``stacked`` alive as long as any one frame stays
            entries.update({key: stacked[j].clone() for j, key in enumerate(missing)})
        self.computed += len(missing)
        self.reused += len(keys) - len(missing)
        self._entries = entries  # frames this read did not return are evicted
        if not keys:
            return []
        # frames stacked inside the heads: per layer (H, F, N, hd), for one batch row already the
        # token order of the context (B, H, M * N, hd), so regrouping it copies nothing more
        out = torch.stack([entries[key] for key in keys], dim=3)  # (L, 2, H, F, N, hd)
        return [(out[i, 0].transpose(0, 1), out[i, 1].transpose(0, 1)) for i in range(out.shape[0])]


class MemoryPrefix:
    """The memory's keys/values for each chunk of a rollout (the engine's step 1): read the memory and
    encode its context once per chunk, reusing memory frames' keys/values when the layout allows.

    ``reuse`` (RolloutConfig.reuse_memory_kv) keeps them (``cache``; None with reuse off): per frame
    in a :class:`FrameKVCache` for the isolated layout, the unchanged prefix of the last read in a
    :class:`~infworld.memory.causal_reuse.CausalKVCache` for the causal one.

    ``every`` (RolloutConfig.memory_every): frames between memory reads. A chunk that starts fewer
    than ``every`` frames after the last read keeps that read's frames (their keys/values are then
    reused whole). Play generates one frame per step; reading every 4th frame there matches the
    benchmark's chunk of 4, where the memory is read once per chunk.
    """

    def __init__(self, memory: Memory, layout: MemoryLayout, reuse: bool = True,
                 device: torch.device | str = "cpu", every: int = 1):
        self.memory = memory
        self.layout = layout
        self.device = torch.device(device)
        self.every = int(every)
        self._read_at: int | None = None  # frame index of the last memory read
        self.cache: FrameKVCache | CausalKVCache | None = None
        if reuse:
            self.cache = FrameKVCache() if layout.encoding == "isolated" else CausalKVCache()
        self.last_context: MemoryContext | None = None  # what the memory returned for the last chunk
        self._memo: tuple[int, PastKV | None] | None = None  # (chunk start, its context)

    def reset(self) -> None:
        """A new rollout: forget the last context and every kept frame."""
        self._memo = None
        self._read_at = None
        self.last_context = None
        if self.cache is not None:
            self.cache.reset()

    def invalidate(self) -> None:
        """Frames were committed: the next chunk reads the memory again."""
        self._memo = None

    def nbytes(self) -> int:
        """Bytes of kept memory-frame keys/values (rollout state, bounded by the memory's budget)."""
        return self.cache.nbytes() if self.cache is not None else 0

    def past(self, dit: torch.nn.Module, index: int, shift: float, last_pose: torch.Tensor | None
             ) -> PastKV | None:
        """Pinned keys/values of the memory's context for the chunk starting at frame ``index``, at
        positions moved by ``shift`` (the engine's base frame, see world.py); read once per chunk,
        later calls for the same chunk return the same. ``last_pose`` (B, 5): the latest camera."""
        if self._memo is not None and self._memo[0] == index:
            return self._memo[1]
        if self._read_at is not None and 0 <= index - self._read_at < self.every:
            ctx = self.last_context  # the last read still stands (``every``)
        else:
            ctx = self.memory.read(index, last_pose)
            self._read_at = index
        self.last_context = ctx
        past = None
        if ctx is not None and ctx.num_frames:
            # the memory's poses and the reference must be in one frame: a dead-reckoning memory
            # supplies its own estimate of the current camera
            own = self.memory.reference_pose()
            ref = own if own is not None else last_pose
            past = memory_past(dit, ctx.to(self.device), ref, shift=shift, layout=self.layout,
                               reuse=self.cache)
        elif self.cache is not None:
            self.cache.clear()
        self._memo = (index, past)
        return past
