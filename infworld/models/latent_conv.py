"""Residual conv blocks at latent resolution around the DiT's patchify/unpatchify.

Why: with patch size p a token covers p x p latent pixels (16 x 16 image pixels at the doom-tiny
sizes), but a ViZDoom turn moves the picture by about 8 image pixels per step: half a token. A
transformer that only sees whole tokens has to re-synthesise every token to express such a shift,
and in practice it learns to copy the last frame instead. A small conv net at latent resolution
that sees the noisy frame **and the frame before it** can express a sub-token shift directly
(DIAMOND, Alonso et al. 2024, conditions its U-Net on the previous frames stacked as channels for
the same reason; GameNGen, Valevski et al. 2024, concatenates past latents to the noisy input).

Layout (per frame f, shapes for one frame):

* stem: concat[x_t[f] (C), prev[f] (C), level plane of prev (1)] -> conv3x3 -> (W, h, w), plus a
  per-frame bias from the action embedding (the same as one-hot action planes through a 1x1 conv),
  then ``blocks_in`` residual blocks FiLM-modulated by the frame's conditioning vector;
* the stem features enter the tokens through a zero-initialised linear map of their p x p patches,
  so the transformer starts as if the stem were absent;
* head: the final tokens are mapped back to (W, h, w), added to the stem features (a U-Net skip),
  ``blocks_out`` residual blocks, then a zero-initialised conv3x3 to C channels that is **added** to
  the transformer's own velocity output.

**Action-conditioned shift** (``shift_kernel`` = K > 0): before the stem sees it, the previous
frame is convolved (depthwise, the same kernel for every channel) with a K x K kernel predicted from
the frame's action embedding and normalised by a softmax, so it is a convex mixture of the previous
frame shifted by up to (K - 1) / 2 latent pixels in each direction; it starts as the identity.
Composing a shift out of 3 x 3 convs and then discovering that the action selects it is a long way
for gradient descent; here the loss's gradient on each kernel weight is directly the correlation
of the error with one shifted copy of the previous frame, so the action's effect on the picture
(a turn pans it) is learned in hundreds of steps instead of never (docs/model.md, the ablation).
This is the discrete, action-indexed cousin of flow-warping the previous frame in video prediction
(e.g. Finn et al. 2016, "Unsupervised Learning for Physical Interaction through Video Prediction",
whose CDNA predicts per-step convolution kernels); nothing in it is specific to one environment.

**The unshifted previous frame too** (``raw_prev``): the kernel depends on the action alone, so
where the same key sometimes moves the picture and sometimes does not, the shifted copy is wrong
for part of the frame or part of the time: a Crafter move into a table does not scroll, and
Crafter's inventory bar and player sprite never scroll. With ``raw_prev`` the stem also sees the
previous frame as it was (through its own zero-initialised conv, so a model trained without it
starts unchanged), and the network can choose per place and per scene between the two copies.

``prev[f]`` is frame f - 1 of the same call as the network sees it (noisy at its own level during
diffusion-forcing training and inside a chunk; clean in the cache), and for the first frame the
caller's ``prev`` (the last cached frame when streaming) or "absent" (zeros at level 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from infworld.errors import ConfigError
from infworld.models.action_map import ActionMap


@dataclass
class LatentConvConfig:
    """Width of the latent-resolution conv path (0 = off: the pre-v2 architecture), residual blocks
    before and after the transformer, and GroupNorm groups."""

    width: int = 0
    blocks_in: int = 1
    blocks_out: int = 1
    groups: int = 8
    shift_kernel: int = 0  # K: action-predicted K x K shift kernel on the previous frame (0 = off, odd)
    raw_prev: bool = False  # the stem also sees the previous frame unshifted (a zero-init 3x3 conv)
    action_map: int = 0  # rank of per-latent-pixel action features in the stem (action_map.py); 0 = off

    @property
    def enabled(self) -> bool:
        return self.width > 0

    def check(self) -> None:
        if self.width < 0 or self.blocks_in < 0 or self.blocks_out < 0:
            raise ConfigError(f"dit.conv: width/blocks_in/blocks_out must be >= 0, got "
                              f"{self.width}/{self.blocks_in}/{self.blocks_out}")
        if self.shift_kernel < 0 or (self.shift_kernel and self.shift_kernel % 2 == 0):
            raise ConfigError(f"dit.conv.shift_kernel: expected 0 (off) or an odd size, got "
                              f"{self.shift_kernel}")
        if self.raw_prev and not self.shift_kernel:
            raise ConfigError("dit.conv.raw_prev: needs dit.conv.shift_kernel > 0 (without a shift the "
                              "stem already sees the previous frame unshifted)")
        if self.action_map < 0:
            raise ConfigError(f"dit.conv.action_map: expected a rank >= 0 (0 = off), got {self.action_map}")
        if self.width and (self.groups < 1 or self.width % self.groups):
            raise ConfigError(f"dit.conv.groups: {self.groups} must divide conv.width {self.width}")


class ResBlock(nn.Module):
    """GroupNorm -> FiLM -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3 (zero-init), residual."""

    def __init__(self, width: int, cond_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * width)
        for m in (self.conv2, self.film):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """h: (N, W, h, w), cond: (N, D) -> (N, W, h, w)."""
        scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)  # (N, W, 1, 1) each
        y = self.conv1(F.silu(self.norm1(h) * (1 + scale) + shift))
        return h + self.conv2(F.silu(self.norm2(y)))


class LatentConv(nn.Module):
    """The stem and head of the conv path (module docstring); the DiT calls :meth:`stem` before its
    transformer and :meth:`head` after it."""

    def __init__(self, cfg: LatentConvConfig, channels: int, patch: int, dim: int,
                 latent_size: tuple[int, int] = (0, 0)):
        super().__init__()
        cfg.check()
        self.cfg, self.patch = cfg, patch
        w = cfg.width
        self.stem_in = nn.Conv2d(2 * channels + 1, w, 3, padding=1)
        # a separate, zero-initialised conv rather than more stem_in channels, so that a model
        # trained without it loads unchanged (train/finetune.py: new modules keep their init)
        self.stem_raw = nn.Conv2d(channels, w, 3, padding=1) if cfg.raw_prev else None
        if self.stem_raw is not None:
            nn.init.zeros_(self.stem_raw.weight)
            nn.init.zeros_(self.stem_raw.bias)
        self.action_bias = nn.Linear(dim, w)
        # per-latent-pixel action features (zero-init mixing), so an action can act at one place
        if cfg.action_map and min(latent_size) < 1:
            raise ConfigError(f"dit.conv.action_map: needs the latent size, got {tuple(latent_size)}")
        self.action_map = ActionMap(dim, w, latent_size[0] * latent_size[1], cfg.action_map) \
            if cfg.action_map else None
        self.blocks_in = nn.ModuleList(ResBlock(w, dim, cfg.groups) for _ in range(cfg.blocks_in))
        self.to_tokens = nn.Linear(w * patch * patch, dim)  # stem features -> token update
        self.from_tokens = nn.Linear(dim, w * patch * patch)  # final tokens -> head features
        self.blocks_out = nn.ModuleList(ResBlock(w, dim, cfg.groups) for _ in range(cfg.blocks_out))
        self.norm_out = nn.GroupNorm(cfg.groups, w)
        self.out = nn.Conv2d(w, channels, 3, padding=1)
        for m in (self.to_tokens, self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)
        k = cfg.shift_kernel
        self.shift = nn.Linear(dim, k * k) if k else None  # action -> K*K kernel logits
        if self.shift is not None:
            nn.init.zeros_(self.shift.weight)
            with torch.no_grad():  # start as (almost) the identity: a peak at the centre tap
                self.shift.bias.fill_(0.0)
                self.shift.bias[k * k // 2] = 8.0

    def shifted(self, prev: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The previous frames moved by their action's kernel: prev (B, F, C, h, w), action (B, F, D)."""
        b, f, c, h, w = prev.shape
        k = self.cfg.shift_kernel
        logits = self.shift(action.reshape(b * f, -1)).float()  # (B*F, K*K)
        kern = torch.softmax(logits, dim=-1).to(prev.dtype)
        weight = kern.view(b * f, 1, 1, k, k).expand(b * f, c, 1, k, k).reshape(b * f * c, 1, k, k)
        # edge replication: a pan brings in content from beyond the border, the edge is the best guess
        padded = F.pad(prev.reshape(1, b * f * c, h, w), (k // 2,) * 4, mode="replicate")
        return F.conv2d(padded, weight, groups=b * f * c).view(b, f, c, h, w)

    @staticmethod
    def previous(x: torch.Tensor, t: torch.Tensor, prev: torch.Tensor | None, prev_t: torch.Tensor | None,
                 chain: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame before each frame and its noise level: (B, F, C, h, w), (B, F).

        x: (B, F, C, h, w) at levels t (B, F); prev: (B, 1, C, h, w) the frame before x[:, 0] at
        level prev_t (B, 1), None = absent (zeros at level 1). ``chain=False`` makes every frame's
        previous frame absent (memory frames, which are not consecutive in time).
        """
        b, f = x.shape[:2]
        absent = x.new_zeros(b, 1, *x.shape[2:])
        first = prev.to(x.dtype) if prev is not None else absent
        first_t = prev_t.to(t.dtype) if prev_t is not None else t.new_ones(b, 1)
        if not chain:
            return absent.expand(b, f, *x.shape[2:]), t.new_ones(b, f)
        return torch.cat([first, x[:, :-1]], dim=1), torch.cat([first_t, t[:, :-1]], dim=1)

    def stem(self, x: torch.Tensor, prev: torch.Tensor, prev_t: torch.Tensor, cond: torch.Tensor,
             action: torch.Tensor) -> torch.Tensor:
        """x, prev: (B, F, C, h, w); prev_t: (B, F); cond, action: (B, F, D) -> features (B*F, W, h, w)."""
        b, f, c, h, w = x.shape
        raw = prev
        if self.shift is not None:
            prev = self.shifted(prev, action)
        level = prev_t.reshape(b * f, 1, 1, 1).expand(b * f, 1, h, w).to(x.dtype)
        inp = torch.cat([x.reshape(b * f, c, h, w), prev.reshape(b * f, c, h, w), level], dim=1)
        feat = self.stem_in(inp) + self.action_bias(action.reshape(b * f, -1))[:, :, None, None]
        if self.stem_raw is not None:
            feat = feat + self.stem_raw(raw.reshape(b * f, c, h, w))
        if self.action_map is not None:
            amap = self.action_map(action)  # (B, F, h*w, W), latent pixels row-major
            feat = feat + amap.reshape(b * f, h, w, -1).permute(0, 3, 1, 2)
        cond = cond.reshape(b * f, -1)
        for blk in self.blocks_in:
            feat = blk(feat, cond)
        return feat

    def tokens(self, feat: torch.Tensor, b: int, f: int) -> torch.Tensor:
        """Stem features (B*F, W, h, w) -> token update (B, F, N, D)."""
        p = self.patch
        patches = F.pixel_unshuffle(feat, p)  # (B*F, W*p*p, h/p, w/p), channel-major like patchify
        out = self.to_tokens(patches.flatten(2).transpose(1, 2))  # (B*F, N, D)
        return out.reshape(b, f, *out.shape[1:])

    def head(self, feat: torch.Tensor, tokens: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Stem features (B*F, W, h, w), final tokens (B, F, N, D), cond (B, F, D) -> (B, F, C, h, w)."""
        b, f, n, _ = tokens.shape
        gh, gw = feat.shape[-2] // self.patch, feat.shape[-1] // self.patch
        up = self.from_tokens(tokens).reshape(b * f, gh, gw, -1).permute(0, 3, 1, 2)  # (B*F, W*p*p, gh, gw)
        h = feat + F.pixel_shuffle(up, self.patch)  # (B*F, W, h, w)
        cond = cond.reshape(b * f, -1)
        for blk in self.blocks_out:
            h = blk(h, cond)
        out = self.out(F.silu(self.norm_out(h)))  # (B*F, C, h, w)
        return out.reshape(b, f, *out.shape[1:])
