"""Action-conditioned, block-causal video diffusion transformer (the world-model backbone).

A Wan2.1-style DiT (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers"; Wan team
2025, "Wan: Open and Advanced Large-Scale Video Generative Models") over latent frames:

* patch embedding: each latent frame (C, h, w) becomes N = (h/p) * (w/p) tokens of width D;
* 3D rotary positions over (time, height, width) (rope.py), with q/k RMS-normalisation;
* adaLN-zero: per-frame shift/scale/gate from the frame's conditioning vector, computed by one
  projection shared by all blocks plus a learned per-block offset (Wan2.1's "modulation"), all
  zero-initialised so every block starts as the identity;
* conditioning per frame = timestep embedding of that frame's own noise level (diffusion forcing:
  Chen et al. 2024, "Diffusion Forcing", one noise level per frame) + action embedding
  (action.py) + frame-kind embedding (0 = a frame, 1 = memory latent, for memory strategies that
  prepend compressed or retrieved context; Infinite-World's mask channel);
* block-causal attention: a frame's tokens see all tokens of their own frame and of earlier frames,
  optionally only the last ``window`` frames (sliding window), plus "pinned" memory frames.

v2 additions (config flags, off in exports made before them, so those load unchanged):

* ``action_adaln``: the action embedding, RMS-normalised, drives its own zero-initialised adaLN MLP
  whose shift/scale/gate are added to the timestep's (a summed embedding was 4-7% of the
  modulation and the model learned to ignore it);
* ``conv``: residual conv blocks at latent resolution around patchify/unpatchify, fed the noisy
  frame, the frame before it and the action (latent_conv.py), so a shift of a fraction of a token
  (a ViZDoom turn moves the picture half a token per step) can be expressed; with
  ``conv.action_map`` the action also enters per latent pixel (action_map.py).

The network predicts the rectified-flow velocity (diffusion/flow.py). Streaming uses a KV cache
(kvcache.py): ``past`` holds clean keys/values of earlier frames and ``return_kv`` hands back the
new keys/values so the caller can append them; the network never mutates the cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from infworld.errors import ConfigError
from infworld.models.action import ActionConfig, ActionEncoder
from infworld.models.kvcache import PastKV
from infworld.models.latent_conv import LatentConv, LatentConvConfig
from infworld.models.rope import Rope3D, apply_rotary


@dataclass
class DiTConfig:
    """Sizes of the DiT. ``in_channels = 0`` / ``latent_size = (0, 0)`` mean "take them from the
    tokenizer" and ``max_frames = 0`` "take the clip length" (the world task fills them in before
    building). ``max_frames`` is the longest span of frames the model is trained to attend over; the
    rollout window may not exceed it, so relative positions never leave the trained range.
    """

    in_channels: int = 0
    latent_size: tuple[int, int] = (0, 0)
    patch_size: int = 1
    dim: int = 192
    depth: int = 6
    num_heads: int = 6
    mlp_ratio: float = 4.0
    max_frames: int = 0
    rope_theta: float = 10000.0
    freq_dim: int = 256
    num_frame_kinds: int = 2
    qk_norm: bool = True
    grad_checkpointing: bool = False
    pose_dim: int = 0  # width of per-frame relative-pose conditioning (memory/context.py); 0 = none
    pose_scale: float = 256.0  # environment units per pose-feature unit (ViZDoom: ~ a room)
    actions: ActionConfig = field(default_factory=ActionConfig)
    # v2 action pathway: the action embedding also drives its own adaLN MLP (normalised, so its
    # strength cannot vanish beside the timestep embedding); False = actions only summed into the
    # timestep embedding (exports made before v2)
    action_adaln: bool = False
    conv: LatentConvConfig = field(default_factory=LatentConvConfig)  # latent-resolution conv path

    @property
    def grid(self) -> tuple[int, int]:
        return self.latent_size[0] // self.patch_size, self.latent_size[1] // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def check(self) -> None:
        if self.in_channels < 1 or min(self.latent_size) < 1:
            raise ConfigError(f"dit: in_channels={self.in_channels}, latent_size={self.latent_size} are "
                              "unresolved; expected positive values (taken from the tokenizer)")
        p = self.patch_size
        if p < 1 or self.latent_size[0] % p or self.latent_size[1] % p:
            raise ConfigError(f"dit.patch_size: {p} must divide latent_size {tuple(self.latent_size)}")
        if self.dim % self.num_heads:
            raise ConfigError(f"dit.dim: {self.dim} must be divisible by num_heads {self.num_heads}")
        if self.max_frames < 1:
            raise ConfigError(f"dit.max_frames: {self.max_frames} is unresolved; expected >= 1 "
                              "(the clip length)")
        if self.pose_dim < 0 or self.pose_scale <= 0:
            raise ConfigError(f"dit.pose_dim/pose_scale: expected >= 0 / > 0, got {self.pose_dim}/"
                              f"{self.pose_scale}")
        for name in ("depth", "num_frame_kinds", "freq_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dit.{name}: expected >= 1, got {getattr(self, name)}")
        self.actions.check()
        self.conv.check()


def frame_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None = None,
               k_pinned: torch.Tensor | None = None) -> torch.Tensor:
    """Block-causal frame-level mask (Fq, Fk), True = may attend.

    A query frame sees key frames at positions ``q - window < k <= q`` (all earlier ones when
    ``window`` is None) and every pinned key frame.
    """
    diff = q_pos[:, None] - k_pos[None, :]  # (Fq, Fk)
    allowed = diff >= 0
    if window is not None:
        allowed = allowed & (diff < window)
    if k_pinned is not None:
        allowed = allowed | k_pinned[None, :]
    return allowed


def key_positions(pos: torch.Tensor, past: PastKV | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Frame positions (Fk,) of the keys [past frames, current frames] and which are pinned (None
    when nothing is cached); ``pos`` (F,) are the current frames' positions."""
    if past is None:
        return pos, None
    dev = pos.device
    k_pos = torch.cat([past.positions.to(dev).float(), pos])
    k_pin = torch.cat([past.pinned.to(dev), torch.zeros(pos.shape[0], dtype=torch.bool, device=dev)])
    return k_pos, k_pin


def key_validity(b: int, f: int, past: PastKV | None, key_valid: torch.Tensor | None,
                 dev: torch.device) -> torch.Tensor | None:
    """(B, P + F) key validity over [past, current] frames, or None when every key is valid."""
    pv = past.valid if past is not None else None
    if pv is None and key_valid is None:
        return None
    p = past.num_frames if past is not None else 0
    ones = torch.ones(b, p + f, dtype=torch.bool, device=dev)
    parts = [pv.to(dev) if pv is not None else ones[:, :p],
             key_valid.to(dev) if key_valid is not None else ones[:, p:]]
    return torch.cat(parts, dim=1)


def token_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, k_pinned: torch.Tensor | None, window: int | None,
               kv_valid: torch.Tensor | None, n: int, causal: bool = True) -> torch.Tensor | None:
    """Boolean attention mask over tokens (True = may attend), or None when everything is visible.

    q_pos: (F,) and k_pos: (Fk,) frame positions (the last F keys are the queries' own frames);
    kv_valid: (B, Fk) or None; n tokens per frame. ``causal=False``: frames also see later frames
    (|q - k| < window), as Wan itself (a bidirectional teacher). Returns (F*N, Fk*N) or, with
    kv_valid, (B, 1, F*N, Fk*N).
    """
    f, fk = q_pos.shape[0], k_pos.shape[0]
    if causal:
        fmask = frame_mask(q_pos, k_pos, window, k_pinned)  # (F, Fk)
    else:
        diff = (q_pos[:, None] - k_pos[None, :]).abs()
        fmask = diff < window if window is not None else torch.ones_like(diff, dtype=torch.bool)
        fmask = fmask | k_pinned[None, :] if k_pinned is not None else fmask
    if kv_valid is not None:
        own = torch.zeros(f, fk, dtype=torch.bool, device=fmask.device)
        own[torch.arange(f), torch.arange(fk - f, fk)] = True  # a frame always sees itself (no empty rows)
        b = kv_valid.shape[0]
        bmask = fmask[None] & (kv_valid[:, None, :] | own[None])  # (B, F, Fk)
        return bmask[:, None, :, None, :, None].expand(b, 1, f, n, fk, n).reshape(b, 1, f * n, fk * n)
    if bool(fmask.all()):
        return None
    return fmask[:, None, :, None].expand(f, n, fk, n).reshape(f * n, fk * n)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (Vaswani et al. 2017) of noise levels t in [0, 1], scaled to 0..1000 as in
    Wan2.1: (...,) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[..., None] * freqs  # (..., half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (Zhang & Sennrich 2019), used on queries and keys."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    """Multi-head self-attention with q/k RMSNorm, 3D RoPE and optional cached past keys/values."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.q_norm = RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                past_k: torch.Tensor | None, past_v: torch.Tensor | None):
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        new_k, new_v = k, v  # un-rotated, for the cache
        if past_k is not None:
            k = torch.cat([past_k.to(k.dtype), k], dim=2)  # (B, H, P*N + T, hd)
            v = torch.cat([past_v.to(v.dtype), v], dim=2)
        # cos/sin cover past + current tokens; the queries are the last T of them.
        q = apply_rotary(q, cos[-t:], sin[-t:])
        k = apply_rotary(k, cos, sin)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        return self.proj(o.transpose(1, 2).reshape(b, t, d)), new_k, new_v


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-zero modulation per frame."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, cfg.dim))
        # Per-block offset added to the shared modulation (Wan2.1); zero = identity block at init.
        self.modulation = nn.Parameter(torch.zeros(6, cfg.dim))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, past_k: torch.Tensor | None, past_v: torch.Tensor | None):
        b, f, n, d = x.shape  # (B, F, N, D)
        # six (B, F, 1, D) modulations, broadcast over the N tokens of each frame
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.modulation).unsqueeze(3).unbind(2)
        h = self.norm1(x) * (1 + scale1) + shift1
        a, k, v = self.attn(h.reshape(b, f * n, d), cos, sin, mask, past_k, past_v)
        x = x + gate1 * a.view(b, f, n, d)
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
        return x, k, v


class DiT(nn.Module):
    """Velocity network v(x_t, t, actions) over latent frames (B, F, C, h, w); see module docstring."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.dim
        self.patch_dim = cfg.in_channels * p * p
        self.patch_embed = nn.Linear(self.patch_dim, d)
        self.time_embed = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.action_embed = ActionEncoder(cfg.actions, d)
        self.kind_embed = nn.Embedding(cfg.num_frame_kinds, d)
        # Relative camera pose of memory frames (VRAG-style state conditioning); zero-init so a
        # model finetuned from a pose-free one starts unchanged.
        self.pose_embed = nn.Linear(cfg.pose_dim, d) if cfg.pose_dim else None
        self.mod_proj = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # shared by all blocks
        # v2: the action's own modulation, from the RMS-normalised action embedding (zero-init)
        self.action_norm = RMSNorm(d) if cfg.action_adaln else None
        self.action_mod = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, 6 * d)) \
            if cfg.action_adaln else None
        self.conv = LatentConv(cfg.conv, cfg.in_channels, p, d, tuple(cfg.latent_size)) \
            if cfg.conv.enabled else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        self.head_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.head_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.head = nn.Linear(d, self.patch_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.kind_embed.weight, std=0.02)
        for lin in (self.time_embed[0], self.time_embed[2]):
            nn.init.normal_(lin.weight, std=0.02)
        # adaLN-zero: modulation and output start at zero.
        zero = [self.mod_proj[1], self.head_mod[1], self.head]
        zero += [self.pose_embed] if self.pose_embed is not None else []
        zero += [self.action_mod[2]] if self.action_mod is not None else []
        for lin in zero:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, F, N, C*p*p), tokens row-major over the (h/p, w/p) grid."""
        b, f, c, _, _ = x.shape
        p, (gh, gw) = self.cfg.patch_size, self.cfg.grid
        x = x.reshape(b, f, c, gh, p, gw, p).permute(0, 1, 3, 5, 2, 4, 6)  # (B, F, gh, gw, C, p, p)
        return x.reshape(b, f, gh * gw, c * p * p)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, N, C*p*p) -> (B, F, C, h, w)."""
        b, f = x.shape[:2]
        p, (gh, gw), c = self.cfg.patch_size, self.cfg.grid, self.cfg.in_channels
        x = x.reshape(b, f, gh, gw, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # (B, F, C, gh, p, gw, p)
        return x.reshape(b, f, c, gh * p, gw * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, actions: Mapping[str, torch.Tensor],
                positions: torch.Tensor | None = None, kinds: torch.Tensor | None = None,
                past: PastKV | None = None, window: int | None = None, return_kv: bool = False,
                poses: torch.Tensor | None = None, key_valid: torch.Tensor | None = None,
                prev: torch.Tensor | None = None, prev_t: torch.Tensor | None = None, chain: bool = True):
        """Predict the velocity of every frame.

        x: (B, F, C, h, w) latents at noise levels t: (B, F) in [0, 1] (0 = clean).
        actions: per-frame fields (B, F) ids / (B, F, d) values, the action leading INTO each frame.
        positions: (F,) time positions (default 0..F-1), on the same axis as ``past.positions``.
        kinds: (B, F) frame kinds (default 0). past: cached clean context. window: attention window
        in frames (None = all earlier frames). poses: (B, F, pose_dim) relative pose features, NaN
        rows = none (only with ``cfg.pose_dim``). key_valid: (B, F) False = padding frame that no
        other frame attends to (``past.valid`` does the same for cached frames). prev: (B, 1, C, h, w)
        the frame before ``x[:, 0]`` at level prev_t (B, 1), for the conv path (latent_conv.py; None
        = absent); ``chain=False``: frames are not consecutive (memory), none sees its predecessor.
        Returns v
        (B, F, C, h, w), plus with ``return_kv`` the new un-rotated keys/values per layer [(k, v)],
        each (B, H, F*N, hd).
        """
        cfg = self.cfg
        b, f, c, h, w = x.shape
        if c != cfg.in_channels or (h, w) != tuple(cfg.latent_size):
            raise ConfigError(f"dit: got latents (C, h, w) = {(c, h, w)}, the config expects "
                              f"{(cfg.in_channels, *cfg.latent_size)}")
        if tuple(t.shape) != (b, f):
            raise ConfigError(f"dit: noise levels must be (B, F) = {(b, f)}, got {tuple(t.shape)}")
        dev = x.device
        if positions is None:
            positions = torch.arange(f, dtype=torch.float32, device=dev)
        pos = positions.to(dev).float()  # (F,)
        if kinds is None:
            kinds = torch.zeros(b, f, dtype=torch.long, device=dev)

        # Per-frame conditioning vector (B, F, D) and the shared modulation (B, F, 6, D).
        act = self.action_embed(actions, b, f)  # (B, F, D)
        cond = self.time_embed(timestep_embedding(t, cfg.freq_dim)) + act + self.kind_embed(kinds)
        if poses is not None and self.pose_embed is not None:
            known = ~torch.isnan(poses).any(-1, keepdim=True)  # (B, F, 1)
            cond = cond + self.pose_embed(torch.nan_to_num(poses).to(cond.dtype)) * known
        mod = self.mod_proj(cond)  # (B, F, 6D)
        act_n = self.action_norm(act) if self.action_norm is not None else act
        if self.action_mod is not None:
            mod = mod + self.action_mod(act_n)
        mod = mod.view(b, f, 6, cfg.dim)

        # Rotary tables and the token mask over [past frames, current frames].
        n = cfg.tokens_per_frame
        k_pos, k_pin = key_positions(pos, past)
        cos, sin = self.rope.cos_sin(k_pos, cfg.grid)  # (Fk*N, hd/2)
        mask = token_mask(pos, k_pos, k_pin, window, key_validity(b, f, past, key_valid, dev), n)

        tokens = self.patch_embed(self.patchify(x))  # (B, F, N, D)
        feat = None
        if self.conv is not None:
            x_prev, t_prev = self.conv.previous(x, t, prev, prev_t, chain)  # (B, F, C, h, w), (B, F)
            feat = self.conv.stem(x, x_prev, t_prev, cond, act_n)  # (B*F, W, h, w)
            tokens = tokens + self.conv.tokens(feat, b, f)
        new_kv = []
        for i, blk in enumerate(self.blocks):
            pk = past.keys[i] if past is not None else None
            pv = past.values[i] if past is not None else None
            if cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens, k, v = checkpoint(blk, tokens, mod, cos, sin, mask, pk, pv, use_reentrant=False)
            else:
                tokens, k, v = blk(tokens, mod, cos, sin, mask, pk, pv)
            if return_kv:
                new_kv.append((k, v))

        shift, scale = self.head_mod(cond).unsqueeze(2).chunk(2, dim=-1)  # (B, F, 1, D) each
        final = self.head_norm(tokens) * (1 + scale) + shift  # (B, F, N, D)
        out = self.unpatchify(self.head(final))
        if feat is not None:
            out = out + self.conv.head(feat, final, cond)  # sub-token detail at latent resolution
        return (out, new_kv) if return_kv else out
