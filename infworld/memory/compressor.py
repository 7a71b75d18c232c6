"""HPMC's learned temporal compressor: ``factor`` memory latents -> one latent one level up.

Infinite-World (arXiv 2602.02393, Sec. 3.2, "Hierarchical Pose-free Memory Compressor") squeezes the
history into a fixed number of memory latents with a temporal encoder applied recursively: windows
of latents are compressed 4x, then the compressed latents are compressed again. The paper's encoder
is Conv3d + 3D ResBlocks with stride-2 temporal downsampling (two of them = 4x) and one
self-attention block, trained jointly with the DiT through the diffusion loss, without poses.

Two encoders (``encoder``), both CPU-sized and both added as a residual to the temporal mean of
the inputs, with a zero-initialised output layer (an untrained compressor is exactly temporal
average pooling; training learns what to keep beyond the average), both told each input's
compression level (a latent that already summarises 64 frames is not read like a raw frame):

* ``conv3d`` (memory v2, the paper's design): Conv3d over (time, h, w), then per halving of time a
  3D residual block and a stride-2 temporal Conv3d (two of them for the 4x factor), then one
  spatial self-attention block over the h x w positions, so a latent can move content across the
  frame (a turn shifts the view) before it is summarised. Level embeddings enter as a per-time-step
  bias after the first convolution.
* ``conv2d`` (exports made before v2): the inputs stacked along channels (a temporal convolution
  spanning the whole window) through 3x3 residual blocks FiLM-modulated by the level embeddings.
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
    encoder:    "conv3d" (temporal 3D encoder + attention) or "conv2d" (module docstring).
    heads:      attention heads of the conv3d encoder (must divide ``hidden``).
    """

    channels: int = 8
    hidden: int = 64
    depth: int = 2
    factor: int = 4
    max_levels: int = 16
    level_dim: int = 16
    encoder: str = "conv2d"
    heads: int = 4

    def check(self, strategy: str = "hpmc") -> None:
        """Raise :class:`MemoryConfigError` naming the first bad field."""
        minimum = {"channels": 1, "hidden": 1, "depth": 0, "factor": 2, "max_levels": 1, "level_dim": 1,
                   "heads": 1}
        for name, lo in minimum.items():
            check_int(strategy, f"compressor {name}", getattr(self, name), lo)
        if self.encoder not in ENCODERS:
            raise MemoryConfigError(f"memory {strategy!r}: compressor encoder must be one of "
                                    f"{list(ENCODERS)}, got {self.encoder!r}")
        if self.encoder == "conv3d":
            if self.factor & (self.factor - 1):
                raise MemoryConfigError(f"memory {strategy!r}: the conv3d encoder halves time until one "
                                        f"latent is left, so factor must be a power of 2, got {self.factor}")
            if self.hidden % self.heads:
                raise MemoryConfigError(f"memory {strategy!r}: compressor hidden {self.hidden} must be "
                                        f"divisible by heads {self.heads}")


ENCODERS = ("conv2d", "conv3d")


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


class _Block3d(nn.Module):
    """3D residual block over (time, h, w): x + conv(silu(norm(conv(silu(norm(x))))))."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(hidden), hidden)
        self.conv1 = nn.Conv3d(hidden, hidden, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(hidden), hidden)
        self.conv2 = nn.Conv3d(hidden, hidden, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, hidden, T, h, w)
        silu = torch.nn.functional.silu
        return x + self.conv2(silu(self.norm2(self.conv1(silu(self.norm1(x))))))


class _Encoder3d(nn.Module):
    """The conv3d encoder's residual (module docstring): (B, f, C, h, w) + level bias -> (B, hidden, h, w)."""

    def __init__(self, cfg: CompressorConfig):
        super().__init__()
        c, hid = cfg.channels, cfg.hidden
        self.inp = nn.Conv3d(c, hid, 3, padding=1)
        self.level_bias = nn.Linear(cfg.level_dim, hid)
        halvings = cfg.factor.bit_length() - 1  # factor = 2 ** halvings
        self.blocks = nn.ModuleList(_Block3d(hid) for _ in range(halvings))
        self.down = nn.ModuleList(nn.Conv3d(hid, hid, (2, 3, 3), stride=(2, 1, 1), padding=(0, 1, 1))
                                  for _ in range(halvings))
        self.attn_norm = nn.LayerNorm(hid)
        self.attn = nn.MultiheadAttention(hid, cfg.heads, batch_first=True)

    def forward(self, latents: torch.Tensor, level_emb: torch.Tensor) -> torch.Tensor:
        x = self.inp(latents.transpose(1, 2))  # (B, hidden, f, h, w)
        x = x + self.level_bias(level_emb).transpose(1, 2)[..., None, None]  # + (B, hidden, f, 1, 1)
        for block, down in zip(self.blocks, self.down, strict=True):
            x = down(block(x))  # time halves: f -> f / 2
        x = x[:, :, 0]  # (B, hidden, h, w): one time step left
        b, hid, h, w = x.shape
        tok = x.flatten(2).transpose(1, 2)  # (B, h * w, hidden)
        q = self.attn_norm(tok)
        tok = tok + self.attn(q, q, q, need_weights=False)[0]
        return tok.transpose(1, 2).reshape(b, hid, h, w)


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
        self.out_norm = nn.GroupNorm(_groups(hid), hid)
        self.out = nn.Conv2d(hid, c, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # untrained = temporal average pooling
        nn.init.zeros_(self.out.bias)
        if cfg.encoder == "conv3d":
            self.encoder = _Encoder3d(cfg)
            return
        cond = f * cfg.level_dim  # each input's level embedding, in time order
        self.inp = nn.Conv2d(f * c, hid, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(hid, cond) for _ in range(cfg.depth))

    def forward(self, latents: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if latents.dim() != 5 or tuple(latents.shape[1:3]) != (cfg.factor, cfg.channels):
            raise MemoryConfigError(f"hpmc compressor: expected latents (B, {cfg.factor}, {cfg.channels}, "
                                    f"h, w), got {tuple(latents.shape)}")
        # float32 even under bf16 autocast: the CPU bf16 Conv3d backward returns non-finite weight
        # gradients for ordinary inputs (measured; it ended a training run), and the module is small
        with torch.autocast(latents.device.type, enabled=False):
            return self._compress(latents.float(), levels)

    def _compress(self, latents: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        b, f, c, h, w = latents.shape
        lv = levels.to(latents.device).long().clamp(0, cfg.max_levels - 1)  # (B, f)
        emb = self.level_embed(lv)  # (B, f, level_dim)
        if cfg.encoder == "conv3d":
            x = self.encoder(latents, emb)  # (B, hidden, h, w)
        else:
            cond = emb.flatten(1)  # (B, f * level_dim)
            x = self.inp(latents.reshape(b, f * c, h, w))  # time stacked on channels -> (B, hidden, h, w)
            for block in self.blocks:
                x = block(x, cond)
        x = self.out(torch.nn.functional.silu(self.out_norm(x)))  # (B, C, h, w), zero at init
        return latents.mean(dim=1) + x
