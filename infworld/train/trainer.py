"""The generic trainer: any registered :class:`~infworld.train.task.Task`, one loop.

It knows nothing about tokenizers or world models. From a resolved recipe it builds the task and
its module, then runs, in order, every step:

1. fetch the next batch of this rank (``Task.batches`` is deterministic given ``start_sample``),
2. ``Task.loss`` under autocast (bf16 on CUDA by default, fp32 on CPU), backward,
3. clip the global gradient norm, AdamW step, LR schedule step (linear warmup, cosine decay),
4. update the EMA of the trainable parameters,
5. log (rank 0: CSV, TensorBoard, tqdm), evaluate the EMA weights every ``eval_every`` steps,
   checkpoint every ``ckpt_every`` steps, and stop at ``train.steps`` or when the wall-clock
   budget ``max_minutes`` is spent (with a final evaluation and checkpoint either way).

Data parallelism is applied from outside (see distributed.py): ``batch_size`` is per rank. Under
FSDP (fsdp.py) the model, optimizer and EMA are sharded, evaluation runs on every rank on gathered
weights, and checkpoints are sharded folders (dcp_checkpoint.py).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.data.episode import atomic_write_json
from infworld.errors import CheckpointError, ConfigError
from infworld.train import checkpoint as ckpt
from infworld.train import dcp_checkpoint as dcp_ckpt
from infworld.train.distributed import (
    DistInfo,
    any_rank,
    check_replicas_in_sync,
    gather_to_main,
    init_distributed,
    parallelize,
    shutdown,
)
from infworld.train.ema import EMA
from infworld.train.fsdp import full_value, gathered, sync_buffers
from infworld.train.logging import RunLogger
from infworld.train.optim import build_optimizer, lr_factor, param_groups  # noqa: F401 (re-exported)
from infworld.train.recipe import Recipe, recipe_to_dict, save_recipe
from infworld.train.session import GracefulStop, LogWindow
from infworld.train.task import get_task


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """One training session of ``recipe`` on this rank (see the module docstring for the loop)."""

    def __init__(self, recipe: Recipe, info: DistInfo, progress: bool | None = None):
        self.info = info
        self.notes: list[str] = []
        self.sharded = recipe.train.parallel == "fsdp"
        fsdp_ac = False  # activation checkpointing applied by FSDP, for a model that cannot do it itself
        if recipe.train.grad_checkpointing:
            fields = {f.name for f in dataclasses.fields(recipe.model)}
            if "grad_checkpointing" in fields:
                model_cfg = dataclasses.replace(recipe.model, grad_checkpointing=True)
                recipe = dataclasses.replace(recipe, model=model_cfg)
            elif self.sharded:
                fsdp_ac = True
            else:
                self.notes.append(f"train.grad_checkpointing ignored: {type(recipe.model).__name__} has no "
                                  "grad_checkpointing field")
        self.recipe = recipe
        self.cfg = cfg = recipe.train
        self.progress = sys.stderr.isatty() if progress is None else progress
        # Same seed on every rank so the replicas start identical, then per-rank streams.
        ckpt.seed_all(cfg.seed)
        _, task_cls = get_task(recipe.task)
        self.task = task_cls(recipe.model, recipe)
        self.model: nn.Module = self.task.build_model().to(info.device)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and info.device.type == "cuda")
        # A task whose steps leave some trainable parameters without gradient sets the class
        # attribute ``find_unused_parameters = True`` (DDP then searches the graph each step).
        # FSDP shards self.model in place: the EMA and the optimizer are built on the shards after.
        self.wrapped = parallelize(self.model, info, cfg.parallel,
                                   find_unused_parameters=getattr(self.task, "find_unused_parameters", False),
                                   fsdp_blocks=cfg.fsdp_blocks, bf16=self.bf16,
                                   activation_checkpointing=fsdp_ac, notes=self.notes)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer, self.scheduler = build_optimizer(self.model, recipe.optim, cfg.steps)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        ckpt.seed_all(cfg.seed + 1_000_003 * info.rank)
        self.generator = torch.Generator(device=info.device).manual_seed(cfg.seed * 7919 + info.rank)
        with ckpt.isolated_rng():
            ckpt.seed_all(cfg.seed + 2_000_003 * (info.rank + 1))
            self.data_rng = ckpt.capture_rng()
        self.step = 0
        self.samples_seen = 0  # per rank
        self.metrics: dict[str, float] = {}  # last evaluation
        self.stop_reason = ""

    # -- helpers ---------------------------------------------------------------------------

    def autocast(self) -> AbstractContextManager:
        if self.bf16:
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _next_batch(self, it: Iterator[dict[str, torch.Tensor]]) -> dict[str, Any]:
        # Data loading runs on its own RNG state so the training streams never depend on it.
        train_state = ckpt.capture_rng()
        ckpt.restore_rng(self.data_rng)
        try:
            batch = next(it)
        finally:
            self.data_rng = ckpt.capture_rng()
            ckpt.restore_rng(train_state)
        return _to_device(batch, self.info.device)

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, numbered: bool) -> None:
        """Write the full state, or under FSDP a sharded folder (collective: every rank sends its RNG
        states to rank 0)."""
        rng = gather_to_main({"train": ckpt.capture_rng(self.generator), "data": self.data_rng}, self.info)
        ws, d = self.info.world_size, ckpt.checkpoint_dir(self.run_dir)
        meta = {"step": self.step, "task": self.recipe.task, "scheduler": self.scheduler.state_dict(),
                "rng": {"world_size": ws, "ranks": rng}, "samples_seen": {"per_rank": self.samples_seen,
                                                                           "world_size": ws},
                "metrics": dict(self.metrics), "recipe": json.dumps(recipe_to_dict(self.recipe))}
        if self.sharded:  # every save is a step folder; last.pt points to it
            sync_buffers([self.model, self.ema.buffers])
            dcp_ckpt.save_sharded(d, self.model, self.optimizer, self.ema, meta, self.info)
            return
        if not self.info.is_main:
            return
        state = {**meta, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if numbered:
            path = ckpt.save_checkpoint(d / ckpt.step_name(self.step), state)
            ckpt.link_or_copy(path, d / ckpt.LAST)
        else:
            ckpt.save_checkpoint(d / ckpt.LAST, state)

    def load(self, path: Path) -> dict[str, Any]:
        """Restore everything but the RNG streams (restored after the data iterator is built)."""
        sharded_dir = self.sharded and path.is_dir()
        state = dcp_ckpt.load_meta(path) if sharded_dir else ckpt.load_checkpoint(path)
        changes = ckpt.check_resumable(path, state["recipe"], recipe_to_dict(self.recipe))
        for key, (old, new) in changes.items():
            self.notes.append(f"resume: {key} changed from {old!r} to {new!r}")
        try:
            if self.sharded:
                dcp_ckpt.load_sharded(path, state, self.model, self.optimizer, self.ema)
            else:
                self.model.load_state_dict(state["model"])
                self.ema.load_state_dict(state["ema"])
                self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: state does not fit the model of recipe "
                                  f"{self.recipe.name!r} ({exc})") from exc
        self.step = int(state["step"])
        self.metrics = dict(state.get("metrics") or {})
        seen = state["samples_seen"]
        if seen["world_size"] != self.info.world_size:
            # Per-rank streams cannot be re-split exactly; keep the global sample count.
            self.notes.append(f"resume: world size changed {seen['world_size']} -> {self.info.world_size}; "
                              "data order and RNG streams restart (not bitwise-exact)")
            self.samples_seen = seen["per_rank"] * seen["world_size"] // self.info.world_size
        else:
            self.samples_seen = int(seen["per_rank"])
        return state

    def _restore_rng(self, state: dict[str, Any]) -> None:
        rng = state["rng"]
        if rng["world_size"] == self.info.world_size:
            mine = rng["ranks"][self.info.rank]
            ckpt.restore_rng(mine["train"], self.generator)
            self.data_rng = mine["data"]
        else:
            ckpt.seed_all(self.cfg.seed + 1_000_003 * self.info.rank + self.step)

    # -- evaluation ------------------------------------------------------------------------

    def evaluate(self, logger: RunLogger) -> None:
        """Task metrics on the EMA weights, rank 0 only (every rank under FSDP, on gathered weights),
        without disturbing the training RNG."""
        if not (self.info.is_main or self.sharded):
            return
        with ckpt.isolated_rng(self.generator), self.ema.swapped(self.model), torch.no_grad(), \
                self.autocast(), gathered(self.model):
            self.model.eval()
            try:
                metrics = self.task.evaluate(self.model, max_batches=self.cfg.eval_batches)
            finally:
                self.model.train()
        self.metrics = {k: float(v) for k, v in metrics.items()}
        logger.log(self.step, self.metrics, prefix="val")
        if self.metrics:
            shown = ", ".join(f"val/{k}={v:.4g}" for k, v in self.metrics.items())
            logger.message(f"step {self.step}: {shown}")

    def finalize(self) -> None:
        """End of a session: let the task recompute derived buffers of the EMA weights.

        Optional task hook ``calibrate(model)`` (e.g. the tokenizer's exact latent statistics).
        Only the EMA's copy changes: the raw model keeps its buffers, so resuming stays exact.
        """
        calibrate = getattr(self.task, "calibrate", None)
        if calibrate is None or not (self.info.is_main or self.sharded):
            return
        with ckpt.isolated_rng(self.generator), self.ema.swapped(self.model), torch.no_grad(), \
                self.autocast(), gathered(self.model):
            self.model.eval()
            try:
                calibrate(self.model)
            finally:
                self.model.train()
            self.ema.store_buffers(self.model)

    # -- the loop --------------------------------------------------------------------------

    def fit(self, resume: bool = False, until_step: int | None = None) -> Path:
        """Run this session (the loop of the module docstring) and return the run folder.

        Stops at ``train.steps``, at ``until_step``, when the time budget is spent or on SIGTERM /
        Ctrl-C; the last three end with a final evaluation and checkpoint.
        """
        cfg, info = self.cfg, self.info
        state = self._resume_state(resume)
        if info.is_main:
            save_recipe(self.recipe, self.run_dir / "recipe.json")
        logger = RunLogger(self.run_dir, enabled=info.is_main, total_steps=cfg.steps, start_step=self.step,
                           progress=self.progress)
        for note in self.notes:
            logger.message(note)
        with ckpt.isolated_rng():
            batches = self.task.batches("train", cfg.batch_size, cfg.seed, info.rank, info.world_size,
                                        start_sample=self.samples_seen)
        if state is not None:
            self._restore_rng(state)  # after the data iterator, which must not consume the streams
        stop_at = min(cfg.steps, until_step) if until_step is not None else cfg.steps
        stopper = GracefulStop()
        deadline = time.monotonic() + cfg.max_minutes * 60 if cfg.max_minutes else None
        t_start = time.monotonic()
        self.model.train()
        try:
            self._run_steps(batches, stop_at, stopper, deadline, logger)
        finally:
            logger.close()
            stopper.restore()
        if info.is_main:
            self._write_summary(time.monotonic() - t_start)
        return self.run_dir

    def _resume_state(self, resume: bool) -> dict[str, Any] | None:
        """The loaded checkpoint state when resuming (RNG streams not yet restored), else None.

        Raises CheckpointError when resuming finds no checkpoint, or a fresh start finds one.
        """
        last = ckpt.checkpoint_dir(self.run_dir) / ckpt.LAST
        source = dcp_ckpt.resume_source(last.parent)  # last.pt, or the newest sharded folder
        if resume:
            if source is None:
                raise CheckpointError(f"{last}: no checkpoint to resume (run without --resume to start)")
            return self.load(source)
        if source is not None:
            raise CheckpointError(f"{self.run_dir} already holds a checkpoint ({source}); pass --resume to "
                                  "continue it, or choose another --out")
        return None

    def _run_steps(self, batches: Iterator[dict[str, torch.Tensor]], stop_at: int, stopper: GracefulStop,
                   deadline: float | None, logger: RunLogger) -> None:
        """Train until step ``stop_at`` or an agreed stop, setting ``stop_reason``."""
        cfg, info = self.cfg, self.info
        window = LogWindow()
        while self.step < stop_at:
            # 1-4. batch, loss, backward, clip, optimizer / schedule / EMA steps
            loss_value, grad_norm, lr, metrics = self._train_step(self._next_batch(batches))
            stop = self._agree_to_stop(loss_value, stopper, deadline)
            if self.step == 1:
                check_replicas_in_sync(self.model, info)
            # 5. log, evaluate, checkpoint
            window.add({"loss": loss_value, "grad_norm": float(grad_norm), **metrics})
            done = stop or self.step >= stop_at
            if self.step % cfg.log_every == 0 or done:
                window.flush(self.step, lr, logger, info)
            self._evaluate_and_save(done, logger)
            if stop:
                self.stop_reason = stopper.reason or f"time budget of {cfg.max_minutes} min reached"
                logger.message(f"stopping at step {self.step}: {self.stop_reason}")
                return
        self.stop_reason = "reached train.steps" if self.step >= cfg.steps else f"reached step {stop_at}"

    def _train_step(self, batch: dict[str, Any]) -> tuple[float, torch.Tensor, float, dict[str, Any]]:
        """One optimizer step on ``batch``: returns (loss, gradient norm, the LR it used, task metrics)."""
        with self.autocast():
            loss, metrics = self.task.loss(self.wrapped, batch, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # clip_grad_norm_ with max_norm=inf only measures the norm (for logging).
        clip = self.recipe.optim.grad_clip if self.recipe.optim.grad_clip > 0 else math.inf
        grad_norm = full_value(torch.nn.utils.clip_grad_norm_(self.params, clip))
        lr = self.optimizer.param_groups[0]["lr"]  # the LR this step used
        self.optimizer.step()
        self.scheduler.step()
        self.ema.update(self.model)
        self.step += 1
        self.samples_seen += self.cfg.batch_size
        return float(loss.detach()), grad_norm, lr, metrics

    def _agree_to_stop(self, loss_value: float, stopper: GracefulStop, deadline: float | None) -> bool:
        """Whether any rank wants to stop; raises ConfigError if any rank's loss is not finite."""
        bad = not math.isfinite(loss_value)
        timed_out = stopper.requested or (deadline is not None and time.monotonic() > deadline)
        # One collective per step: all ranks agree on failures and on stopping.
        bad, stop = any_rank([bad, timed_out], self.info)
        if bad:
            raise ConfigError(f"loss is not finite at step {self.step} (this rank: {loss_value}); "
                              "lower optim.lr or set optim.grad_clip")
        return stop

    def _evaluate_and_save(self, done: bool, logger: RunLogger) -> None:
        """Calibrate (last step only), evaluate and checkpoint when this step is due for them."""
        cfg = self.cfg
        if done:
            self.finalize()
        if (cfg.eval_every and self.step % cfg.eval_every == 0) or done:
            self.evaluate(logger)
        numbered = bool(cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or self.step == cfg.steps
        if numbered or done:
            check_replicas_in_sync(self.model, self.info)
            self.save(numbered=numbered)

    def _write_summary(self, seconds: float) -> None:
        """``summary.json``: where and why this session stopped, and its last evaluation."""
        atomic_write_json(self.run_dir / "summary.json", {
            "recipe": self.recipe.name, "task": self.recipe.task, "step": self.step,
            "steps": self.cfg.steps, "world_size": self.info.world_size,
            "samples_seen_per_rank": self.samples_seen, "minutes": seconds / 60,
            "stop_reason": self.stop_reason, "metrics": self.metrics,
        })


def train(recipe: Recipe, resume: bool = False, until_step: int | None = None,
          progress: bool | None = None) -> Path:
    """Train ``recipe`` (single process, or one rank under torchrun) and return the run folder.

    ``until_step`` ends this session early at that global step (the LR schedule still spans
    ``train.steps``), e.g. to train in chunks with ``resume=True``.
    """
    info = init_distributed(recipe.train.device, recipe.train.parallel)
    trainer: Trainer | None = None
    try:
        trainer = Trainer(recipe, info, progress=progress)
        return trainer.fit(resume=resume, until_step=until_step)
    finally:
        # The DDP wrapper's reducer holds the process group (and gloo's worker threads) alive.
        # Free it, and any reference cycle around it, while the interpreter is fully alive, so the
        # group is torn down here and not during interpreter finalisation (where gloo's threads can
        # abort the process: "terminate called without an active exception").
        del trainer
        gc.collect()
        shutdown(info)
