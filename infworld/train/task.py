"""The contract between the generic trainer and what it trains.

The trainer (``infworld/train/trainer.py``) knows nothing about tokenizers or world models: it
builds a :class:`Task` from a recipe, asks it for the model, the data and the loss, and handles
everything else (optimizer, schedule, EMA, DDP, checkpoints, logs). A task is registered by name
with :func:`register_task` and its model-config dataclass; a recipe (``recipes/*.yaml``) names the
task and overrides fields of that dataclass.

Tasks today: ``tokenizer`` (infworld/train/tasks/tokenizer.py) and ``world``
(infworld/train/tasks/world.py, the DiT with flow matching and diffusion forcing).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn

from infworld.errors import ConfigError


class Task(Protocol):
    """What the trainer needs from a trainable thing.

    ``config`` is the task's model-config dataclass instance (resolved from the recipe);
    ``recipe`` is the whole resolved recipe (data paths, clip length, batch size, ...).
    """

    name: str

    def build_model(self) -> nn.Module:
        """The trainable module, on CPU, in float32 (the trainer moves and wraps it)."""

    def batches(self, split: str, batch_size: int, seed: int, rank: int, world_size: int,
                start_sample: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """An endless, deterministic iterator of batches for this rank.

        Sample ``i`` of rank ``r`` depends only on ``(seed, r, i)`` so that resuming at
        ``start_sample`` reproduces the exact data order (the trainer stores it in checkpoints).
        """

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor],
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise, plus float metrics to log."""

    def evaluate(self, model: nn.Module, max_batches: int = 8) -> dict[str, float]:
        """Held-out metrics (e.g. reconstruction PSNR, next-frame PSNR) on the ``val`` split."""

    def export_config(self) -> dict[str, Any]:
        """JSON-able config that rebuilds the model for inference (saved in config.json)."""

    @classmethod
    def build_inference_model(cls, model_config: dict[str, Any]) -> nn.Module:
        """Rebuild the (untrained) module from ``export_config()``'s output, ready for
        ``load_state_dict`` of the exported safetensors weights. No data, no recipe needed."""


_TASKS: dict[str, tuple[type, type]] = {}


def register_task(name: str, config_cls: type, task_cls: type) -> None:
    """Register ``task_cls(config, recipe)`` under ``name`` with its model-config dataclass."""
    _TASKS[name] = (config_cls, task_cls)


def get_task(name: str) -> tuple[type, type]:
    # Import the built-in tasks lazily so that registering never imports torch-heavy code early.
    import infworld.train.tasks  # noqa: F401

    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {sorted(_TASKS)}")
    return _TASKS[name]
