"""Per-frame action conditioning for the world-model DiT.

Actions follow the unified schema of Infinite-World (arXiv 2602.02393, Sec. 3.3, see
``infworld/data/action_schema.py``): ``move`` and ``view`` are ids 0..9 (3 x 3 tri-states plus
"uncertain"), ``interact`` is an environment-specific id 0..N-1. Each field has its own embedder
and the per-frame action embedding is their sum; the DiT adds it to the timestep embedding of the
same frame (adaLN conditioning, as Wan2.1 does with its time embedding).

Alignment: frame ``f`` of a clip is conditioned on the action that led INTO it (transition
``f - 1``); frame 0 has no such action and gets the learned **null** action, the same vector that
classifier-free guidance dropout uses (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance").
A frame is null when any discrete id is :data:`NULL_ACTION` (-1) or any continuous value is NaN.

The embedders are pluggable: every field is an ``nn.Module`` mapping ``(B, F)`` ids or
``(B, F, d)`` values to ``(B, F, D)``. Continuous fields (e.g. mouse deltas, or VRAG's global
state) are declared in :class:`ActionConfig` ``continuous`` and need no change to the DiT.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from infworld.data.action_schema import NUM_MOVE, NUM_VIEW
from infworld.errors import ConfigError, DataError

NULL_ACTION = -1
DISCRETE_FIELDS = ("move", "view", "interact")


@dataclass
class ActionConfig:
    """Action vocabulary sizes (ids include "uncertain") and optional continuous fields.

    ``num_interact = 0`` means "take it from the dataset" (``len(meta.interact_vocab)``); the world
    task resolves it before the model is built. ``continuous`` maps a field name to its width.
    """

    num_move: int = NUM_MOVE
    num_view: int = NUM_VIEW
    num_interact: int = 0
    continuous: dict[str, int] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"move": self.num_move, "view": self.num_view, "interact": self.num_interact}

    def check(self) -> None:
        for name, n in self.sizes().items():
            if n < 1:
                raise ConfigError(f"actions.num_{name}: expected >= 1 (resolved from the dataset), got {n}")
        for name, d in self.continuous.items():
            if name in DISCRETE_FIELDS or d < 1:
                raise ConfigError(f"actions.continuous.{name}: expected a new field name with width >= 1, "
                                  f"got {d}")


class DiscreteEmbedding(nn.Module):
    """Lookup table for one discrete field: ids (B, F) in 0..n-1 -> (B, F, D); null ids give zeros
    here (the encoder swaps in the null vector)."""

    def __init__(self, name: str, num: int, dim: int):
        super().__init__()
        self.name = name
        self.num = num
        self.table = nn.Embedding(num, dim)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if ids.dtype.is_floating_point:
            raise DataError(f"expected integer ids, got dtype {ids.dtype}", field=self.name)
        if ids.numel() and int(ids.max()) >= self.num:
            raise DataError(f"action id {int(ids.max())} out of range 0..{self.num - 1} "
                            f"(or {NULL_ACTION} for null)", field=self.name)
        if ids.numel() and int(ids.min()) < NULL_ACTION:
            raise DataError(f"action id {int(ids.min())} out of range 0..{self.num - 1} "
                            f"(or {NULL_ACTION} for null)", field=self.name)
        null = ids == NULL_ACTION  # (B, F)
        return self.table(ids.clamp(min=0)), null


class ContinuousEmbedding(nn.Module):
    """Two-layer MLP for one continuous field: (B, F, d) -> (B, F, D); NaN rows are null."""

    def __init__(self, name: str, width: int, dim: int):
        super().__init__()
        self.name = name
        self.width = width
        self.mlp = nn.Sequential(nn.Linear(width, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if values.shape[-1] != self.width:
            raise DataError(f"expected last dimension {self.width}, got shape {tuple(values.shape)}",
                            field=self.name)
        null = torch.isnan(values).any(dim=-1)  # (B, F)
        return self.mlp(torch.nan_to_num(values.float())), null


class ActionEncoder(nn.Module):
    """Sum of per-field embeddings, replaced by a learned null vector on null frames."""

    def __init__(self, cfg: ActionConfig, dim: int):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.fields = nn.ModuleDict()
        for name, n in cfg.sizes().items():
            self.fields[name] = DiscreteEmbedding(name, n, dim)
        for name, width in cfg.continuous.items():
            self.fields[name] = ContinuousEmbedding(name, width, dim)
        self.null = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.null, std=0.02)

    def forward(self, actions: Mapping[str, torch.Tensor], batch: int, frames: int) -> torch.Tensor:
        """``actions[name]``: (B, F) ids or (B, F, d) values -> (B, F, D)."""
        out = self.null.new_zeros(batch, frames, self.null.shape[0])
        null = torch.zeros(batch, frames, dtype=torch.bool, device=out.device)
        for name, embed in self.fields.items():
            if name not in actions:
                raise DataError(f"missing action field; the model expects {sorted(self.fields)}", field=name)
            value = actions[name]
            if tuple(value.shape[:2]) != (batch, frames):
                raise DataError(f"expected leading shape ({batch}, {frames}), got {tuple(value.shape)}",
                                field=name)
            e, n = embed(value)
            out = out + e
            null = null | n
        return torch.where(null[..., None], self.null.to(out.dtype), out)


def frame_actions(transitions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-transition actions (B, L-1[, d]) -> per-frame actions (B, L[, d]) with frame 0 null.

    Transition ``i`` goes from frame ``i`` to ``i + 1``, so it conditions frame ``i + 1``.
    """
    out = {}
    for name, a in transitions.items():
        pad = torch.full_like(a[:, :1], NULL_ACTION if not a.dtype.is_floating_point else float("nan"))
        out[name] = torch.cat([pad, a], dim=1)
    return out


def null_like(actions: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same shapes, every frame null (the unconditional branch of classifier-free guidance)."""
    return {name: torch.full_like(a, NULL_ACTION if not a.dtype.is_floating_point else float("nan"))
            for name, a in actions.items()}


def drop_actions(actions: Mapping[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
    """Null every frame of the clips where ``drop`` (B,) is True (CFG dropout during training)."""
    nulls = null_like(actions)
    out = {}
    for name, a in actions.items():
        mask = drop.view(-1, *([1] * (a.dim() - 1)))  # (B, 1[, 1])
        out[name] = torch.where(mask, nulls[name], a)
    return out
