"""The memory plug-in interface of the rollout engine.

A world model that streams forever has to decide what of the past it still conditions on. Every
strategy (sliding window, full-context oracle, Infinite-World's HPMC compressed latents, WorldScape's
three-level KV memory, VRAG retrieval) sits behind this one interface, with a fixed budget, so the
DiT and the engine never change when a strategy is added:

* the engine keeps the last ``local_window`` clean frames in its KV cache (the local window every
  strategy shares; block-causal sliding-window attention, see infworld/models/kvcache.py);
* after every chunk the engine calls :meth:`Memory.write` with what was generated or observed
  (latents, per-frame actions, poses when known);
* before every chunk it calls :meth:`Memory.read`, which may return extra **clean context**
  (:class:`MemoryContext`): latent frames that the engine runs once through the DiT at t = 0 (as
  Infinite-World does with its memory latents: concatenated in time before the noisy latents,
  marked by a frame kind, modulated as clean, computed once per chunk and reused across the
  denoising steps). Those frames are "pinned": every frame of the chunk may attend to them.

Every strategy has a typed config dataclass (:class:`MemoryConfig` and its subclasses, next to the
strategy's class) that holds all of its settings; recipes, CLI flags and exports only override its
fields, and the resolved config is what exports and benchmark results record. Strategies register
themselves by name (registry.py).
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from infworld.errors import MemoryConfigError

MEMORY_KIND = 1  # frame-kind id of retrieved memory frames in the DiT (0 = ordinary frame)
COMPRESSED_KIND = 2  # frame-kind id of compressed memory latents (HPMC)


def check_int(strategy: str, name: str, value: object, low: int) -> int:
    """``value`` if it is an int >= ``low`` (not a bool), else :class:`MemoryConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MemoryConfigError(f"memory {strategy!r}: {name} must be an int >= {low}, got {value!r}")
    return value


def check_float(strategy: str, name: str, value: object, low: float, high: float = math.inf,
                low_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in range, else :class:`MemoryConfigError`."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        span = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high != math.inf else "")
        raise MemoryConfigError(f"memory {strategy!r}: {name} must be a finite number {span}, got {value!r}")
    return float(value)


def check_bool(strategy: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise MemoryConfigError(f"memory {strategy!r}: {name} must be true or false, got {value!r}")
    return value


C = TypeVar("C", bound="MemoryConfig")


@dataclass
class MemoryConfig:
    """Settings every memory strategy shares; each strategy subclasses it with its own fields.

    budget:       the size of the strategy's memory in frames: the most past frames its memory gives
                  one chunk to attend to, beyond the local window every strategy shares. For the
                  strategies that read context (full, hpmc, kv, vrag) that is the most frames one
                  :meth:`Memory.read` returns (:meth:`Memory.max_context`, the memory slots the model
                  must be trained with), never what is merely stored (kv's ``pool``, vrag's
                  ``capacity``). ``window`` reads nothing: its memory *is* the local window, so its
                  budget and local window are one setting.
    local_window: frames the engine keeps in its KV cache; each frame attends to at most this many
                  recent frames (itself included). None = the budget (a strategy whose memory is the
                  window); resolved at construction.

    Build one from a dict with :meth:`from_dict` (unknown keys are refused by name), override with
    :meth:`updated`, record with :meth:`to_dict`; :meth:`check` validates every field.
    """

    strategy: ClassVar[str] = ""  # the strategy's registered name, for messages

    budget: int = 16
    local_window: int | None = None

    def __post_init__(self) -> None:
        if self.local_window is None:
            self.local_window = self.budget
        for f in dataclasses.fields(self):  # a YAML/JSON integer for a float field reads as that float
            value = getattr(self, f.name)
            if f.type == "float" and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))

    @classmethod
    def keys(cls) -> list[str]:
        """The setting names this config accepts, in field order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def _fold(cls, settings: dict[str, Any], strategy: str) -> dict[str, Any]:
        """Turn accepted alternative spellings of settings into fields (none here)."""
        return settings

    @classmethod
    def from_dict(cls: type[C], settings: Mapping[str, Any] | None, strategy: str = "") -> C:
        """The checked config from ``settings`` (missing keys take the defaults).

        Raises :class:`MemoryConfigError` naming the strategy, the unknown keys and the valid ones,
        or the first bad value."""
        strategy = strategy or cls.strategy
        if settings is not None and not isinstance(settings, Mapping):
            raise MemoryConfigError(f"memory {strategy!r}: settings must be a mapping of name: value, got "
                                    f"{settings!r}")
        data = cls._fold(dict(settings or {}), strategy)
        unknown = sorted(k for k in data if k not in cls.keys())
        if unknown:
            raise MemoryConfigError(f"memory {strategy!r}: unknown setting(s) {unknown}; valid: {cls.keys()}")
        cfg = cls(**data)
        cfg.check(strategy)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Every setting (JSON values): what exports and benchmark results record."""
        return {k: getattr(self, k) for k in self.keys()}

    def updated(self: C, settings: Mapping[str, Any] | None, strategy: str = "") -> C:
        """A new checked config: these settings over this one's."""
        new = type(self)._fold(dict(settings or {}), strategy or self.strategy)
        return type(self).from_dict({**self.to_dict(), **new}, strategy)

    def check(self, strategy: str = "") -> None:
        """Raise :class:`MemoryConfigError` naming the strategy and the first bad setting."""
        n = strategy or self.strategy
        check_int(n, "budget", self.budget, 1)
        check_int(n, "local_window", self.local_window, 1)


def slot_positions(num: int, local_window: int) -> torch.Tensor:
    """Time positions (num,) for ``num`` memory frames, relative to the next chunk's first frame.

    Memory frames sit in consecutive slots just before the local window, oldest first:
    ``-(local_window - 1) - num .. -(local_window - 1) - 1``. Their true age (which may be thousands
    of frames) is deliberately not encoded, so positions stay in the range the DiT was trained on
    whatever the rollout length. Training uses the same layout (memory right before the clip).
    """
    return torch.arange(num, dtype=torch.float32) - float(num + max(local_window - 1, 0))


def plain_context(ctx: MemoryContext) -> MemoryContext:
    """``ctx`` with its raw memory frames shown as ordinary frames (kind 0, no poses), in place;
    compressed latents (HPMC) keep their kind. The ``plain`` setting at inference and the plain
    share of memory training (memory_train.py) both use it."""
    if ctx.kinds is not None:
        ctx.kinds = torch.where(ctx.kinds == MEMORY_KIND, torch.zeros_like(ctx.kinds), ctx.kinds)
    ctx.poses = None
    return ctx


@dataclass
class MemoryContext:
    """Extra clean context for the next chunk.

    latents:   (B, M, C, h, w) clean latent frames (t = 0).
    actions:   per-frame action fields (B, M) (action.NULL_ACTION where there is none).
    positions: (M,) time positions relative to the first frame of the next chunk (-1 = the frame
               just before it); need not be integers (a compressed latent can sit between frames).
    kinds:     (B, M) frame kinds, default all MEMORY_KIND.
    poses:     (B, M, 5) camera poses (x, y, z, yaw, pitch) the frames were seen from, NaN where
               unknown or withheld (a pose-free strategy passes None). The DiT sees them relative to
               the current camera (context.pose_features), as VRAG conditions on the global state.
    valid:     (B, M) bool; False marks padding (batch rows that hold fewer frames), never attended.
    sources:   (B, M) int64 rollout frame index each entry came from (-1 = a compressed summary),
               for display and tests ("which past frames is it reading").
    """

    latents: torch.Tensor
    actions: dict[str, torch.Tensor]
    positions: torch.Tensor
    kinds: torch.Tensor | None = None
    poses: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    sources: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.latents.shape[1])

    def to(self, device: torch.device | str) -> MemoryContext:
        """A copy on ``device`` (tensors moved, nothing else changed)."""
        def mv(x):
            return x.to(device) if torch.is_tensor(x) else x

        return MemoryContext(mv(self.latents), {k: mv(a) for k, a in self.actions.items()},
                             mv(self.positions), mv(self.kinds), mv(self.poses), mv(self.valid),
                             mv(self.sources))


class Memory(ABC):
    """A bounded memory strategy, built from its config (``config_class``): ``Memory(config)`` or
    ``Memory(**settings)``. ``budget`` is its size in frames (:class:`MemoryConfig`)."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MemoryConfig]] = MemoryConfig

    def __init__(self, config: MemoryConfig | None = None, **settings: Any):
        if config is None:
            config = self.config_class.from_dict(settings, self.name)
        elif settings:
            raise MemoryConfigError(f"memory {self.name!r}: give a config or settings, not both")
        elif type(config) is not self.config_class:
            raise MemoryConfigError(f"memory {self.name!r}: expected a {self.config_class.__name__}, got "
                                    f"{config!r}")
        else:
            config.check(self.name)
        self.config = config
        self.budget = config.budget

    @property
    def local_window(self) -> int:
        """Frames the engine keeps in its KV cache; each frame attends to at most this many frames
        of the recent past (itself included)."""
        return self.config.local_window

    @property
    def needs_poses(self) -> bool:
        """True when :meth:`write` / :meth:`read` need camera poses (the engine then insists on them)."""
        return False

    def module(self) -> nn.Module | None:
        """Learned parts (e.g. HPMC's compressor) to train jointly with the DiT, or None."""
        return None

    @classmethod
    def build_module(cls, settings: Mapping[str, Any] | MemoryConfig, latent_shape: tuple[int, int, int]
                     ) -> nn.Module | None:
        """A fresh learned part for training (None for strategies without one). ``settings`` are the
        strategy's config or its settings as a dict (from a recipe or an export); ``latent_shape`` is
        (C, h, w)."""
        return None

    def attach(self, module: nn.Module | None) -> None:
        """Use the trained learned part ``module`` (from an exported world model, or the one being
        trained). Strategies without learned parts ignore it."""
        return None

    plain: bool = False  # strategies with a ``plain`` setting: stored frames shown as ordinary frames

    def frame_kinds(self) -> set[int]:
        """Frame-kind ids :meth:`read` uses (the DiT must have embeddings for them)."""
        return set() if self.plain else {MEMORY_KIND}  # (HPMC overrides: its compressed kind)

    def present(self, ctx: MemoryContext | None) -> MemoryContext | None:
        """Apply the ``plain`` setting: stored raw frames enter the DiT as ordinary earlier frames
        (frame kind 0, no pose features), as a model never trained with memory sees its context
        (VRAG concatenates retrieved frames this way). Otherwise unchanged."""
        return plain_context(ctx) if ctx is not None and self.plain else ctx

    def reference_pose(self) -> torch.Tensor | None:
        """(B, 5) the memory's own estimate of the current camera (e.g. dead-reckoned from actions),
        used for pose conditioning when the engine has no poses; None = no estimate."""
        tracker = getattr(self, "tracker", None)
        if tracker is not None and getattr(tracker, "mode", "") == "dead_reckon":
            return tracker.current
        return None

    def max_context(self) -> int:
        """Most frames :meth:`read` can ever return (the DiT must be trained for this many)."""
        return 0

    @abstractmethod
    def reset(self) -> None:
        """Forget everything (a new rollout starts)."""

    @abstractmethod
    def write(self, latents: torch.Tensor, actions: dict[str, torch.Tensor], poses: torch.Tensor | None,
              start_index: int) -> None:
        """Record frames ``start_index ..`` of the rollout: latents (B, n, C, h, w), actions (B, n),
        poses (B, n, 5) or None."""

    @abstractmethod
    def read(self, next_index: int, pose: torch.Tensor | None = None) -> MemoryContext | None:
        """Extra clean context for the chunk starting at frame ``next_index`` (None = nothing beyond
        the local window). ``pose`` (B, 5) is the latest known pose, for pose-based retrieval.

        The engine's KV cache holds frames ``next_index - (local_window - 1) ..`` so a strategy
        returns context built from the frames before that (the cache and the memory together cover
        the history). Positions come from :func:`slot_positions`. Training calls this with
        ``next_index = H + local_window - 1`` after writing H history frames, so the history is
        exactly what lies outside the training clip."""

    @abstractmethod
    def nbytes(self) -> int:
        """Bytes of state the memory holds (not counting the engine's KV cache)."""
