"""Infinite-World's Hierarchical Pose-free Memory Compressor (HPMC) as a memory strategy, "hpmc".

Infinite-World (arXiv 2602.02393, Sec. 3.2) keeps the *whole* history in a fixed number of memory
latents: a learned temporal encoder compresses windows of latents 4x, and compresses the compressed
latents again, so older history is more compressed and nothing is dropped (its public code keeps 20
compressed latents plus the latest frame). No camera poses are used; the compressor learns jointly
with the DiT from the diffusion loss alone.

Online form used here (flat memory and time per frame over any rollout length):

1. the newest ``local_window - 1`` frames wait in a small buffer (the engine's KV cache holds them);
2. a frame leaving it becomes a raw level-0 slot, appended after the older slots;
3. when there are more than ``budget`` slots, ``factor`` consecutive slots are compressed into one
   slot at ``max(their levels) + 1`` spanning the frames they covered. Which ones: the oldest run of
   ``factor`` slots of one level (a clean 4x step) if there is one, else the ``factor`` slots
   starting at the oldest slot of the lowest level reaching into the newest ``factor`` slots (a
   mixed merge). Slot levels therefore never increase from old to new, levels grow roughly
   logarithmically with the history (9 after 10,000 frames with budget 8), and the oldest slot
   never turns into a running sum that absorbs every frame (which merging simply the oldest
   ``factor`` slots does: its level grows by one every ``factor - 1`` frames).

The schedule depends only on the number of frames, so one write of H frames (training) and
chunk-by-chunk writes (inference) give the same slots from the same frames. ``read`` returns
exactly ``budget`` entries (padding marked invalid until the slots fill up), oldest first.

Without :meth:`HPMCMemory.attach`, the strategy builds its own *untrained* compressor (fixed seed),
which is temporal average pooling; a trained world model attaches its trained one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from infworld.errors import MemoryConfigError
from infworld.memory.base import (
    COMPRESSED_KIND,
    MEMORY_KIND,
    Memory,
    MemoryConfig,
    MemoryContext,
    check_bool,
    check_int,
    slot_positions,
)
from infworld.memory.compressor import CompressorConfig, TemporalCompressor
from infworld.models.action import NULL_ACTION

_COMPRESSOR_KEYS = ("hidden", "depth", "max_levels", "level_dim", "encoder")  # settable compressor fields


@dataclass
class _Slot:
    """One memory entry: latent (B, C, h, w) (None in schedule-only planning), its level, the frames
    it covers and, for a raw frame, its actions {name: (B,) or (B, d)}."""

    latent: torch.Tensor | None
    level: int
    first: int
    last: int
    actions: dict[str, torch.Tensor] | None = field(default=None)


def merge_start(levels: list[int], factor: int) -> int:
    """Index of the first of the ``factor`` slots to merge (``levels`` oldest first, non-increasing).

    The oldest run of ``factor`` equal levels if any; else the oldest slot whose level is the lowest
    level present among the newest ``factor`` slots (module docstring, step 3).
    """
    n = len(levels)
    for i in range(n - factor + 1):
        if levels[i] == levels[i + factor - 1]:  # non-increasing, so the whole run is one level
            return i
    return levels.index(levels[n - factor])


@dataclass
class HPMCConfig(MemoryConfig):
    """``budget`` slots (every read returns exactly that many, padding marked invalid), ``factor``
    latents per compression, and the compressor's size (``hidden``, ``depth``, ``max_levels``,
    ``level_dim``, ``encoder``; :class:`~infworld.memory.compressor.CompressorConfig`). The compressor
    size may also be given as a ``compressor`` dict of those keys (flat settings win). ``plain``: raw
    (level-0) slots enter as ordinary frames (kind 0), only compressed latents stay marked."""

    strategy = "hpmc"

    budget: int = 8
    local_window: int | None = 16
    factor: int = 4
    hidden: int = CompressorConfig.hidden
    depth: int = CompressorConfig.depth
    max_levels: int = CompressorConfig.max_levels
    level_dim: int = CompressorConfig.level_dim
    encoder: str = CompressorConfig.encoder
    plain: bool = False

    @classmethod
    def _fold(cls, settings: dict[str, Any], strategy: str) -> dict[str, Any]:
        nested = settings.pop("compressor", None)
        if nested is None:
            return settings
        if not isinstance(nested, Mapping):
            raise MemoryConfigError(f"memory {strategy!r}: compressor must be a mapping of "
                                    f"{list(_COMPRESSOR_KEYS)}, got {nested!r}")
        unknown = sorted(set(nested) - set(_COMPRESSOR_KEYS))
        if unknown:
            raise MemoryConfigError(f"memory {strategy!r}: unknown compressor setting(s) {unknown}; "
                                    f"valid: {list(_COMPRESSOR_KEYS)}")
        return {**nested, **settings}

    def compressor(self, channels: int) -> CompressorConfig:
        """The compressor these settings describe, for ``channels`` latent channels."""
        return CompressorConfig(channels=channels, factor=self.factor,
                                **{k: getattr(self, k) for k in _COMPRESSOR_KEYS})

    def check(self, strategy: str = "") -> None:
        n = strategy or self.strategy
        check_int(n, "budget", self.budget, 1)
        check_int(n, "factor", self.factor, 2)  # latents per compression
        if self.budget < self.factor:
            raise MemoryConfigError(f"memory {n!r}: budget {self.budget} must be >= factor {self.factor} "
                                    "(a compression needs that many slots)")
        super().check(strategy)
        check_bool(n, "plain", self.plain)
        self.compressor(1).check(n)  # bad compressor sizes now, not at the first write


class HPMCMemory(Memory):
    """Fixed ``budget`` of raw and compressed latents covering the whole history (module docstring);
    settings in :class:`HPMCConfig`."""

    name = "hpmc"
    config_class = HPMCConfig

    def __init__(self, config: HPMCConfig | None = None, **settings: Any):
        super().__init__(config, **settings)
        self.factor = self.config.factor
        self._local = self.config.local_window
        self._module: nn.Module | None = None
        self._own = True  # the compressor was built here (untrained), not attached
        self.plain = self.config.plain
        self.reset()

    # -- configuration ---------------------------------------------------------------------

    @property
    def local_window(self) -> int:
        return self._local

    def max_context(self) -> int:
        return self.budget

    def compressor_config(self, channels: int) -> CompressorConfig:
        """The compressor this strategy's settings describe, for ``channels`` latent channels."""
        return self.config.compressor(channels)

    @classmethod
    def build_module(cls, settings: Mapping[str, Any] | HPMCConfig, latent_shape: tuple[int, int, int]
                     ) -> nn.Module:
        """A fresh :class:`TemporalCompressor` for latents of shape (C, h, w), to train with the DiT."""
        cfg = settings if isinstance(settings, HPMCConfig) else HPMCConfig.from_dict(settings, cls.name)
        return TemporalCompressor(cfg.compressor(int(latent_shape[0])))

    def attach(self, module: nn.Module | None) -> None:
        """Use ``module`` (a trained :class:`TemporalCompressor`); None = back to an own untrained one."""
        if module is not None and not isinstance(module, TemporalCompressor):
            raise MemoryConfigError(f"memory 'hpmc': attach expects a TemporalCompressor, got "
                                    f"{type(module).__name__}")
        if module is not None and module.cfg.factor != self.factor:
            raise MemoryConfigError(f"memory 'hpmc': the attached compressor merges {module.cfg.factor} "
                                    f"latents, but factor is {self.factor}")
        self._module = module
        self._own = module is None

    def module(self) -> nn.Module | None:
        return self._module

    # -- state -----------------------------------------------------------------------------

    def frame_kinds(self) -> set[int]:
        return {COMPRESSED_KIND} if self.plain else {MEMORY_KIND, COMPRESSED_KIND}

    def reset(self) -> None:
        self._slots: list[_Slot] = []  # oldest first, at most budget
        self._buffer: deque[_Slot] = deque()  # the newest local_window - 1 raw frames
        self._written = 0  # frames written since reset
        self._frame_bytes = 0  # bytes of one stored frame (latent + actions), set at the first write
        self._batch = 0
        self._shape: tuple[int, int, int] = (0, 0, 0)  # (C, h, w)
        self._act_spec: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}  # name -> (dtype, trailing shape)

    def _prepare(self, latents: torch.Tensor, actions: dict[str, torch.Tensor]) -> None:
        """Check the batch against earlier writes; at the first write build the own compressor."""
        b, _, c, h, w = latents.shape
        if self._frame_bytes:
            if self._batch != b or self._shape != (c, h, w):
                raise MemoryConfigError(f"memory 'hpmc': got latents {tuple(latents.shape)} after writes of "
                                        f"batch {self._batch} and shape {self._shape}; reset() first")
            return
        if self._module is None or self._own:
            if self._module is None or self._module.cfg.channels != c:
                with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
                    torch.manual_seed(0)
                    self._module = TemporalCompressor(self.compressor_config(c)).to(latents.device)
                self._own = True
        elif self._module.cfg.channels != c:
            raise MemoryConfigError(f"memory 'hpmc': the attached compressor takes "
                                    f"{self._module.cfg.channels} latent channels, the latents have {c}")
        self._batch, self._shape = b, (c, h, w)
        self._act_spec = {k: (a.dtype, tuple(a.shape[2:])) for k, a in actions.items()}
        per = latents[:, 0].numel() * latents.element_size()
        per += sum(a[:, 0].numel() * a.element_size() for a in actions.values())
        self._frame_bytes = per

    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        if start_index != self._written:
            raise MemoryConfigError(f"memory 'hpmc': write starts at frame {start_index}, but "
                                    f"{self._written} frames were written since reset(); writes must be "
                                    "contiguous")
        n = int(latents.shape[1])
        if n == 0:
            return
        self._prepare(latents, actions)
        # With grad enabled (training) slots are views of the input, keeping the autograd graph; at
        # inference each frame is copied, so a slot never keeps a whole chunk's storage alive.
        copy = not torch.is_grad_enabled()
        for i in range(n):
            lat = latents[:, i]  # (B, C, h, w)
            acts = {k: a[:, i] for k, a in actions.items()}  # (B,) or (B, d)
            if copy:
                lat, acts = lat.clone(), {k: a.clone() for k, a in acts.items()}
            self._buffer.append(_Slot(lat, 0, start_index + i, start_index + i, acts))
            while len(self._buffer) > self._local - 1:  # left the engine's cache: now memory
                self._push(self._slots, self._buffer.popleft(), compute=True)
        self._written += n

    def _push(self, slots: list[_Slot], frame: _Slot, compute: bool) -> None:
        """Append a raw frame to ``slots`` and compress once if over budget (at most one is needed)."""
        slots.append(frame)
        if len(slots) <= self.budget:
            return
        i = merge_start([s.level for s in slots], self.factor)
        group = slots[i:i + self.factor]
        latent = None
        if compute:
            x = torch.stack([s.latent for s in group], dim=1)  # (B, factor, C, h, w)
            levels = torch.tensor([s.level for s in group], device=x.device).expand(x.shape[0], -1)
            latent = self._module(x, levels)  # (B, C, h, w)
        level = max(s.level for s in group) + 1
        slots[i:i + self.factor] = [_Slot(latent, level, group[0].first, group[-1].last)]

    def _view(self, next_index: int, compute: bool) -> list[_Slot]:
        """The slots covering exactly the frames before ``next_index - (local_window - 1)``.

        The engine reads right after writing, so that is the stored slots. Training writes H frames
        then reads at H + local_window - 1: the buffered frames are pushed into a copy (the same
        schedule a longer write would run), leaving the state unchanged.
        """
        limit = next_index - (self._local - 1)
        slots = [s for s in self._slots if s.last < limit]
        if len(slots) < len(self._slots):  # reading behind the writes: the slots that fit
            return slots
        pending = [f for f in self._buffer if f.last < limit]
        if pending:
            slots = list(slots)
            for frame in pending:
                self._push(slots, frame, compute)
        return slots

    def spans(self, next_index: int | None = None) -> list[tuple[int, int]]:
        """(first, last) frame index per slot, oldest first: the stored slots, or those
        ``read(next_index)`` returns (schedule only, nothing is compressed)."""
        slots = self._slots if next_index is None else self._view(next_index, compute=False)
        return [(s.first, s.last) for s in slots]

    def levels(self, next_index: int | None = None) -> list[int]:
        """Compression level per slot (0 = a raw frame), as :meth:`spans`."""
        slots = self._slots if next_index is None else self._view(next_index, compute=False)
        return [s.level for s in slots]

    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        slots = self._view(next_index, compute=True)
        if not slots:
            return None
        b = self._batch
        dev = slots[0].latent.device
        pad = self.budget - len(slots)  # padding first, so the real slots sit next to the window
        blank = torch.zeros_like(slots[0].latent)
        latents = torch.stack([blank] * pad + [s.latent for s in slots], dim=1)  # (B, budget, C, h, w)
        actions = {}
        for name, (dtype, trail) in self._act_spec.items():
            null = torch.full((b, *trail), NULL_ACTION if not dtype.is_floating_point else float("nan"),
                              dtype=dtype, device=dev)
            per = [null] * pad + [s.actions[name] if s.actions is not None else null for s in slots]
            actions[name] = torch.stack(per, dim=1)  # (B, budget[, d])
        kinds = [MEMORY_KIND] * pad + [COMPRESSED_KIND if s.level else MEMORY_KIND for s in slots]
        kinds = torch.tensor(kinds, device=dev)
        sources = torch.tensor([-1] * pad + [s.first if s.level == 0 else -1 for s in slots], device=dev)
        valid = None
        if pad:
            valid = torch.arange(self.budget, device=dev)[None].expand(b, -1) >= pad  # (B, budget)
        return self.present(MemoryContext(latents=latents, actions=actions,
                                          positions=slot_positions(self.budget, self._local),
                                          kinds=kinds[None].expand(b, -1).clone(), poses=None, valid=valid,
                                          sources=sources[None].expand(b, -1).clone()))

    def nbytes(self) -> int:
        """Capacity after the first write: ``budget`` slots + ``local_window - 1`` buffered frames
        (the compressor's weights are model weights, not rollout state)."""
        return (self.budget + self._local - 1) * self._frame_bytes

    def held_nbytes(self) -> int:
        """Bytes of the tensor storages actually referenced now (each storage once), to check that
        :meth:`nbytes` is an honest bound."""
        seen: dict[int, int] = {}
        for s in [*self._slots, *self._buffer]:
            for t in [s.latent, *(s.actions or {}).values()]:
                if t is not None:
                    st = t.untyped_storage()
                    seen[st.data_ptr()] = st.nbytes()
        return sum(seen.values())
