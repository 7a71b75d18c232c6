"""The ``world`` task: train the action-conditioned DiT on frozen tokenizer latents.

Recipe ``model:`` fields are :class:`WorldConfig`. The module the trainer sees is
:class:`~infworld.models.worldnet.WorldNet`: the frozen tokenizer (carried inside, so an export is
self-contained) plus the DiT (the only part that learns). Loss: diffusion forcing with rectified
flow (infworld/diffusion/forcing.py) on latents of clips from
:class:`~infworld.data.dataset.ClipDataset`. Evaluation: teacher-forced next-frame PSNR (each frame
generated from the real frames before it, with the configured sampler, uint8-quantised) through the
same rollout engine as inference (infworld/world.py), plus val loss.

Backbone: ``backbone: dit`` (default) is the CPU-scale :class:`~infworld.models.dit.DiT`
(``model.dit``); ``backbone: wan`` is the Wan2.1 transformer (``model.wan``, infworld/models/wan/,
docs/scale.md), loaded from ``wan.weights`` when set. Either sits at ``WorldNet.dit`` with the same
forward signature, so the loss, the rollout engine and the memory strategies use it unchanged.

Tokenizer: ``tokenizer`` names an exported tokenizer (folder or name), ``wan-vae:PATH`` (the Wan2.1
VAE in image mode, one latent per frame) or ``pixels:P`` (parameter-free space-to-depth): see
infworld/models/tokenizers.py.

``WorldNet``, ``PixelTokenizer``, ``load_tokenizer`` and ``build_tokenizer`` live in
infworld/models/ (worldnet.py, tokenizers.py) and are re-exported here for older imports.

Video mode (``backbone: wan``, ``wan.frames_per_latent: 4``, ``wan-vae:PATH``): the Wan VAE
compresses time 4x, ``data.clip_len`` (video frames) must be 1 + 4 k and the model trains on k + 1
latent frames cut from whole-episode latents cached on disk (models/wan/clips.py, latents.py), with
actions grouped (B, L, 4) per latent frame; ``window``, ``chunk``, ``memory.history`` and
``eval_context`` count latent frames.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from infworld.config import to_dict
from infworld.data.episode import read_meta
from infworld.data.revisits import DEFAULT_REVISIT_ANGLE_DEG, default_min_revisit_gap, default_revisit_dist
from infworld.diffusion.flow import FlowConfig
from infworld.diffusion.forcing import ForcingConfig, forcing_loss
from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError, InfWorldError
from infworld.models.action import frame_actions
from infworld.models.dit import DiT, DiTConfig
from infworld.models.tokenizers import (  # noqa: F401 (re-exported for older imports)
    PIXELS_PREFIX,
    WAN_VAE_PREFIX,
    PixelTokenizer,
    build_tokenizer,
    load_tokenizer,
)
from infworld.models.wan.config import WanConfig
from infworld.models.wan.transformer import build_backbone
from infworld.models.worldnet import BACKBONES, WorldNet, build_world_net
from infworld.train.latent_cache import LatentCache
from infworld.train.task import register_task
from infworld.train.tasks.memory_train import (
    NO_MEMORY,
    MemoryTrainConfig,
    build_memories,
    build_modules,
    memory_loss,
    strategy_settings,
)
from infworld.video_frames import frames_per_latent

ACTION_KEYS = ("move", "view", "interact")


@dataclass
class WorldConfig:
    """Model config of the world task. ``backbone`` picks the network: ``"dit"`` (config ``dit``) or
    ``"wan"`` (config ``wan``, :class:`~infworld.models.wan.config.WanConfig`); what this docstring
    says of ``dit.*`` holds for ``wan.*`` when it is the backbone. Zeros mean "derive":
    ``dit.in_channels``/``latent_size`` from the tokenizer, ``dit.actions.num_interact`` from the
    dataset, ``dit.max_frames`` from ``data.clip_len``, ``window`` (inference attention window) from
    ``dit.max_frames``, ``eval_context`` (real frames before the first predicted one) from
    ``clip_len // 2``.
    ``context_noise``: the inference context noise level stored in the export (at most the training
    maximum ``forcing.context_noise``). ``latent_cache_mb``: see :class:`LatentCache`.
    ``memory``: train with memory context
    (memory_train.py); then ``data.clip_len = memory.history + L`` and ``dit.max_frames`` defaults
    to L, the training window."""

    tokenizer: str = "pixels:8"
    backbone: Literal["dit", "wan"] = "dit"
    dit: DiTConfig = field(default_factory=DiTConfig)
    wan: WanConfig = field(default_factory=WanConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    forcing: ForcingConfig = field(default_factory=ForcingConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    chunk: int = 4
    window: int = 0
    context_noise: float = 0.0  # inference: level at which finished frames enter the context (world.py)
    eval_context: int = 0
    grad_checkpointing: bool = False
    latent_cache_mb: int = 1024  # float16 latents of seen training frames kept in RAM; 0 = off
    init_from: str = ""  # exported world model to finetune from (train/finetune.py)
    train_only: list[str] = field(default_factory=list)  # glob patterns: the only parameters trained
    memory: MemoryTrainConfig = field(default_factory=MemoryTrainConfig)


def _unwrap(model: nn.Module) -> WorldNet:
    return getattr(model, "module", model)  # DDP / FSDP keep the module under .module


class WorldTask:
    """Task ``world`` (see the module docstring and infworld/train/task.py for the contract)."""

    name = "world"

    def __init__(self, config: WorldConfig, recipe: Any):
        self.config = config
        self.recipe = recipe
        config.flow.check()
        config.forcing.check()
        config.sampler.check()
        if config.backbone not in BACKBONES:
            raise ConfigError(f"model.backbone: expected one of {list(BACKBONES)}, got {config.backbone!r}")
        if not 0.0 <= config.context_noise <= config.forcing.context_noise:
            raise ConfigError(f"model.context_noise: {config.context_noise} must lie in 0..forcing."
                              f"context_noise ({config.forcing.context_noise}), the levels it is trained on")
        data = recipe.data
        if not data.root:
            raise ConfigError("data.root: the world task needs a dataset folder")
        self.meta = read_meta(data.root)
        self.frame_size = tuple(self.meta.size)
        temporal = config.backbone == "wan" and config.wan.frames_per_latent > 1
        self.tokenizer, self.tokenizer_embed = load_tokenizer(config.tokenizer, self.frame_size, temporal)
        self.r = frames_per_latent(self.tokenizer)  # video frames per latent frame
        self.clip_latents = self._clip_latents(data)
        self.dit_config = self._resolve_dit(config, self.clip_latents)
        window = config.window or self.dit_config.max_frames
        if not 1 <= window <= self.dit_config.max_frames:
            raise ConfigError(f"model.window: {window} must be in 1..{config.backbone}.max_frames "
                              f"({self.dit_config.max_frames})")
        if not 1 <= config.chunk <= window:
            raise ConfigError(f"model.chunk: {config.chunk} must be in 1..window ({window})")
        self.window = window
        config.memory.check()
        self.memories = build_memories(config.memory, window) if config.memory.enabled else {}
        if any(m.needs_poses for m in self.memories.values()) and not self.meta.has_pose:
            raise ConfigError(f"model.memory: {[n for n, m in self.memories.items() if m.needs_poses]} need "
                              f"poses, but {data.root} has none (meta.has_pose is false)")
        if config.memory.enabled and config.memory.loss_on == "returns":
            if not self.meta.has_pose:
                raise ConfigError(f"model.memory.loss_on: returns finds returns on poses, but {data.root} "
                                  "has none (meta.has_pose is false)")
            # the rule revisit-dense sampling uses (ClipDataset's defaults, data/revisits.py)
            self.return_gap = default_min_revisit_gap(data.clip_len)
            self.return_dist = default_revisit_dist(self.meta.env)
            self.return_angle = DEFAULT_REVISIT_ANGLE_DEG
        # Record the resolved values in the config itself, so checkpoints carry the real sizes.
        setattr(config, config.backbone, copy.deepcopy(self.dit_config))
        config.window = window
        d = self.dit_config
        budget = config.latent_cache_mb * 2**20 if self.r == 1 else 0
        self._cache = LatentCache(data.root, (d.in_channels, *d.latent_size), budget) if budget else None
        self._store = None  # video mode: whole-episode latents on disk, each episode encoded once
        if self.r > 1:
            from infworld.models.wan.latents import WanLatentStore

            self._store = WanLatentStore(data.root, self.tokenizer)

    def _clip_latents(self, data: Any) -> int:
        """Latent frames of a training clip: ``data.clip_len``, or 1 + k for 1 + r k video frames."""
        r = self.r
        if r == 1:
            return data.clip_len
        if data.clip_len < 1 + r or (data.clip_len - 1) % r:
            raise ConfigError(f"data.clip_len: {data.clip_len} video frames; video mode ({r} frames per "
                              f"latent frame) needs 1 + {r} k frames, k >= 1 (e.g. {1 + 4 * r} -> 5 latent "
                              "frames)")
        for key in ("revisit_dense", "val_revisit_dense", "event_share"):
            if getattr(data, key):
                raise ConfigError(f"data.{key}: not supported in video mode (latent clips) yet")
        return 1 + (data.clip_len - 1) // r

    def _resolve_dit(self, config: WorldConfig, clip_len: int) -> DiTConfig | WanConfig:
        """The backbone's config (``model.dit`` or ``model.wan``) with the derived sizes filled in."""
        try:
            probe = self.tokenizer.encode(torch.zeros(1, 3, *self.frame_size, dtype=torch.uint8))
        except InfWorldError as exc:
            raise ConfigError(f"tokenizer {config.tokenizer!r} does not accept {self.frame_size} frames of "
                              f"{self.recipe.data.root}: {exc}") from exc
        c, h, w = probe.shape[-3:]
        name = config.backbone
        d = copy.deepcopy(config.wan if name == "wan" else config.dit)
        if d.in_channels and d.in_channels != c:
            hint = (" (Wan2.1 weights expect the Wan VAE's 16 channels: use tokenizer wan-vae:PATH)"
                    if name == "wan" and d.weights else "; leave it 0 to derive it")
            raise ConfigError(f"model.{name}.in_channels: {d.in_channels} differs from the {c} latent "
                              f"channels of tokenizer {config.tokenizer!r} (latents {(c, h, w)}){hint}")
        if any(d.latent_size) and tuple(d.latent_size) != (h, w):
            raise ConfigError(f"model.{name}.latent_size: {tuple(d.latent_size)} differs from the "
                              f"tokenizer's latents {(c, h, w)}; leave it 0 to derive it")
        want = d.frames_per_latent if name == "wan" else 1
        if want != self.r:
            mode = "image mode" if self.r == 1 else "video mode"
            raise ConfigError(f"model.{name}.frames_per_latent: {want}, but tokenizer {config.tokenizer!r} "
                              f"has frames_per_latent {self.r} ({mode}); video mode needs the Wan VAE: "
                              "tokenizer wan-vae:PATH with model.wan.frames_per_latent: 4 (docs/scale.md)")
        d.in_channels, d.latent_size = int(c), (int(h), int(w))
        vocab = len(self.meta.interact_vocab)
        if d.actions.num_interact == 0:
            d.actions.num_interact = vocab
        elif d.actions.num_interact < vocab:
            raise ConfigError(f"model.{name}.actions.num_interact: {d.actions.num_interact} is smaller than "
                              f"the dataset's interact vocabulary ({vocab})")
        span = clip_len - config.memory.history if config.memory.enabled else clip_len
        if span < 2:
            raise ConfigError(f"data.clip_len {clip_len} (latent frames): must exceed model.memory.history "
                              f"({config.memory.history}) by at least 2 frames (the training window)")
        d.max_frames = d.max_frames or span
        if span > d.max_frames:
            raise ConfigError(f"data.clip_len {clip_len} (minus memory history) exceeds "
                              f"model.{name}.max_frames {d.max_frames}")
        d.grad_checkpointing = d.grad_checkpointing or config.grad_checkpointing
        d.check()
        return d

    # -- the Task contract ---------------------------------------------------------------------

    def build_model(self) -> WorldNet:
        tokenizer = copy.deepcopy(self.tokenizer)
        d = self.dit_config
        modules = build_modules(self.config.memory, self.window, (d.in_channels, *d.latent_size))
        backbone = build_backbone(d) if self.config.backbone == "wan" else DiT(d)
        net = WorldNet(backbone, tokenizer, self.frame_size, self.export_config(), modules)
        if self.config.init_from or self.config.train_only:
            from infworld.train.finetune import prepare

            for line in prepare(net, self.config.init_from, self.config.train_only):
                print(line)
        return net

    def batches(self, split: str, batch_size: int, seed: int, rank: int, world_size: int,
                start_sample: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        from infworld.data.dataset import ClipDataset

        data = self.recipe.data
        if self.r > 1:
            from infworld.models.wan.clips import LatentClipDataset

            ds = LatentClipDataset(data.root, self.clip_latents, self.r, split, data.val_episodes, seed,
                                   rank, world_size, start_sample, worker_block=batch_size,
                                   with_frames=split == "val")
            yield from torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=data.workers)
            return
        ds = ClipDataset(data.root, data.clip_len, split, data.val_episodes, seed, rank, world_size,
                         start_sample,
                         revisit_dense=data.revisit_dense if split == "train" else data.val_revisit_dense,
                         event_share=data.event_share if split == "train" else 0.0,
                         event_extra=data.event_extra, revisit_tail=data.revisit_tail or None,
                         worker_block=batch_size)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=data.workers)
        yield from loader

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator | None = None, strategy: str | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
        """Diffusion-forcing loss of a batch; memory models draw a strategy per batch (``strategy``
        forces one: the per-strategy validation losses)."""
        net = _unwrap(model)
        if self._store is not None:  # video mode: latent clips, actions grouped (B, L, r)
            device = next(net.dit.parameters()).device
            x0 = self._store.latents(batch["episode"], batch["start"], self.clip_latents, net.tokenizer)
            x0, acts = x0.to(device), {k: batch[k].long().to(device) for k in ACTION_KEYS}
        elif self._cache is not None and "episode" in batch and "start" in batch:
            # (B, L, C, h, w) from the cache where already encoded
            x0 = self._cache.latents(net, batch["frames"], batch["episode"], batch["start"])
        else:
            x0 = net.encode(batch["frames"])  # (B, L, C, h, w), frozen tokenizer
        if self._store is None:
            acts = frame_actions({k: batch[k].long() for k in ACTION_KEYS})  # (B, L), frame 0 null
        if not self.memories:
            return forcing_loss(lambda x, t, a: model(x, t, a), x0, acts, self.config.flow,
                                self.config.forcing, generator)
        return memory_loss(self, model, net, x0, acts, batch, generator, strategy)

    def evaluate(self, model: nn.Module, max_batches: int = 8) -> dict[str, float]:
        """Val loss and teacher-forced next-frame PSNR (dB) on up to ``max_batches`` val batches."""
        from infworld.eval.video import psnr
        from infworld.memory.registry import make_memory
        from infworld.streaming import teacher_forcing
        from infworld.world import RolloutConfig, WorldModel

        if self.recipe.data.val_episodes == 0:
            return {}
        net = _unwrap(model)
        was_training = net.training
        r, length = self.r, self.clip_latents  # video frames per latent frame, clip length in latents
        k = self.config.eval_context or length // 2
        k = min(max(k, 1), length - 1)
        device = next(net.dit.parameters()).device
        engine = WorldModel(net, make_memory("window", budget=self.window),
                            RolloutConfig(chunk=1, sampler=self.config.sampler, seed=0,
                                          context_noise=self.config.context_noise), device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        losses, shuffled, psnrs = [], [], []
        per_strategy: dict[str, list[float]] = {}
        batches = self.batches("val", self.recipe.train.batch_size, seed=0, rank=0, world_size=1)
        try:
            with torch.no_grad():
                for _, batch in zip(range(max_batches), batches, strict=False):
                    batch = {key: v.to(device) if torch.is_tensor(v) else v for key, v in batch.items()}
                    # the action gap: the same noise with the clips' actions swapped between clips
                    state = gen.get_state()
                    losses.append(float(self.loss(net, batch, gen)[0]))
                    after = gen.get_state()
                    gen.set_state(state)
                    swapped = {**batch, **{key: batch[key].roll(1, dims=0) for key in ACTION_KEYS}}
                    shuffled.append(float(self.loss(net, swapped, gen)[0]))
                    gen.set_state(after)
                    # one val loss per strategy on the same noise, and the window's without memory
                    for name in [*self.memories, NO_MEMORY] if self.memories else []:
                        gen.set_state(state)
                        per_strategy.setdefault(name, []).append(float(self.loss(net, batch, gen, name)[0]))
                    gen.set_state(after)
                    gt = batch["frames"].permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, 1 + r (L-1), H, W, 3)
                    # per-transition actions (B, r (L-1)); video mode: latents 1.. of the clip, ungrouped
                    acts = {key: (batch[key][:, 1:].flatten(1) if r > 1 else batch[key]).cpu().numpy()
                            for key in ACTION_KEYS}
                    # each latent frame j >= k (video frames 1 + r (j-1) .. r j) from the real ones before it
                    ctx = 1 + r * (k - 1)  # video frames of k latent frames
                    clip = gt[:, : 1 + r * (length - 1)]  # (B, 1 + r (L-1), H, W, 3)
                    pred = teacher_forcing(engine, clip, acts, ctx)  # (B, r (L - k), H, W, 3)
                    psnrs.extend(psnr(pred[:, i], gt[:, ctx + i]) for i in range(pred.shape[1]))
        finally:
            net.train(was_training)
        loss, loss_shuf = float(np.mean(losses)), float(np.mean(shuffled))
        return {"loss": loss, "loss_shuffled_actions": loss_shuf,
                "action_gap": loss_shuf / max(loss, 1e-12) - 1.0,
                "next_frame_psnr": float(np.mean(np.concatenate(psnrs))),
                **{f"loss_{name}": float(np.mean(v)) for name, v in per_strategy.items()}}

    def export_config(self) -> dict[str, Any]:
        return {
            "backbone": self.config.backbone,
            # "dit" for the DiT, as before the Wan backbone existed, so older readers are unchanged
            self.config.backbone: to_dict(self.dit_config),
            "frame_size": list(self.frame_size),
            "tokenizer": self.tokenizer_embed,
            "interact_vocab": list(self.meta.interact_vocab),
            "sampler": to_dict(self.config.sampler),
            "chunk": self.config.chunk,
            "window": self.window,
            "context_noise": self.config.context_noise,
            "flow": to_dict(self.config.flow),
            # the settings each trained strategy was built with, reused at inference
            "memory": {n: strategy_settings(self.config.memory, n, self.window) for n in self.memories},
            "memory_modules": sorted(self.config.memory.strategies) if self.memories else [],
            "memory_slots": self.config.memory.export_slots(self.memories) if self.memories else None,
            # how memory frames become context (memory/context.py); absent = causal, unbounded
            "memory_encoding": self.config.memory.encoding if self.memories else "causal",
            "memory_span": self.config.memory.span if self.memories else 0,
            "memory_encodings": dict(self.config.memory.encodings) if self.memories else {},
        }

    @classmethod
    def build_inference_model(cls, model_config: dict[str, Any]) -> WorldNet:
        """The untrained WorldNet of an export (:func:`infworld.models.worldnet.build_world_net`)."""
        return build_world_net(model_config)


register_task("world", WorldConfig, WorldTask)
