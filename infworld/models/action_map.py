"""Spatial action conditioning: the action written into the tokens where it acts.

adaLN (dit.py) and the conv stem's action bias (latent_conv.py) give every place of a frame the
same action signal, so whatever an action does *at one place* (Crafter's ``do`` changes the cell
in front of the player, who always sits at the centre of the view) must be computed from a signal
that is the same everywhere. ``ActionMap`` adds a per-position action vector instead, at the conv
path's latent resolution (a Crafter cell is ~1.75 latent pixels; a DiT token is 4 x 4 of them):

    feat[b, f, :, p] += sum_k G[p, k] * W_k a[b, f]         (a: the action embedding, p: a latent pixel)

with K learned basis projections ``W_k`` (D -> W) and a learned per-position mixing ``G`` (P, K),
zero-initialised so a model finetuned with it starts exactly as its source. This is a low-rank
version of a per-position action embedding (P * W values per action); the "put the action where
it acts" lever of docs/crafter.md.
"""

from __future__ import annotations

import torch
from torch import nn


class ActionMap(nn.Module):
    """Per-position action features (B, F, P, W) from per-frame action embeddings (B, F, D)."""

    def __init__(self, dim: int, width: int, positions: int, rank: int):
        super().__init__()
        self.rank, self.width = rank, width
        self.proj = nn.Linear(dim, rank * width)
        self.mix = nn.Parameter(torch.zeros(positions, rank))  # (P, K); zero: starts as a no-op
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        b, f, _ = act.shape
        basis = self.proj(act).view(b, f, self.rank, self.width)  # (B, F, K, W)
        return torch.einsum("pk,bfkw->bfpw", self.mix.to(basis.dtype), basis)  # (B, F, P, W)
