"""The streaming rollout engine: ``WorldModel.reset(frames)`` then ``step(actions) -> frames``, forever.

One engine serves evaluation, the CLI, the play page and the gymnasium adapter (and later
self-forcing training). It wraps a world network (tokenizer + DiT, see
infworld/models/worldnet.py), a :class:`~infworld.models.kvcache.KVCache`, a sampler and a
:class:`~infworld.memory.base.Memory` strategy. Every chunk of ``n`` frames (Self-Forcing, Huang et
al. 2025, Algorithm 1 in inference form):

1. ask the memory for extra clean context; if any, run it once through the DiT at t = 0 and keep its
   keys/values for this chunk ("pinned": every chunk frame sees it; infworld/memory/kv_reuse.py,
   which with the isolated layout keeps each memory frame's keys/values while the memory returns it);
2. draw noise (B, n, C, h, w) and integrate the rectified-flow ODE from t = 1 to 0 with the
   configured sampler; each velocity evaluation attends to [memory context, KV cache, itself];
3. decode the clean latents to frames;
4. run the clean chunk once more at t = 0 and append its keys/values to the cache, then evict down to
   the last ``window - 1`` frames; hand the chunk to the memory.

Attention is block-causal with a sliding window of ``window`` frames (each frame sees itself and the
``window - 1`` frames before it). With that rule the cached rollout equals a full recompute of the
whole history with the same window (``use_cache=False``, for tests), evictions included, and the
cache has a fixed size: memory and time per frame are flat over any number of frames.

Frames above are **latent** frames. When the tokenizer compresses time (``frames_per_latent`` r > 1,
the Wan VAE in video mode), ``step`` takes r n actions and returns r n video frames for n latent
frames, ``chunk`` and ``window`` count latent frames, and the grouping of frames, actions and poses
and the streaming VAE coding live in infworld/video_frames.py. With r = 1 nothing changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from infworld.config import build_dataclass
from infworld.diffusion.samplers import SamplerConfig, sample
from infworld.distill.self_forcing import check_student_steps
from infworld.errors import CheckpointError, ConfigError, DataError, MemoryConfigError
from infworld.memory.base import Memory, MemoryContext
from infworld.memory.context import MemoryLayout
from infworld.memory.kv_reuse import MemoryPrefix
from infworld.memory.registry import make_memory
from infworld.models.action import null_like
from infworld.models.kvcache import KVCache, KVCacheConfig, PastKV
from infworld.pending_commit import PendingCommit, flush_pending, folded_call
from infworld.rollout_config import RolloutConfig  # (re-exported)
from infworld.rollout_inputs import check_actions, check_poses, null_actions
from infworld.sliding import grouped_next, sliding_generate
from infworld.video_frames import VideoFrames, float_to_frames, frames_to_float  # (re-exported)


class WorldModel:
    """Batched, streaming, action-conditioned generation with a pluggable memory (module docstring)."""

    def __init__(self, net: torch.nn.Module, memory: Memory | None = None,
                 config: RolloutConfig | None = None, device: torch.device | str = "cpu"):
        self.net = net.to(device).eval()
        self.dit = net.dit
        self.device = torch.device(device)
        self.config = cfg = config or RolloutConfig()
        cfg.check()
        dcfg = self.dit.cfg
        self.memory = memory if memory is not None else make_memory("window", budget=dcfg.max_frames)
        self.window = self.memory.local_window
        if not 1 <= self.window <= dcfg.max_frames:
            raise MemoryConfigError(f"memory {self.memory.name!r}: local window {self.window} frames must be "
                                    f"in 1..{dcfg.max_frames} (the span the model was trained on, "
                                    "dit.max_frames)")
        kinds = self.memory.frame_kinds()
        if kinds and max(kinds) >= dcfg.num_frame_kinds:
            raise MemoryConfigError(f"memory {self.memory.name!r}: uses frame kind {max(kinds)}, but the "
                                    f"model knows {dcfg.num_frame_kinds} (dit.num_frame_kinds); it was not "
                                    "trained with this memory: use 'window' or a memory-trained model")
        slots = getattr(net, "model_config", {}).get("memory_slots")
        if slots is not None and self.memory.max_context() > int(slots):
            raise MemoryConfigError(f"memory {self.memory.name!r}: returns up to {self.memory.max_context()} "
                                    f"context frames, but the model was trained with {slots} memory slots "
                                    "(model_config.memory_slots); lower its budget")
        self.memory_layout = MemoryLayout.of(getattr(net, "model_config", None), self.memory.name)
        modules = getattr(net, "memory_modules", None)
        if modules is not None and self.memory.name in modules:
            self.memory.attach(modules[self.memory.name])
        if not 1 <= cfg.chunk <= dcfg.max_frames:
            raise ConfigError(f"rollout chunk: expected 1..{dcfg.max_frames} frames, got {cfg.chunk}")
        self.video = VideoFrames(net)  # video <-> latent frames (r = frames_per_latent)
        self.video.check_memory(self.memory)
        self.frames_per_latent = self.video.r
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.batch = 0
        self.index = 0  # latent frames committed so far (observed + generated)
        self.cache: KVCache | None = None
        self._history: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None  # use_cache=False only
        self.prefix = MemoryPrefix(self.memory, self.memory_layout, cfg.reuse_memory_kv, self.device,
                                   every=cfg.memory_every or cfg.chunk)
        self._last_pose: torch.Tensor | None = None
        self._prev: torch.Tensor | None = None  # (B, 1, C, h, w) the last context frame, as cached
        self._pending: PendingCommit | None = None  # fold_commit: frames whose cache pass is deferred
        self._ahead: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None  # seam "sliding"
        self.last_latents: torch.Tensor | None = None

    @property
    def interact_vocab(self) -> list[str] | None:
        """The interaction names the model was trained with (its dataset's), None if not recorded."""
        vocab = getattr(self.net, "model_config", {}).get("interact_vocab")
        return list(vocab) if vocab else None

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path: str, memory: str | Memory = "window",
                        memory_cfg: Mapping[str, Any] | None = None, map_location: str = "cpu",
                        **overrides: Any) -> WorldModel:
        """Load an exported world model (``infworld export``) by name or path.

        Defaults for the chunk, window and sampler come from the export; ``overrides`` set fields of
        :class:`RolloutConfig` (``chunk``, ``seed``...) or of its sampler (``steps``, ``name``...).
        """
        from infworld.models.loading import load_model

        net, meta = load_model(name_or_path, map_location=map_location)
        if not hasattr(net, "dit") or not hasattr(net, "model_config"):
            task = meta.get("task", "?") if isinstance(meta, Mapping) else "?"
            raise CheckpointError(f"{name_or_path}: is a {task!r} model, expected a 'world' model")
        mc = net.model_config
        sampler = build_dataclass(SamplerConfig, mc.get("sampler", {}), "model_config.sampler")
        rollout = RolloutConfig(chunk=int(mc.get("chunk", 4)), sampler=sampler,
                                context_noise=float(mc.get("context_noise", 0.0)))
        sampler_keys = {f.name for f in dataclasses.fields(SamplerConfig)}
        rollout_keys = {f.name for f in dataclasses.fields(RolloutConfig)} - {"sampler"}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in sampler_keys | rollout_keys:
                raise ConfigError(f"WorldModel.from_pretrained: unknown setting {key!r}; valid: "
                                  f"{sorted(sampler_keys | rollout_keys)}")
            setattr(sampler if key in sampler_keys else rollout, key, value)
        check_student_steps(mc, sampler.steps, str(name_or_path))
        if isinstance(memory, str):
            from infworld.memory.registry import pretrained_memory_config

            config = pretrained_memory_config(memory, mc.get("memory"),
                                              int(mc.get("window") or net.dit.cfg.max_frames),
                                              memory_cfg, source=str(name_or_path))
            memory = make_memory(memory, config)
        return cls(net, memory, rollout, device=map_location)

    # -- public API ------------------------------------------------------------------------

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.net.frame_size)

    @property
    def last_context(self) -> MemoryContext | None:
        """What the memory returned for the last chunk (None = nothing)."""
        return self.prefix.last_context

    def reset(self, context_frames: Any, actions: Mapping[str, Any] | None = None, poses: Any = None) -> None:
        """Start a rollout from K >= 1 observed frames (B, K, H, W, 3) uint8 (or (K, H, W, 3)); K = 1 + r k
        for r frames per latent frame (1 + k latent frames).

        ``actions``: the K - 1 transitions between them (B, K-1) per field (None = unknown, null);
        ``poses``: (B, K, 5) when the memory needs them.
        """
        x = frames_to_float(context_frames, self.frame_size)
        k = x.shape[1]
        self.video.latents_of(k, first=True)
        self.batch = x.shape[0]
        self.index = 0
        self._history = None
        self.prefix.reset()
        self._last_pose = None
        self._prev = None
        self._pending = None
        self._ahead = None
        self.memory.reset()
        self.video.reset()
        if self.config.use_cache:
            n_max = max(self.config.chunk, 1)
            if self.cache is None or self.cache.batch_size != self.batch:
                d = self.dit.cfg
                self.cache = KVCache(KVCacheConfig(d.depth, d.num_heads, d.head_dim, d.tokens_per_frame,
                                                   capacity=self.window - 1 + n_max,
                                                   dtype=self.config.cache_dtype), self.batch, self.device)
            self.cache.reset()
        acts = self._actions(actions, k - 1) if actions is not None else None
        per_frame = self._null_actions(k)
        if acts is not None:
            for name, a in acts.items():
                per_frame[name][:, 1:] = a
        acts, p = self.video.group(per_frame, first=True), self.video.poses(self._poses(poses, k), first=True)
        self._observe_latents(self.video.encode(x.to(self.device)), acts, p)

    def observe(self, frames: Any, actions: Mapping[str, Any], poses: Any = None) -> None:
        """Append n real frames (B, n, H, W, 3) reached by ``actions`` (B, n) (teacher forcing); n is a
        multiple of r (frames per latent frame)."""
        self._require_reset()
        x = frames_to_float(frames, self.frame_size)
        self._check_batch(x.shape[0])
        n = x.shape[1]
        self.video.latents_of(n)
        acts, p = self.video.group(self._actions(actions, n)), self.video.poses(self._poses(poses, n))
        flush_pending(self)
        self._ahead = None  # a chunk started before real frames came is dropped
        self._observe_latents(self.video.encode(x.to(self.device)), acts, p)

    @torch.no_grad()
    def step(self, actions: Mapping[str, Any], poses: Any = None, commit: bool = True,
             next_actions: Mapping[str, Any] | None = None) -> np.ndarray:
        """Generate the frames that ``actions`` (B, n) lead to; returns uint8 (B, n, H, W, 3).

        ``n`` may be anything from 1 to ``chunk`` (latent frames) times r (frames per latent frame; a
        multiple of r). With ``commit=False`` the frames are returned but not added to the context
        (e.g. to compare against a real frame, then :meth:`observe` it). ``next_actions`` (B, n2):
        the next chunk's actions, for ``seam="sliding"`` only (None = this is the last chunk).
        """
        self._require_reset()
        first = next((np.asarray(a) for k, a in actions.items() if k in self.dit.cfg.actions.sizes()), None)
        n = int(first.shape[-1]) if first is not None and first.ndim else 0
        self.video.step_latents(n, self.config.chunk)
        acts = self.video.group(self._actions(actions, n))  # (B, n / r[, r]) per field
        p = self.video.poses(self._poses(poses, n)) if commit else None
        if self.config.seam == "sliding":
            latents = sliding_generate(self, acts, grouped_next(self, next_actions))
        elif next_actions is not None:
            raise ConfigError("step: next_actions is used by seam='sliding' only (this engine's seam is "
                              f"{self.config.seam!r})")
        else:
            latents = self._generate(acts)
        self.last_latents = latents  # (B, n / r, C, h, w), for inspection and latent-space metrics
        frames = float_to_frames(self.video.decode(latents, commit))
        if commit:
            self._commit(latents, acts, p, defer=self.config.fold_commit)
        return frames

    def state_nbytes(self) -> int:
        """Bytes of rollout state: KV cache + memory (+ its kept keys/values) + VAE stream caches (+ the
        history when the cache is off)."""
        total = self.memory.nbytes() + self.prefix.nbytes() + self.video.nbytes()
        if self._pending is not None:
            total += self._pending.latents.numel() * self._pending.latents.element_size()
        if self.cache is not None and self.config.use_cache:
            total += self.cache.nbytes()
        if self._history is not None:
            total += self._history[0].numel() * self._history[0].element_size()
        return total

    # -- internals -------------------------------------------------------------------------

    def _require_reset(self) -> None:
        if self.batch == 0:
            raise ConfigError("WorldModel: call reset(context_frames) before step/observe")

    def _check_batch(self, b: int) -> None:
        if b != self.batch:
            raise DataError(f"batch size {b} differs from the rollout's {self.batch} (set by reset)")

    def _null_actions(self, n: int) -> dict[str, torch.Tensor]:
        return null_actions(self.dit.cfg.actions, self.batch, n, self.device)

    def _actions(self, actions: Mapping[str, Any], n: int) -> dict[str, torch.Tensor]:
        """Check and convert user actions to tensors (B, n[, d]) (rollout_inputs.check_actions)."""
        return check_actions(self.dit.cfg.actions, actions, self.batch, n, self.device)

    def _poses(self, poses: Any, n: int) -> torch.Tensor | None:
        return check_poses(poses, self.batch, n, self.device, self.memory.name, self.memory.needs_poses)

    def _base(self) -> int:
        """Frame index that gets position 0: the oldest cached frame (cached, then pending, then the
        chunk)."""
        pending = self._pending.frames if self._pending is not None else 0
        return self.index - pending - len(self.cache) if self.config.use_cache else 0

    def _context(self) -> tuple[int, PastKV | None]:
        base = self._base()
        prefix = self.prefix.past(self.dit, self.index, float(self.index - base), self._last_pose)
        if not self.config.use_cache:
            return base, prefix
        cached = self.cache.past(base)
        return base, (prefix.cat(cached) if prefix is not None else cached)

    def _velocity(self, acts: dict[str, torch.Tensor], n: int):
        """velocity_fn(x, t) for the next chunk, attending to the context (cached or recomputed); the
        first call also caches a pending commit's frames (fold_commit), later calls see them cached."""
        base, past = self._context()
        pos = torch.arange(self.index, self.index + n, device=self.device).float() - base  # (n,)
        hist = self._history

        prev, prev_t = self._prev, self._prev_level()
        # once a call (of this fn, or of the other one under CFG) folds the pending frames into the
        # cache, the context is read again; the base stays: the window mask hides the oldest frame
        state = {"past": past, "stale": self._pending is not None}

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            tt = t.reshape(1, -1).expand(self.batch, n).to(x.dtype)  # (B, n): one level, or one per frame
            if self._pending is not None:
                return folded_call(self, x, tt, acts, pos, state["past"])
            if state["stale"]:
                state.update(past=self._context()[1], stale=False)
            if hist is None:
                return self.dit(x, tt, acts, positions=pos, past=state["past"], window=self.window, prev=prev,
                                prev_t=prev_t)
            # Reference path: recompute the whole history (context level, as cached) and the chunk.
            h_lat, h_act = hist
            full = torch.cat([h_lat, x], dim=1)
            t_full = torch.cat([torch.full(h_lat.shape[:2], self.config.context_noise, device=x.device), tt],
                               dim=1)
            a_full = {k: torch.cat([h_act[k], acts[k]], dim=1) for k in acts}
            p_full = torch.arange(full.shape[1], device=x.device).float()
            return self.dit(full, t_full, a_full, positions=p_full, past=past, window=self.window)[:, -n:]

        return fn

    def _generate(self, acts: dict[str, torch.Tensor]) -> torch.Tensor:
        n = next(iter(acts.values())).shape[1]
        d = self.dit.cfg
        noise = torch.randn((self.batch, n, d.in_channels, *d.latent_size), generator=self.generator)
        cond = self._velocity(acts, n)
        uncond = self._velocity(null_like(acts), n) if self.config.sampler.cfg_scale != 1.0 else None
        return sample(self.config.sampler, cond, noise.to(self.device), uncond, self.generator)

    def _prev_level(self) -> torch.Tensor | None:
        """(B, 1) noise level of ``self._prev`` (None before the first frame)."""
        if self._prev is None:
            return None
        return torch.full((self.batch, 1), self.config.context_noise, device=self.device)

    def _context_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Finished frames as they enter the context: noised to ``context_noise`` when it is set."""
        s = self.config.context_noise
        if s <= 0:
            return latents
        eps = torch.randn(latents.shape, generator=self.generator).to(latents.device, latents.dtype)
        return (1.0 - s) * latents + s * eps  # rectified-flow interpolation at level s

    @torch.no_grad()
    def _observe_latents(self, latents: torch.Tensor, acts: dict[str, torch.Tensor],
                         p: torch.Tensor | None) -> None:
        n_max = self.config.chunk
        for lo in range(0, latents.shape[1], n_max):
            hi = min(lo + n_max, latents.shape[1])
            self._commit(latents[:, lo:hi], {k: a[:, lo:hi] for k, a in acts.items()},
                         p[:, lo:hi] if p is not None else None)

    @torch.no_grad()
    def _commit(self, latents: torch.Tensor, acts: dict[str, torch.Tensor], p: torch.Tensor | None,
                defer: bool = False) -> None:
        """Add clean frames to the context: cache their t = 0 keys/values (or the history), then memory;
        ``p``: checked poses (B, n, 5) or None; ``defer``: leave the cache pass to the next chunk's first
        DiT call (fold_commit; needs the cache and room for the frames in the window)."""
        n = latents.shape[1]
        ctx_lat = self._context_latents(latents)
        if self.config.use_cache:
            flush_pending(self)
            self._pending = PendingCommit(ctx_lat, dict(acts), self.config.context_noise, self._prev,
                                          self._prev_level(), self.index)
            if not (defer and n < self.window):
                flush_pending(self)
        elif self._history is None:
            self._history = (ctx_lat, dict(acts))
        else:
            h_lat, h_act = self._history
            acts_all = {k: torch.cat([h_act[k], acts[k]], 1) for k in acts}
            self._history = (torch.cat([h_lat, ctx_lat], 1), acts_all)
        self._prev = ctx_lat[:, -1:]
        self.memory.write(latents, acts, p, self.index)
        if p is not None:
            self._last_pose = p[:, -1]
        self.index += n
        self.prefix.invalidate()
