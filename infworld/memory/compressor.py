"""HPMC's learned temporal compressor: ``factor`` memory latents -> one latent one level up.

Infinite-World (arXiv 2602.02393, Sec. 3.2, "Hierarchical Pose-free Memory Compressor") squeezes the
history into a fixed number of memory latents with a temporal encoder applied recursively: windows
of latents are compressed 4x, then the compressed latents are compressed again. The paper's encoder
is Conv3d + 3D ResBlocks with stride-2 temporal downsampling (two of them = 4x) and one
self-attention block, trained jointly with the DiT through the diffusion loss, without poses.

This is a CPU-sized version of the same idea. The ``factor`` input latents are stacked along the
channel axis (which is what a temporal convolution spanning the whole window does), run through a
few 3x3 residual conv blocks modulated (FiLM) by an embedding of the inputs' compression levels (a
latent that already summarises 64 frames is not read like a raw frame), and added as a residual to
the temporal mean of the inputs. The residual's output layer starts at zero, so an untrained
compressor is exactly temporal average pooling and training learns what to keep beyond the average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from infworld.errors import MemoryConfigError
from infworld.memory.base import check_int


@dataclass
class CompressorConfig:
    """Size of a :class:`TemporalCompressor`.

    channels:   latent channels C (from the tokenizer).
    hidden:     width of the conv stack.
    depth:      residual conv blocks.
    factor:     latents merged per call (4 in Infinite-World: 4x per level).
    max_levels: distinct level embeddings; deeper levels share the last one.
    level_dim:  width of each input's level embedding.
    """

    channels: int = 8
    hidden: int = 64
    depth: int = 2
    factor: int = 4
    max_levels: int = 16
    level_dim: int = 16

    def check(self, strategy: str = "hpmc") -> None:
        """Raise :class:`MemoryConfigError` naming the first bad field."""
        minimum = {"channels": 1, "hidden": 1, "depth": 0, "factor": 2, "max_levels": 1, "level_dim": 1}
        for name, lo in minimum.items():
            check_int(strategy, f"compressor {name}", getattr(self, name), lo)


def _groups(width: int) -> int:
    """GroupNorm groups: up to 8, dividing ``width``."""
    return math.gcd(width, 8)


class _Block(nn.Module):
    """Residual 3x3 conv block, FiLM-modulated by the level embedding: x + conv(silu(film(norm(x))))."""

    def __init__(self, hidden: int, cond: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(hidden), hidden)
        self.film = nn.Linear(cond, 2 * hidden)
        nn.init.zeros_(self.film.weight)  # start unmodulated: scale 1, shift 0
        nn.init.zeros_(self.film.bias)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # (B, hidden, 1, 1) each
        return x + self.conv(torch.nn.functional.silu(self.norm(x) * (1 + scale) + shift))


class TemporalCompressor(nn.Module):
    """``factor`` latents (B, factor, C, h, w) at levels (B, factor) -> one latent (B, C, h, w).

    Output = mean of the inputs + a zero-initialised learned residual (module docstring).
    """

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        c, hid, f = cfg.channels, cfg.hidden, cfg.factor
        self.level_embed = nn.Embedding(cfg.max_levels, cfg.level_dim)
        cond = f * cfg.level_dim  # each input's level embedding, in time order
        self.inp = nn.Conv2d(f * c, hid, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(hid, cond) for _ in range(cfg.depth))
        self.out_norm = nn.GroupNorm(_groups(hid), hid)
        self.out = nn.Conv2d(hid, c, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # untrained = temporal average pooling
        nn.init.zeros_(self.out.bias)

    def forward(self, latents: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if latents.dim() != 5 or tuple(latents.shape[1:3]) != (cfg.factor, cfg.channels):
            raise MemoryConfigError(f"hpmc compressor: expected latents (B, {cfg.factor}, {cfg.channels}, "
                                    f"h, w), got {tuple(latents.shape)}")
        b, f, c, h, w = latents.shape
        lv = levels.to(latents.device).long().clamp(0, cfg.max_levels - 1)  # (B, f)
        cond = self.level_embed(lv).flatten(1)  # (B, f * level_dim)
        x = self.inp(latents.reshape(b, f * c, h, w))  # time stacked on channels -> (B, hidden, h, w)
        for block in self.blocks:
            x = block(x, cond)
        x = self.out(torch.nn.functional.silu(self.out_norm(x)))  # (B, C, h, w), zero at init
        return latents.mean(dim=1) + x
