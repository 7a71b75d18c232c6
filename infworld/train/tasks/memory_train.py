"""Training the world model *with* its memory: long clips, memory built from the clip's history.

Every memory strategy is trained on the same backbone (so the benchmark compares strategies, not
backbones), by the same code that runs at inference: for each batch a strategy is drawn (by
``weights``), a fresh :class:`~infworld.memory.base.Memory` is written with the first ``history``
frames of the clip, and its :meth:`~infworld.memory.base.Memory.read` context conditions the
diffusion-forcing loss on the last ``L`` frames (the local window). Positions, frame kinds and pose
features are exactly what the rollout engine produces (memory/base.py ``slot_positions``,
memory/context.py), so nothing shifts between training and streaming.

HPMC (Infinite-World, arXiv 2602.02393, Sec. 3.2) is trained **jointly**: its compressor lives in
the world network (``WorldNet.memory_modules``) and the context is built with gradients enabled, so
the DiT loss trains the compressor end to end. Revisit-dense finetuning (Sec. 3.4) is the same task
on ``data.revisit_dense: true`` clips whose last frames return to a place the history saw.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from infworld.errors import ConfigError, MemoryConfigError
from infworld.memory.base import Memory, MemoryConfig, MemoryContext
from infworld.memory.context import MemoryLayout
from infworld.memory.registry import make_memory, memory_class, memory_config, memory_names

LOSS_ON = ("window", "returns")


@dataclass
class MemoryTrainConfig:
    """``strategies``: name -> sampling weight (empty = plain clips, no memory); ``history``: frames
    before the training window that the memory is built from (``data.clip_len = history + L``);
    ``settings``: per-strategy settings, fields of the strategy's config dataclass (``local_window``
    is filled in from the model);
    ``ref_offset``: the current camera for retrieval is the pose of window frame ``L - ref_offset``
    (default: the frame before the last chunk, as when streaming).
    ``encoding`` / ``span``: the memory layout (memory/context.py :class:`MemoryLayout`): ``isolated``
    encodes every memory frame on its own; ``encodings`` overrides ``encoding`` per strategy (e.g.
    the oracle ``full`` isolated, the bounded strategies causal); with ``span`` S, more than S
    frames share S slots' worth of positions. ``slots``: the most frames one read may return at
    inference (what the export records as ``memory_slots``; 0 = the most any trained strategy
    returns). Raising it beyond the trained strategies needs ``span`` (positions then stay in the
    trained range).
    ``plain_prob``: share of steps whose raw memory frames are shown as ordinary frames (kind 0,
    no poses; compressed latents stay marked), so one model is trained for both presentations and
    the benchmark can compare them (a strategy's ``plain`` setting picks one at inference).
    ``loss_on``: ``window`` (every window frame carries loss) or ``returns``: only the window frames
    that return to a place the history saw and the window's own earlier frames (all but the last
    ``return_recent``) did not (:func:`return_frames`), so the loss is one only memory can lower
    (Infinite-World, arXiv 2602.02393, Sec. 3.4: revisit-dense finetuning; pair it with
    ``data.revisit_dense``). The radius, angle and gap are those of revisit-dense sampling
    (data/revisits.py defaults).
    ``window_noise``: the most noise on the window's clean-prefix frames of memory clips (0 = the
    forcing's ``context_noise``): at inference the window holds the model's own drifting frames, and
    memory is what corrects them, so a noisier window makes reading memory pay in the loss."""

    strategies: dict[str, float] = field(default_factory=dict)
    history: int = 0
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    ref_offset: int = 0
    encoding: str = "causal"
    encodings: dict[str, str] = field(default_factory=dict)
    span: int = 0
    slots: int = 0
    plain_prob: float = 0.0
    loss_on: str = "window"
    return_recent: int = 4
    window_noise: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.strategies)

    def check(self) -> None:
        if not self.enabled:
            return
        known = memory_names()
        for name, w in self.strategies.items():
            if name not in known:
                raise ConfigError(f"model.memory.strategies: unknown memory {name!r}; known: {known}")
            if not float(w) > 0:
                raise ConfigError(f"model.memory.strategies.{name}: weight must be > 0, got {w!r}")
        extra = sorted(set(self.settings) - set(self.strategies))
        if extra:
            raise ConfigError(f"model.memory.settings: {extra} are not in model.memory.strategies")
        if self.history < 1:
            raise ConfigError(f"model.memory.history: expected >= 1 frames of history, got {self.history}")
        extra = sorted(set(self.encodings) - set(self.strategies))
        if extra:
            raise ConfigError(f"model.memory.encodings: {extra} are not in model.memory.strategies")
        for name in [None, *self.encodings]:
            try:
                self.layout(name).check()
            except MemoryConfigError as exc:
                where = f"model.memory.encodings.{name}" if name else "model.memory"
                raise ConfigError(f"{where}: {exc}") from exc
        if isinstance(self.slots, bool) or not isinstance(self.slots, int) or self.slots < 0:
            raise ConfigError(f"model.memory.slots: expected an int >= 0 (0 = derive), got {self.slots!r}")
        if not 0.0 <= float(self.plain_prob) <= 1.0:
            raise ConfigError(f"model.memory.plain_prob: expected a share in 0..1, got {self.plain_prob!r}")
        if not 0.0 <= float(self.window_noise) <= 1.0:
            raise ConfigError(f"model.memory.window_noise: expected a noise level in 0..1 (0 = the forcing's "
                              f"context_noise), got {self.window_noise!r}")
        if self.loss_on not in LOSS_ON:
            raise ConfigError(f"model.memory.loss_on: expected one of {list(LOSS_ON)}, got {self.loss_on!r}")
        if isinstance(self.return_recent, bool) or not isinstance(self.return_recent, int) \
                or self.return_recent < 1:
            raise ConfigError(f"model.memory.return_recent: expected an int >= 1 (window frames right "
                              f"before a frame that may show its place), got {self.return_recent!r}")

    def layout(self, strategy: str | None = None) -> MemoryLayout:
        """The layout strategy ``strategy`` trains with (None: the default ``encoding``)."""
        enc = self.encodings.get(strategy, self.encoding) if strategy is not None else self.encoding
        return MemoryLayout(enc, self.span)

    def export_slots(self, memories: dict[str, Memory]) -> int:
        """``memory_slots`` of the export: ``slots``, checked against what training covers."""
        trained = max_slots(memories)
        if not self.slots:
            return trained
        if self.slots < trained:
            raise ConfigError(f"model.memory.slots: {self.slots} is below the {trained} frames a trained "
                              "strategy returns")
        if self.slots > trained and not self.span:
            raise ConfigError(f"model.memory.slots: {self.slots} frames exceed the {trained} trained slots; "
                              "without model.memory.span their positions would leave the trained range")
        return self.slots


def strategy_config(cfg: MemoryTrainConfig, name: str, local_window: int) -> MemoryConfig:
    """The resolved config strategy ``name`` trains with: the model's local window, then the recipe's
    settings (``model.memory.settings.<name>``); unknown or bad settings raise
    :class:`~infworld.errors.MemoryConfigError` naming the strategy and setting."""
    return memory_config(name, {"local_window": local_window}, cfg.settings.get(name))


def strategy_settings(cfg: MemoryTrainConfig, name: str, local_window: int) -> dict[str, Any]:
    """Every setting strategy ``name`` trains with (:func:`strategy_config` as a dict): what the export
    records in ``model_config.memory``."""
    return strategy_config(cfg, name, local_window).to_dict()


def build_memories(cfg: MemoryTrainConfig, local_window: int) -> dict[str, Memory]:
    """One memory object per strategy (checks every setting before training starts)."""
    return {name: make_memory(name, strategy_config(cfg, name, local_window)) for name in cfg.strategies}


def build_modules(cfg: MemoryTrainConfig, local_window: int, latent_shape: tuple[int, int, int]
                  ) -> nn.ModuleDict:
    """The learned parts to train jointly (e.g. HPMC's compressor), by strategy name."""
    mods = nn.ModuleDict()
    for name in cfg.strategies:
        module = memory_class(name).build_module(strategy_config(cfg, name, local_window), latent_shape)
        if module is not None:
            mods[name] = module
    return mods


def max_slots(memories: dict[str, Memory]) -> int:
    """Most memory frames any strategy can return: the positions the DiT is trained for."""
    return max((m.max_context() for m in memories.values()), default=0)


def pick_strategy(cfg: MemoryTrainConfig, generator: torch.Generator | None) -> str:
    """Draw a strategy name by weight (deterministic given the generator: exact resume)."""
    names = list(cfg.strategies)
    w = torch.tensor([float(cfg.strategies[n]) for n in names])
    gen_dev = generator.device if generator is not None else "cpu"
    return names[int(torch.multinomial(w.to(gen_dev), 1, generator=generator))]


def training_context(memory: Memory, module: nn.Module | None, x0: torch.Tensor,
                     actions: dict[str, torch.Tensor], poses: torch.Tensor | None, history: int,
                     ref_index: int) -> tuple[MemoryContext | None, torch.Tensor | None]:
    """Write the first ``history`` frames of a clip into ``memory`` and read its context for the
    rest. x0: (B, H + L, C, h, w) latents; actions (B, H + L); poses (B, H + L, 5) or None.
    Returns (context or None, reference pose (B, 5) or None)."""
    memory.attach(module)
    memory.reset()
    hist_poses = poses[:, :history] if poses is not None else None
    memory.write(x0[:, :history], {k: a[:, :history] for k, a in actions.items()}, hist_poses, 0)
    ref = poses[:, ref_index] if poses is not None else None
    ctx = memory.read(history + memory.local_window - 1, ref)
    if ctx is None or ctx.num_frames == 0:
        return None, ref
    # Streaming measures positions from the oldest cached frame, so the memory slots end right
    # before it (world.py adds that shift); here the clip's first frame plays that role.
    ctx.positions = ctx.positions + float(memory.local_window - 1)
    return ctx.to(x0.device), ref


def return_frames(poses: torch.Tensor, history: int, min_gap: int, dist: float,
                  angle_deg: float | None, recent: int) -> torch.Tensor:
    """Window frames that return to a place only the memory holds: (B, L) bool, L = T - ``history``.

    poses: (B, T, 5) [x, y, z, yaw_deg, pitch_deg] of a clip whose first ``history`` frames go to
    memory. Window frame t (clip index ``history + j``) counts when it is near (planar distance <=
    ``dist`` and, unless ``angle_deg`` is None, yaw within ``angle_deg``; the rule of
    data/revisits.py) a history frame more than ``min_gap`` frames earlier, and near no window frame
    before ``t - recent``: the place is not in the local window (its last ``recent`` frames lead into
    the view and are exempt, or every frame of a slow return would be excluded by its neighbour).
    """
    if poses.dim() != 3 or poses.shape[-1] != 5:
        raise ConfigError(f"return_frames: expected poses (B, T, 5), got {tuple(poses.shape)}")
    t_len = poses.shape[1]
    if not 0 < history < t_len:
        raise ConfigError(f"return_frames: history {history} must lie in 1..{t_len - 1} "
                          f"(clip length {t_len})")
    xy = poses[..., :2].double()  # Doom coordinates reach ~1e4: float64 keeps the differences exact
    near = (xy[:, :, None] - xy[:, None]).pow(2).sum(-1) <= float(dist) ** 2  # (B, T, T)
    if angle_deg is not None and angle_deg < 180.0:
        dyaw = torch.remainder(poses[:, :, None, 3] - poses[:, None, :, 3] + 180.0, 360.0) - 180.0
        near &= dyaw.abs() <= float(angle_deg)
    idx = torch.arange(t_len, device=poses.device)
    win = idx[history:, None]  # (L, 1) clip index of each window frame
    from_history = (idx[None] < history) & (win - idx[None] > min_gap)  # (L, T)
    from_window = (idx[None] >= history) & (idx[None] < win - recent)  # (L, T)
    near_w = near[:, history:]  # (B, L, T)
    return (near_w & from_history).any(-1) & ~(near_w & from_window).any(-1)


# the per-strategy validation loss of the window without any memory context (the reference)
NO_MEMORY = "none"


def memory_loss(task: Any, model: nn.Module, net: nn.Module, x0: torch.Tensor,
                acts: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                generator: torch.Generator | None, strategy: str | None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """The diffusion-forcing loss on the window of a memory clip (the world task's memory path): the
    memory of a drawn (or given; :data:`NO_MEMORY` = none) strategy is built from the clip's first
    ``history`` frames and conditions the loss on the rest. x0: (B, H + L, C, h, w) latents."""
    from infworld.diffusion.forcing import forcing_loss
    from infworld.memory.base import plain_context

    mcfg, h = task.config.memory, task.config.memory.history
    name = strategy or pick_strategy(mcfg, generator)
    poses = batch["pose"].to(x0.device).float() if "pose" in batch else None
    span = x0.shape[1] - h
    ref_index = h + span - (mcfg.ref_offset or task.config.chunk) - 1
    ctx, ref = None, None
    if name != NO_MEMORY:
        module = net.memory_modules[name] if name in net.memory_modules else None
        ctx, ref = training_context(task.memories[name], module, x0, acts, poses, h, ref_index)
    if mcfg.plain_prob > 0:
        # drawn whether or not there is context, so every strategy's loss sees the same noise
        # (per-strategy validation losses compare strategies on one draw, evaluate())
        gen_dev = generator.device if generator is not None else "cpu"
        plain = float(torch.rand((), generator=generator, device=gen_dev)) < mcfg.plain_prob
        if ctx is not None and plain:
            ctx = plain_context(ctx)

    def fn(x: torch.Tensor, t: torch.Tensor, a: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(x, t, a, memory=ctx, ref_pose=ref, memory_name=None if ctx is None else name)

    weight = None
    if mcfg.loss_on == "returns":
        if poses is None:
            raise ConfigError("model.memory.loss_on: returns needs poses, and the batch has none")
        weight = return_frames(poses, h, task.return_gap, task.return_dist, task.return_angle,
                               mcfg.return_recent).float()  # (B, L)
    forcing = task.config.forcing
    if mcfg.window_noise:
        forcing = dataclasses.replace(forcing, context_noise=float(mcfg.window_noise))
    loss, metrics = forcing_loss(fn, x0[:, h:], {k: a[:, h:] for k, a in acts.items()}, task.config.flow,
                                 forcing, generator, frame_weight=weight)
    # Learned memory parts not used this step still join the graph (DDP expects every gradient).
    unused = [p for n, mod in net.memory_modules.items() if n != name for p in mod.parameters()
              if p.requires_grad]
    if unused:
        loss = loss + 0.0 * sum(p.sum() for p in unused)
    metrics[f"loss_{name}"] = metrics["loss"]
    metrics["memory_frames"] = float(ctx.num_frames if ctx is not None else 0)
    if weight is not None:
        metrics["return_share"] = float(weight.mean())
    return loss, metrics
