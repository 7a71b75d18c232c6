"""The trainable pair of the ``distill`` task (infworld/train/tasks/distill.py): a few-step causal
student and the fake score network that DMD trains online on the student's samples (Self-Forcing,
Huang et al. 2025, Sec. 3.3), both world networks; and the loader for their source exports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from infworld.errors import CheckpointError, ConfigError
from infworld.models.worldnet import WorldNet


class DistillNet(nn.Module):
    """The trainable pair: the few-step ``student`` and the ``fake`` score (both world networks).

    ``forward(fn)`` returns ``fn(self)``: the task computes its whole loss inside one call, so a DDP
    wrapper sees one forward per step. ``updates`` counts loss calls (a buffer: checkpoints carry it,
    so a resumed run keeps the generator/critic alternation).
    """

    def __init__(self, student: WorldNet, fake: WorldNet):
        super().__init__()
        self.student, self.fake = student, fake
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, fn: Callable[[DistillNet], Any]) -> Any:
        return fn(self)

    def no_weight_decay(self) -> set[str]:
        return {name for name, _ in self.named_parameters() if name.endswith(".modulation")}


def load_world(path: str, what: str) -> WorldNet:
    """The world model export at ``path`` (teacher or student source); ``what`` names the recipe
    field (``model.<what>``) in the error when it is missing or not a world model."""
    from infworld.models.loading import load_model

    try:
        net, _ = load_model(path, map_location="cpu")
    except CheckpointError as exc:
        raise ConfigError(f"model.{what}: {exc}") from exc
    if not hasattr(net, "dit") or not hasattr(net, "model_config"):
        raise ConfigError(f"model.{what}: {path!r} is not a world model export")
    return net
