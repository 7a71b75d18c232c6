"""Building blocks of the Wan2.1 transformer, with the block-causal KV cache of infworld/models/kvcache.py.

One block (Wan team 2025, "Wan", Sec. 3.2; the same computation as diffusers'
``WanTransformerBlock``), for tokens x of F frames with per-frame modulation e (B, F, 6, D) =
time projection + the block's learned ``modulation`` offset:

1. self-attention: ``x += gate1 * SelfAttn(LN(x) * (1 + scale1) + shift1)`` with q/k RMS-normalised
   over the whole width (all heads together), 3D RoPE, block-causal mask, cached past keys/values;
2. text cross-attention: ``x += CrossAttn(LN_affine(x), text)`` (no gate, no RoPE);
3. feed-forward: ``x += gate2 * FFN(LN(x) * (1 + scale2) + shift2)``, FFN = Linear, GELU (tanh), Linear.

Norms, modulation and residual sums run in float32 and are cast back (as Wan does), so a bf16 model
under FSDP mixed precision keeps the statistics in full precision.

Parameter names follow the original Wan2.1 checkpoints (``self_attn.q``, ``cross_attn.o``, ``norm3`` =
the cross-attention norm, ``ffn.0``, ``modulation``), so that layout loads as is and diffusers' layout
goes through one renaming table (weights.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infworld.models.rope import apply_rotary
from infworld.models.wan.config import WanConfig


class WanRMSNorm(nn.Module):
    """RMS norm with a learned gain over the last dimension, computed in float32 (Zhang & Sennrich
    2019). Wan applies it to q and k over all heads at once ("rms_norm_across_heads")."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype; returns float32 (the caller casts)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on (B, H, T, hd) in float32 (angles (T, hd/2)), cast back to x's dtype."""
    return apply_rotary(x.float(), cos, sin).type_as(x)


class _WanAttentionWeights(nn.Module):
    """The projections every Wan attention has (q, k, v, o and RMS norms on q and k over the full
    width), named as in the checkpoints."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q = WanRMSNorm(d, cfg.eps)
        self.norm_k = WanRMSNorm(d, cfg.eps)


class WanSelfAttention(_WanAttentionWeights):
    """Multi-head self-attention over [cached past frames, current frames]."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                past_k: torch.Tensor | None, past_v: torch.Tensor | None):
        """x: (B, T, D); cos/sin: (P*N + T, hd/2) over past + current tokens; mask: (T, P*N + T) or
        (B, 1, T, P*N + T) bool, True = may attend. Returns the output (B, T, D) and this call's
        un-rotated keys/values (B, H, T, hd) for the cache."""
        b, t, _ = x.shape
        heads = (b, t, self.heads, self.head_dim)
        q = self.norm_q(self.q(x)).view(heads).transpose(1, 2)  # (B, H, T, hd)
        k = self.norm_k(self.k(x)).view(heads).transpose(1, 2)
        v = self.v(x).view(heads).transpose(1, 2)
        new_k, new_v = k, v
        if past_k is not None:
            k = torch.cat([past_k.to(k.dtype), k], dim=2)  # (B, H, P*N + T, hd)
            v = torch.cat([past_v.to(v.dtype), v], dim=2)
        q = rotate(q, cos[-t:], sin[-t:])  # the queries are the last T positions
        k = rotate(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        return self.o(o.transpose(1, 2).reshape(b, t, -1)), new_k, new_v


class WanCrossAttention(_WanAttentionWeights):
    """Attention from the video tokens to the (embedded) text context; no positions, no mask."""

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D), context: (B or 1, L, D) -> (B, T, D)."""
        b, t, _ = x.shape
        ctx = context.expand(b, -1, -1)
        q = self.norm_q(self.q(x)).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.norm_k(self.k(ctx)).view(b, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, H, L, hd)
        v = self.v(ctx).view(b, -1, self.heads, self.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o(o.transpose(1, 2).reshape(b, t, -1))


class WanBlock(nn.Module):
    """One Wan2.1 transformer block with per-frame modulation (module docstring)."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        self.norm1 = WanLayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(cfg)
        # Wan's naming: norm3 is the cross-attention's (affine) norm, norm2 the feed-forward's.
        self.norm3 = WanLayerNorm(d, eps=cfg.eps, elementwise_affine=True) if cfg.cross_attn_norm else None
        self.cross_attn = WanCrossAttention(cfg)
        self.norm2 = WanLayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(cfg.ffn_dim, d))
        # Learned per-block offset of the six modulations (Wan's init: N(0, 1/D)).
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor, context: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor, mask: torch.Tensor | None, past_k: torch.Tensor | None,
                past_v: torch.Tensor | None):
        """x: (B, F, N, D) tokens; e: (B, F, 6, D) float32 modulation from the frame's conditioning;
        context: (B or 1, L, D). Returns x and this call's keys/values (B, H, F*N, hd)."""
        b, f, n, d = x.shape
        # six (B, F, 1, D) float32 modulations, broadcast over the N tokens of each frame
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation.float() + e).unsqueeze(3).unbind(2)
        h = (self.norm1(x) * (1 + scale1) + shift1).type_as(x)
        a, k, v = self.self_attn(h.reshape(b, f * n, d), cos, sin, mask, past_k, past_v)
        x = (x.float() + a.view(b, f, n, d).float() * gate1).type_as(x)
        h = self.norm3(x).type_as(x) if self.norm3 is not None else x
        x = x + self.cross_attn(h.reshape(b, f * n, d), context).view(b, f, n, d)
        h = (self.norm2(x) * (1 + scale2) + shift2).type_as(x)
        x = (x.float() + self.ffn(h).float() * gate2).type_as(x)
        return x, k, v


class WanHead(nn.Module):
    """Final norm, per-frame (shift, scale) from the time embedding plus ``modulation``, projection to
    ``out_channels * ph * pw`` values per token."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        d = cfg.dim
        ph, pw = cfg.patch
        self.norm = WanLayerNorm(d, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(d, cfg.out_dim * ph * pw)
        self.modulation = nn.Parameter(torch.randn(1, 2, d) / d**0.5)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x: (B, F, N, D), temb: (B, F, D) -> (B, F, N, out * ph * pw)."""
        e = self.modulation.float()[None] + temb.float()[:, :, None, :]  # (B, F, 2, D)
        shift, scale = e[:, :, 0:1], e[:, :, 1:2]  # (B, F, 1, D) each
        return self.head((self.norm(x) * (1 + scale) + shift).type_as(x))
