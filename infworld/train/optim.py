"""AdamW parameter groups and the LR schedule (linear warmup, then cosine decay) of the trainer."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from infworld.errors import ConfigError
from infworld.train.recipe import OptimConfig

# Modules whose weights are never decayed (besides every parameter with ndim < 2: biases, gains).
NO_DECAY_MODULES: tuple[type, ...] = (nn.Embedding, nn.EmbeddingBag, nn.LayerNorm, nn.GroupNorm,
                                      nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
if hasattr(nn, "RMSNorm"):
    NO_DECAY_MODULES += (nn.RMSNorm,)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups over the trainable parameters: decay matrices, not norms/biases/embeddings.

    A model may also list parameter names to exempt with a ``no_weight_decay() -> set[str]`` method
    (e.g. learned positional embeddings stored as bare ``nn.Parameter``).
    """
    exempt = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay, seen = [], [], set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            # row-frozen tensors (train/finetune.py) too: decay would move their frozen rows
            frozen_rows = getattr(p, "_frozen_rows", False)
            if p.ndim < 2 or isinstance(module, NO_DECAY_MODULES) or full in exempt or frozen_rows:
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier at 0-based ``step``: linear warmup to 1, then half-cosine down to ``min_lr_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: OptimConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    groups = param_groups(model, cfg.weight_decay)
    if not groups:
        raise ConfigError("the model has no parameter with requires_grad=True: nothing to train")
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, cfg.warmup_steps, total_steps, cfg.min_lr_ratio))
    return opt, sched
