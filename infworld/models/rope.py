"""3D rotary position embedding over (time, height, width) for video tokens.

Rotary embedding (RoPE: Su et al., "RoFormer", 2021, eq. 34) rotates each pair of query/key
channels by an angle ``position * theta ** (-2i / d)``, so that the attention score of two tokens
depends only on their relative position. For video, Wan2.1 splits the head dimension into three
parts, one per axis: ``d_h = d_w = 2 * (head_dim // 6)`` channels for height and width and the rest
``d_t`` for time. We follow that split.

Because scores depend only on position differences, keys can be cached **un-rotated** and rotated
at read time with positions relative to the current attention window (see kvcache.py): generated
frame 10,000 then uses the same small angles as frame 10 did, with no precision loss and no
positions beyond the trained range.
"""

from __future__ import annotations

import torch
from torch import nn

from infworld.errors import ConfigError


def axis_split(head_dim: int) -> tuple[int, int, int]:
    """Channels per axis ``(d_t, d_h, d_w)``, each even, summing to ``head_dim`` (Wan2.1 split)."""
    if head_dim % 2 or head_dim < 6:
        raise ConfigError(f"rope: head_dim must be even and >= 6, got {head_dim}")
    d_hw = 2 * (head_dim // 6)
    return head_dim - 2 * d_hw, d_hw, d_hw


class Rope3D(nn.Module):
    """Angle tables for tokens laid out frame by frame, row-major inside a frame."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim = head_dim
        for name, d in zip(("t", "h", "w"), axis_split(head_dim), strict=True):
            inv = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
            # non-persistent: derived from the config, so not part of checkpoints
            self.register_buffer(f"inv_{name}", inv, persistent=False)

    def cos_sin(self, frame_pos: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotation tables for ``F`` frames of ``gh x gw`` tokens at time positions ``frame_pos`` (F,).

        Returns ``cos, sin`` of shape (F * gh * gw, head_dim / 2), in float32.
        """
        gh, gw = grid
        pos = frame_pos.to(torch.float64)
        a_t = pos[:, None] * self.inv_t  # (F, d_t/2)
        a_h = torch.arange(gh, dtype=torch.float64, device=pos.device)[:, None] * self.inv_h  # (gh, d_h/2)
        a_w = torch.arange(gw, dtype=torch.float64, device=pos.device)[:, None] * self.inv_w  # (gw, d_w/2)
        f = pos.shape[0]
        spatial = torch.cat([a_h[:, None, :].expand(gh, gw, -1), a_w[None, :, :].expand(gh, gw, -1)], dim=-1)
        spatial = spatial.reshape(1, gh * gw, -1).expand(f, -1, -1)  # (F, N, (d_h + d_w)/2)
        temporal = a_t[:, None, :].expand(-1, gh * gw, -1)  # (F, N, d_t/2)
        ang = torch.cat([temporal, spatial], dim=-1).reshape(f * gh * gw, -1)  # (F*N, hd/2)
        return ang.cos().float(), ang.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` (B, H, T, hd) by the angles of ``cos``/``sin`` (T, hd/2)."""
    pairs = x.unflatten(-1, (-1, 2))  # (B, H, T, hd/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    cos = cos.to(x.dtype)
    sin = sin.to(x.dtype)
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.flatten(-2)
