"""The ``distill`` task: a few-step causal student from a trained world model (real-time play).

Two stages, each an ``infworld train`` recipe (recipes/doom-tiny-distill-ode.yaml, -dmd.yaml):

* ``stage: ode``: ODE initialisation (CausVid, Yin et al. 2025, Sec. 4.2; Self-Forcing's "ODE init").
  The frozen teacher integrates the next chunk from real context frames with its own sampler
  (``teacher_steps`` Euler steps, action CFG); the student, started from the teacher, regresses the
  teacher's final clean latents from the teacher's intermediate states at the student's few grid
  times: || x0_student(x_{t_k}, t_k) - x0_teacher ||^2, k drawn per clip.
* ``stage: dmd``: Self-Forcing with DMD (Huang et al. 2025, Sec. 3.2-3.3; infworld/distill/). The
  student rolls out ``chunks`` chunks after real context through the inference engine with its
  memory strategy (self_forcing.py, gradient through one random step per chunk); the rolled-out
  window, noised to a random level, is scored by the frozen teacher (with action CFG) and by a fake
  score network trained online on the student's samples; the generator takes the DMD step
  (dmd.py) every ``generator_every`` steps, the fake score learns every step (the public
  Self-Forcing configuration uses 5).

The module the trainer sees is :class:`DistillNet` (student + fake score); the whole loss runs inside
its one ``forward`` so DDP sees a single call. An export keeps the student alone, as a world model
whose sampler is the student's (``stochastic``, eta 1, no CFG) and whose ``distilled_steps`` lists the
step counts it can run (``--steps``; world.py refuses others).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from infworld.data.episode import read_meta
from infworld.diffusion.flow import expand_t
from infworld.diffusion.samplers import timesteps
from infworld.distill.dmd import critic_loss, dmd_loss, noised, x0_of
from infworld.distill.pair import DistillNet, load_world
from infworld.distill.self_forcing import distilled_steps, self_forcing_rollout, student_sampler
from infworld.errors import ConfigError
from infworld.models.action import NULL_ACTION, frame_actions
from infworld.models.worldnet import WorldNet, build_world_net
from infworld.train.checkpoint import recipe_differences
from infworld.train.task import register_task
from infworld.train.tasks.world import ACTION_KEYS


@dataclass
class DistillConfig:
    """``teacher``: the exported world model to distil (name or folder). ``student_init``: the export
    the student starts from (the ODE stage's), "" = the teacher. ``steps``: the student's grid (it can
    then run any divisor of it). ``teacher_steps``/``teacher_cfg`` (0 = the teacher's exported CFG):
    the teacher's ODE and guidance. ``context``: real latent frames before the student's first chunk;
    ``chunks``: chunks it rolls out per clip (context + chunks x chunk <= the teacher's window);
    ``chunk``: latent frames per chunk (0 = the teacher's; 1 = frame by frame, as play steps: a
    student distilled on chunks of 4 dissolves when stepped one frame at a time, docs/distill.md).
    ``t_min``/``t_max``: the DMD noise-level range. ``memory``: the strategy the student rolls out
    with (``window`` = none beyond the local window); ``history``: real frames the engine observes
    before the context (they leave the window and reach the memory, so a retrieval memory such as
    ``vrag`` returns some of them while the student generates; the scores see the same memory)."""

    teacher: str = ""
    stage: Literal["ode", "dmd"] = "dmd"
    student_init: str = ""
    steps: int = 4
    teacher_steps: int = 8
    teacher_cfg: float = 0.0
    context: int = 4
    chunks: int = 3
    chunk: int = 0
    generator_every: int = 5
    t_min: float = 0.02
    t_max: float = 0.98
    memory: str = "window"
    history: int = 0

    def check(self) -> None:
        if not self.teacher:
            raise ConfigError("model.teacher: the distill task needs the exported world model to distil "
                              "(a name under checkpoints/ or an export folder)")
        if self.stage not in ("ode", "dmd"):
            raise ConfigError(f"model.stage: expected 'ode' or 'dmd', got {self.stage!r}")
        distilled_steps(self.steps)
        if self.teacher_steps < self.steps or self.teacher_steps % self.steps:
            raise ConfigError(f"model.teacher_steps: {self.teacher_steps} must be a multiple of model.steps "
                              f"({self.steps}), so the teacher's ODE passes through the student's grid")
        for name, lo in (("context", 1), ("chunks", 1), ("generator_every", 1), ("history", 0), ("chunk", 0)):
            if getattr(self, name) < lo:
                raise ConfigError(f"model.{name}: expected >= {lo}, got {getattr(self, name)}")
        if not 0.0 < self.t_min < self.t_max < 1.0:
            raise ConfigError(f"model.t_min/t_max: expected 0 < t_min < t_max < 1, got {self.t_min}, "
                              f"{self.t_max}")
        if self.teacher_cfg < 0:
            raise ConfigError(f"model.teacher_cfg: expected >= 0 (0 = the teacher's), got {self.teacher_cfg}")


class DistillTask:
    """Task ``distill`` (module docstring; the contract is infworld/train/task.py)."""

    name = "distill"
    # the critic-only steps leave the student without gradient (DDP must not wait for it)
    find_unused_parameters = True

    def __init__(self, config: DistillConfig, recipe: Any):
        config.check()
        self.config, self.recipe = config, recipe
        if recipe.train.parallel == "fsdp":
            raise ConfigError("train.parallel: the distill task runs under DDP ('ddp'), not FSDP yet")
        self.teacher = load_world(config.teacher, "teacher")
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        mc = self.teacher.model_config
        if self.teacher.frames_per_latent != 1:
            raise ConfigError("model.teacher: video-mode teachers (frames_per_latent > 1) are not supported "
                              "by the distill task yet")
        self.chunk = config.chunk or int(mc.get("chunk", 4))
        self.window = int(mc.get("window") or self.teacher.dit.cfg.max_frames)
        self.context_noise = float(mc.get("context_noise", 0.0))
        sampler = mc.get("sampler", {})
        self.shift = float(sampler.get("shift", 1.0))
        self.cfg_scale = config.teacher_cfg or float(sampler.get("cfg_scale", 1.0))
        need = config.context + (config.chunks if config.stage == "dmd" else 1) * self.chunk
        if need > self.window:
            raise ConfigError(f"model.context + chunks x chunk = {need} latent frames exceed the teacher's "
                              f"window ({self.window}); lower model.context or model.chunks")
        data = recipe.data
        if not data.root:
            raise ConfigError("data.root: the distill task needs a dataset (real context frames and actions)")
        if config.stage == "dmd":
            need += config.history
        if data.clip_len < need:
            raise ConfigError(f"data.clip_len: {data.clip_len} frames; the {config.stage} stage needs {need} "
                              f"(model.history, model.context {config.context} and the generated chunks of "
                              f"{self.chunk})")
        meta = read_meta(data.root)
        if tuple(meta.size) != tuple(self.teacher.frame_size):
            raise ConfigError(f"data.root {data.root}: frames {tuple(meta.size)}, the teacher was trained on "
                              f"{tuple(self.teacher.frame_size)}")
        vocab = list(mc.get("interact_vocab") or [])
        if vocab and list(meta.interact_vocab) != vocab:
            raise ConfigError(f"data.root {data.root}: interact vocabulary {list(meta.interact_vocab)} "
                              f"differs from the teacher's {vocab}")
        self._teacher_psnr: float | None = None

    # -- model and export ------------------------------------------------------------------------

    def build_model(self) -> DistillNet:
        c = self.config
        if c.student_init:
            student = load_world(c.student_init, "student_init")
            diff = recipe_differences({k: v for k, v in student.model_config.items() if k not in _EXTRA},
                                      {k: v for k, v in self.teacher.model_config.items() if k not in _EXTRA})
            if diff:
                key, (mine, theirs) = next(iter(diff.items()))
                raise ConfigError(f"model.student_init {c.student_init!r}: its config differs from the "
                                  f"teacher {c.teacher!r} at {key} ({mine!r} vs {theirs!r})")
        else:
            student = copy.deepcopy(self.teacher)
        fake = copy.deepcopy(self.teacher)  # the fake score starts as the teacher (DMD2, Sec. 4)
        for net in (student, fake):
            for p in net.dit.parameters():
                p.requires_grad_(True)
            for p in net.memory_modules.parameters():
                p.requires_grad_(True)
            net.train()
        return DistillNet(student, fake)

    def export_config(self) -> dict[str, Any]:
        mc = copy.deepcopy(dict(self.teacher.model_config))
        mc["sampler"] = student_sampler(self.config.steps, self.shift).__dict__
        mc["distilled_steps"] = distilled_steps(self.config.steps)
        mc["distilled_from"] = {"teacher": self.config.teacher, "stage": self.config.stage,
                                "teacher_steps": self.config.teacher_steps, "teacher_cfg": self.cfg_scale}
        return mc

    @staticmethod
    def export_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The student's weights of a checkpoint (``student.*``), named as in a world export."""
        return {k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")}

    @classmethod
    def build_inference_model(cls, model_config: dict[str, Any]) -> WorldNet:
        return build_world_net(model_config)

    # -- data ------------------------------------------------------------------------------------

    def batches(self, split: str, batch_size: int, seed: int, rank: int, world_size: int,
                start_sample: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        from infworld.data.dataset import ClipDataset

        data = self.recipe.data
        ds = ClipDataset(data.root, data.clip_len, split, data.val_episodes, seed, rank, world_size,
                         start_sample, worker_block=batch_size)
        yield from torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=data.workers)

    # -- losses ----------------------------------------------------------------------------------

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
             sign: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """The stage's loss, computed inside ``model``'s forward (``sign = -1`` flips the DMD step)."""
        if self.config.stage == "ode":
            return model(lambda net: self._ode_loss(net, batch, generator))
        return model(lambda net: self._dmd_loss(net, batch, generator, sign))

    def _teacher_v(self, x: torch.Tensor, t: torch.Tensor, acts: dict[str, torch.Tensor], k: int,
                   memory: Any = None) -> torch.Tensor:
        """The teacher's guided velocity on the frames after the first ``k`` (the context keeps its
        actions in the unconditional branch, as the engine's cached context does)."""
        teacher = self.teacher.to(x.device)
        v = teacher(x, t, acts, memory=memory, memory_name=self.config.memory)
        if self.cfg_scale == 1.0:
            return v
        null = {name: a.clone() for name, a in acts.items()}
        for a in null.values():
            a[:, k:] = float("nan") if a.dtype.is_floating_point else NULL_ACTION
        v_u = teacher(x, t, null, memory=memory, memory_name=self.config.memory)
        return v_u + self.cfg_scale * (v - v_u)

    def _clip(self, net: WorldNet, batch: dict[str, torch.Tensor], frames: int
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The first ``frames`` latents of the batch's clips (B, frames, C, h, w) and their per-frame
        actions (B, frames)."""
        x0 = net.encode(batch["frames"][:, :frames])
        acts = frame_actions({k: batch[k][:, : frames - 1].long() for k in ACTION_KEYS})
        return x0, acts

    def _context_in(self, ctx: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
        """Real context latents as the engine commits them: noised to the context level."""
        s = self.context_noise
        if s <= 0:
            return ctx, 0.0
        t = torch.full(ctx.shape[:2], s, device=ctx.device)
        return noised(ctx, t, generator)[0], s

    def _ode_loss(self, net: DistillNet, batch: dict[str, torch.Tensor], generator: torch.Generator | None
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        c, k, n = self.config, self.config.context, self.chunk
        x0, acts = self._clip(net.student, batch, k + n)
        b, dev = x0.shape[0], x0.device
        ctx, s = self._context_in(x0[:, :k], generator)
        gen_dev = generator.device if generator is not None else dev
        x = torch.randn((b, n, *x0.shape[2:]), generator=generator, device=gen_dev).to(dev)
        ts = timesteps(c.teacher_steps, self.shift, device=dev)
        every = c.teacher_steps // c.steps
        states = []  # the teacher's state at each student grid time: steps x (B, n, C, h, w)
        with torch.no_grad():
            for i in range(c.teacher_steps):
                if i % every == 0:
                    states.append(x)
                t_full = torch.cat([torch.full((b, k), s, device=dev), ts[i].expand(b, n)], dim=1)
                v = self._teacher_v(torch.cat([ctx, x], 1), t_full, acts, k)[:, k:]
                x = x + (ts[i + 1] - ts[i]) * v
        target = x  # (B, n, C, h, w) the teacher's clean chunk
        pick = torch.randint(c.steps, (b,), generator=generator, device=gen_dev).to(dev)  # (B,)
        x_k = torch.stack(states, 1)[torch.arange(b, device=dev), pick]  # (B, n, C, h, w)
        t_k = timesteps(c.steps, self.shift, device=dev)[pick]  # (B,)
        t_full = torch.cat([torch.full((b, k), s, device=dev), t_k[:, None].expand(b, n)], dim=1)
        v = net.student(torch.cat([ctx, x_k], 1), t_full, acts)[:, k:]
        pred = x_k - expand_t(t_k[:, None].expand(b, n), x_k) * v
        loss = (pred.float() - target.float()).pow(2).mean()
        return loss, {"loss_ode": float(loss.detach()), "t_mean": float(t_k.mean())}

    def _engine(self, net: WorldNet, seed: int, device: torch.device) -> Any:
        from infworld.memory.registry import make_memory, pretrained_memory_config
        from infworld.world import RolloutConfig, WorldModel

        mc = net.model_config
        memory = make_memory(self.config.memory, pretrained_memory_config(
            self.config.memory, mc.get("memory"), self.window, None, source=self.config.teacher))
        rollout = RolloutConfig(chunk=self.chunk, sampler=student_sampler(self.config.steps, self.shift),
                                seed=seed, context_noise=self.context_noise)
        return WorldModel(net, memory, rollout, device=device)

    def _dmd_loss(self, net: DistillNet, batch: dict[str, torch.Tensor], generator: torch.Generator | None,
                  sign: float) -> tuple[torch.Tensor, dict[str, float]]:
        c, n = self.config, self.chunk
        h, k = c.history, c.history + c.context  # real frames: history, then the scored context
        dev = next(net.student.dit.parameters()).device
        gen_dev = generator.device if generator is not None else dev
        gen_step = int(net.updates) % c.generator_every == 0
        net.updates += 1
        frames = k + c.chunks * n
        trans = {key: batch[key][:, : frames - 1].long() for key in ACTION_KEYS}  # (B, frames - 1)
        seed = int(torch.randint(2**62, (), generator=generator, device=gen_dev))
        exits = torch.randint(c.steps, (c.chunks,), generator=generator, device=gen_dev).tolist()
        engine = self._engine(net.student, seed, dev)
        numpy = {key: a.cpu().numpy() for key, a in trans.items()}
        video = batch["frames"][:, :k].permute(0, 1, 3, 4, 2).cpu().numpy()  # (B, k, H, W, 3) uint8
        chunks = [{key: a[:, k - 1 + i * n: k - 1 + (i + 1) * n] for key, a in numpy.items()}
                  for i in range(c.chunks)]
        poses = chunk_poses = None
        if engine.memory.needs_poses:
            pose = batch["pose"].cpu().numpy()  # (B, L, 5)
            poses, chunk_poses = pose[:, :k], [pose[:, k + i * n: k + (i + 1) * n] for i in range(c.chunks)]
        gen = torch.cat(self_forcing_rollout(engine, video, {key: a[:, : k - 1] for key, a in numpy.items()},
                                             chunks, exits, grad=gen_step, context_poses=poses,
                                             chunk_poses=chunk_poses), dim=1)  # (B, G, C, h, w)
        memory = engine.last_context  # what the student saw from its memory on its last chunk
        net.student.train()
        # the scored window: the context (real, as committed) and the generated chunks
        ctx, s = self._context_in(net.student.encode(batch["frames"][:, h:k]), generator)
        acts = frame_actions({key: a[:, h: frames - 1] for key, a in trans.items()})  # (B, frames - h)
        k = c.context
        b, g = gen.shape[:2]
        t_ctx = torch.full((b, k), s, device=dev)

        def levels() -> torch.Tensor:  # (B, frames): context level, then one drawn level per clip
            t = c.t_min + (c.t_max - c.t_min) * torch.rand((b,), generator=generator, device=gen_dev).to(dev)
            return torch.cat([t_ctx, t[:, None].expand(b, g)], 1)

        def noisy(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # the generated frames at their level; the context stays as committed (already noised)
            x_t, eps = noised(x, t[:, k:], generator)
            return torch.cat([ctx, x_t], 1), eps

        metrics: dict[str, float] = {"generator_step": float(gen_step),
                                     "memory_frames": float(memory.num_frames if memory is not None else 0)}
        loss = torch.zeros((), device=dev)
        if gen_step:
            t = levels()
            x_t, _ = noisy(gen.detach(), t)
            with torch.no_grad():
                x0_real = x0_of(x_t, self._teacher_v(x_t, t, acts, k, memory), t)[:, k:]
                v_fake = net.fake(x_t, t, acts, memory=memory, memory_name=self.config.memory)
                x0_fake = x0_of(x_t, v_fake, t)[:, k:]
            loss_g, m = dmd_loss(gen, x0_real, x0_fake, sign)
            loss = loss + loss_g
            metrics.update(m, loss_dmd=float(loss_g.detach()))
        # the fake score learns the student's current distribution (flow matching on its samples)
        t = levels()
        x_t, eps = noisy(gen.detach(), t)
        # loss on the generated frames only
        v_fake = net.fake(x_t, t, acts, memory=memory, memory_name=self.config.memory)[:, k:]
        loss_c = critic_loss(v_fake, gen.detach(), eps)
        metrics["loss_critic"] = float(loss_c.detach())
        return loss + loss_c, metrics

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, max_batches: int = 8) -> dict[str, float]:
        """Teacher-forced next-frame PSNR of the student at each step count it can run and of the
        teacher (measured once) on the same val clips (infworld/distill/evaluate.py)."""
        from infworld.diffusion.samplers import SamplerConfig
        from infworld.distill.evaluate import distill_metrics
        from infworld.world import RolloutConfig

        if self.recipe.data.val_episodes == 0:
            return {}
        student = getattr(model, "module", model).student
        batches = [b for _, b in zip(range(max_batches), self.batches("val", self.recipe.train.batch_size,
                                                                      0, 0, 1), strict=False)]
        teacher_sampler = SamplerConfig(**{**self.teacher.model_config.get("sampler", {}),
                                           "cfg_scale": self.cfg_scale})
        cn = self.context_noise
        try:
            metrics = distill_metrics(
                student, self.teacher, batches, self.config.context, self.window,
                distilled_steps(self.config.steps),
                lambda s: RolloutConfig(chunk=1, sampler=student_sampler(s, self.shift), context_noise=cn),
                lambda: RolloutConfig(chunk=1, sampler=teacher_sampler, context_noise=cn), self._teacher_psnr)
        finally:
            student.train()
        self._teacher_psnr = metrics["teacher_next_frame_psnr"]
        return metrics


# export keys that legitimately differ between a student and its teacher
_EXTRA = ("sampler", "distilled_steps", "distilled_from")

register_task("distill", DistillConfig, DistillTask)
