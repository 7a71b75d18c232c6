"""Held-out figures of a distillation run: teacher-forced next-frame PSNR through the inference engine.

Each val clip's frames ``context .. L-1`` are predicted one at a time from the real frames before them
(``infworld.streaming.teacher_forcing``, chunk 1), by the student at each step count it can run and by
the teacher at its own settings, so the log shows what distillation costs per frame. PSNR rewards a
blurry mean prediction, so it is a sanity figure: the quality comparison that counts is the bench
(``infworld bench``: IDM accuracy, revisit PSNR, FD-ours; docs/play.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch


def next_frame_psnr(net: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], context: int,
                    window: int, rollout: object, device: torch.device) -> float:
    """Mean PSNR (dB) of ``net``'s teacher-forced predictions of frames ``context..`` of each clip.

    ``batches``: val batches (frames (B, L, 3, H, W) uint8, per-transition actions (B, L - 1));
    ``rollout``: the :class:`~infworld.world.RolloutConfig` (sampler, steps) to predict with.
    """
    from infworld.eval.video import psnr
    from infworld.memory.registry import make_memory
    from infworld.streaming import teacher_forcing
    from infworld.train.tasks.world import ACTION_KEYS
    from infworld.world import WorldModel

    engine = WorldModel(net, make_memory("window", budget=window), rollout, device=device)
    out: list[np.ndarray] = []
    for batch in batches:
        gt = batch["frames"].permute(0, 1, 3, 4, 2).numpy()  # (B, L, H, W, 3)
        acts = {key: batch[key].numpy() for key in ACTION_KEYS}
        pred = teacher_forcing(engine, gt, acts, context)  # (B, L - context, H, W, 3)
        out.extend(psnr(pred[:, i], gt[:, context + i]) for i in range(pred.shape[1]))
    return float(np.mean(np.concatenate(out)))


def distill_metrics(student: torch.nn.Module, teacher: torch.nn.Module, batches: Sequence[dict],
                    context: int, window: int, step_counts: Sequence[int], student_rollout, teacher_rollout,
                    teacher_psnr: float | None) -> dict[str, float]:
    """``next_frame_psnr_{s}step`` for each student step count and ``teacher_next_frame_psnr``
    (``teacher_psnr`` when already measured: the teacher is frozen). ``student_rollout(s)`` and
    ``teacher_rollout()`` build the rollout configs."""
    device = next(student.dit.parameters()).device
    metrics = {f"next_frame_psnr_{s}step": next_frame_psnr(student, batches, context, window,
                                                          student_rollout(s), device) for s in step_counts}
    if teacher_psnr is None:
        teacher_psnr = next_frame_psnr(teacher.to(device), batches, context, window, teacher_rollout(),
                                       device)
    metrics["teacher_next_frame_psnr"] = teacher_psnr
    return metrics
