"""Checked conversion of a caller's actions and poses into the rollout engine's tensors.

:class:`~infworld.world.WorldModel` takes actions and poses from users (play page, gym adapter,
CLI, Python API) as lists or arrays; these functions turn them into tensors of the rollout's batch
shape, or raise a typed error that names the field and what was expected. A single rollout
(batch 1) may leave out the batch dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from infworld.data.action_schema import check_action_ids
from infworld.errors import DataError, MemoryConfigError
from infworld.models.action import NULL_ACTION, ActionConfig


def null_actions(acfg: ActionConfig, batch: int, n: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Actions (B, n[, d]) that say "unknown": NULL_ACTION ids, NaN continuous values (frame 0's)."""
    out = {name: torch.full((batch, n), NULL_ACTION, dtype=torch.long, device=device)
           for name in acfg.sizes()}
    for name, width in acfg.continuous.items():
        out[name] = torch.full((batch, n, width), float("nan"), device=device)
    return out


def check_actions(acfg: ActionConfig, actions: Mapping[str, Any], batch: int, n: int,
                  device: torch.device) -> dict[str, torch.Tensor]:
    """User actions as tensors (B, n[, d]); ids in 0..size - 1 (or NULL_ACTION), every field present."""
    expected = list(acfg.sizes()) + list(acfg.continuous)
    unknown = sorted(set(actions) - set(expected))
    if unknown:
        raise DataError(f"unknown action field(s) {unknown}; the model expects {expected}", field="actions")
    out = {}
    for name in expected:
        if name not in actions:
            raise DataError(f"missing action field; the model expects {expected}", field=name)
        a = torch.as_tensor(np.asarray(actions[name]))
        cont = name in acfg.continuous
        a = a.float() if cont else a.long()
        if a.dim() == (2 if cont else 1) and batch == 1:
            a = a[None]
        if tuple(a.shape[:2]) != (batch, n):
            raise DataError(f"expected shape ({batch}, {n}), got {tuple(a.shape)}", field=name)
        if not cont and a.numel():
            ids = a.numpy()
            # NULL_ACTION ("unknown", as for frame 0) is also accepted from callers
            check_action_ids(ids[ids != NULL_ACTION], acfg.sizes()[name], name, whose="the model's")
        out[name] = a.to(device)
    return out


def check_poses(poses: Any, batch: int, n: int, device: torch.device, memory_name: str,
                needs_poses: bool) -> torch.Tensor | None:
    """Camera poses (B, n, 5) = (x, y, z, yaw, pitch) as a tensor, or None when none are given and
    the memory ``memory_name`` does not need them (one that does gets a typed error saying how)."""
    if poses is None:
        if needs_poses:
            raise MemoryConfigError(f"memory {memory_name!r} needs camera poses: pass poses= "
                                    "(B, n, 5) to reset/step/observe, or build it with "
                                    "poses='dead_reckon' to integrate them from the actions")
        return None
    p = torch.as_tensor(np.asarray(poses), dtype=torch.float32)
    if p.dim() == 2 and batch == 1:
        p = p[None]
    if tuple(p.shape) != (batch, n, 5):
        raise DataError(f"expected poses ({batch}, {n}, 5), got {tuple(p.shape)}", field="poses")
    return p.to(device)
