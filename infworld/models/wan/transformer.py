"""The Wan2.1 text-to-video DiT as a block-causal, action-conditioned world-model backbone.

Architecture (Wan team 2025, "Wan: Open and Advanced Large-Scale Video Generative Models"; the same
computation as diffusers' ``WanTransformer3DModel``, reimplemented here):

* patch embedding: a Conv3d with kernel = stride = (1, ph, pw) over latents (C, F, h, w), so each
  latent frame becomes N = (h/ph)(w/pw) tokens of width D, row-major;
* time embedding: sinusoid of 1000 t (t in [0, 1], the rectified-flow level, as in
  infworld/models/dit.py) -> Linear, SiLU, Linear = ``temb`` (B, F, D), one per frame (diffusion
  forcing: each frame has its own level); ``time_projection`` (SiLU, Linear) -> six modulations;
* text: the context (B, L, text_dim) -> Linear, GELU (tanh), Linear, read by every block's
  cross-attention; without a text encoder a fixed null context (adapters.null_text_context);
* ``depth`` blocks (layers.py), each with self-attention (RMS qk-norm across heads, 3D RoPE over
  (frame, row, column)), text cross-attention and a GELU-tanh FFN, modulated per frame;
* head: LayerNorm, (shift, scale) from temb plus a learned table, Linear to C * ph * pw per token,
  unpatchified with Wan's channel order (ph, pw, C).

What the world model adds, with the interface of :class:`~infworld.models.dit.DiT` (same forward
signature and ``cfg`` attributes, so the rollout engine, KV cache and memory strategies use it as is):

* block-causal frame attention (``frame_mask``: a frame sees itself, earlier frames inside
  ``window``, and pinned memory frames), streamed through a KV cache: ``past`` holds clean un-rotated
  keys/values of earlier frames with their positions, ``return_kv`` hands back this call's;
* actions (adapters.ActionAdapter), frame kinds and relative poses, all zero-initialised: a loaded
  model computes what Wan computes until trained. Kinds and poses are added to temb (the
  conditioning vector that drives the modulations), actions to the tokens (and, with
  ``action_adaln``, to the modulations).

Wan has no latent-resolution conv path, so ``prev``/``prev_t``/``chain`` are accepted and unused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from infworld.errors import ConfigError
from infworld.models.dit import key_positions, key_validity, timestep_embedding, token_mask
from infworld.models.kvcache import PastKV
from infworld.models.rope import Rope3D
from infworld.models.wan.adapters import ActionAdapter, null_text_context
from infworld.models.wan.config import WanConfig
from infworld.models.wan.layers import WanBlock, WanHead

# Parameters that Wan checkpoints never contain: the world-model additions (weights.py reports them
# as "new", not "missing").
ADAPTER_PREFIXES = ("action_adapter.", "kind_embed.", "pose_embed.", "text_context")


class WanDiT(nn.Module):
    """Velocity network v(x_t, t, actions) over latent frames (B, F, C, h, w); see module docstring."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embedding = nn.Conv3d(cfg.in_channels, d, kernel_size=tuple(cfg.patch_size),
                                         stride=tuple(cfg.patch_size))
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.GELU(approximate="tanh"),
                                            nn.Linear(d, d))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(WanBlock(cfg) for _ in range(cfg.depth))
        self.head = WanHead(cfg)
        self.rope = Rope3D(cfg.head_dim, cfg.rope_theta)
        # world-model additions, zero-initialised (the loaded network is unchanged until trained)
        self.action_adapter = ActionAdapter(cfg)
        self.kind_embed = nn.Embedding(cfg.num_frame_kinds, d)
        self.pose_embed = nn.Linear(cfg.pose_dim, d) if cfg.pose_dim else None
        ctx, persistent = null_text_context(cfg)
        self.register_buffer("text_context", ctx, persistent=persistent)  # (L, text_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """Wan2.1's initialisation for a model trained from scratch (loaded weights replace it)."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("action_adapter"):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        for seq in (self.text_embedding, self.time_embedding):
            for lin in (seq[0], seq[2]):
                nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(self.head.head.weight)
        zero = [self.kind_embed.weight] + ([self.pose_embed.weight, self.pose_embed.bias]
                                           if self.pose_embed is not None else [])
        for p in zero:
            nn.init.zeros_(p)

    # -- shapes ------------------------------------------------------------------------------

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (B, F, C, h, w) -> tokens (B, F, N, D)."""
        w = self.patch_embedding.weight
        tok = self.patch_embedding(x.transpose(1, 2).to(w.dtype))  # (B, D, F, gh, gw)
        return tok.flatten(3).permute(0, 2, 3, 1)

    def unpatchify(self, out: torch.Tensor) -> torch.Tensor:
        """(B, F, N, ph*pw*C) in Wan's (ph, pw, C) order -> (B, F, C, h, w)."""
        b, f = out.shape[:2]
        (gh, gw), (ph, pw), c = self.cfg.grid, self.cfg.patch, self.cfg.out_dim
        x = out.reshape(b, f, gh, gw, ph, pw, c).permute(0, 1, 6, 2, 4, 3, 5)  # (B, F, C, gh, ph, gw, pw)
        return x.reshape(b, f, c, gh * ph, gw * pw)

    # -- forward -----------------------------------------------------------------------------

    def _conditioning(self, t: torch.Tensor, kinds: torch.Tensor, poses: torch.Tensor | None,
                      dtype: torch.dtype) -> torch.Tensor:
        """temb (B, F, D): time embedding of each frame's level + frame kind + relative pose."""
        lin = self.time_embedding[0]
        temb = self.time_embedding(timestep_embedding(t, self.cfg.freq_dim).to(lin.weight.dtype)).to(dtype)
        temb = temb + self.kind_embed(kinds).to(dtype)
        if poses is not None and self.pose_embed is not None:
            known = ~torch.isnan(poses).any(-1, keepdim=True)  # (B, F, 1)
            temb = temb + self.pose_embed(torch.nan_to_num(poses).to(temb.dtype)) * known
        return temb

    def text(self, context: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """Embedded text context (B or 1, L, D): ``context`` (B, L, text_dim) or the fixed null one."""
        ctx = self.text_context[None] if context is None else context
        return self.text_embedding(ctx.to(self.text_embedding[0].weight.dtype)).to(dtype)

    def forward(self, x: torch.Tensor, t: torch.Tensor, actions: Mapping[str, torch.Tensor] | None = None,
                positions: torch.Tensor | None = None, kinds: torch.Tensor | None = None,
                past: PastKV | None = None, window: int | None = None, return_kv: bool = False,
                poses: torch.Tensor | None = None, key_valid: torch.Tensor | None = None,
                prev: torch.Tensor | None = None, prev_t: torch.Tensor | None = None, chain: bool = True,
                context: torch.Tensor | None = None, causal: bool = True) -> Any:
        """Predict the velocity of every frame; arguments as :meth:`infworld.models.dit.DiT.forward`.

        x: (B, F, C, h, w) latents at noise levels t: (B, F) in [0, 1]. actions: per-field tensors
        (adapters.py for the shapes), None = no action conditioning. positions: (F,) frame positions
        on the axis of ``past.positions`` (default 0..F-1). kinds: (B, F). past: cached clean context
        (un-rotated keys/values, pinned frames, validity). window: attention window in frames.
        poses: (B, F, pose_dim), NaN rows = none. key_valid: (B, F). context: (B, L, text_dim) text
        encoder output (default: the fixed null context). causal=False: full attention over the
        frames of the call (Wan's own, bidirectional; for a teacher). Returns v (B, F, C, h, w), plus with
        ``return_kv`` the new un-rotated keys/values per layer [(k, v)], each (B, H, F*N, hd).
        """
        del prev, prev_t, chain  # no latent conv path in Wan
        cfg = self.cfg
        b, f, c, h, w = x.shape
        if c != cfg.in_channels or (h, w) != tuple(cfg.latent_size):
            raise ConfigError(f"wan: got latents (C, h, w) = {(c, h, w)}, the config expects "
                              f"{(cfg.in_channels, *cfg.latent_size)}")
        if tuple(t.shape) != (b, f):
            raise ConfigError(f"wan: noise levels must be (B, F) = {(b, f)}, got {tuple(t.shape)}")
        dev, n = x.device, cfg.tokens_per_frame
        pos = (positions.to(dev).float() if positions is not None
               else torch.arange(f, dtype=torch.float32, device=dev))  # (F,)
        if kinds is None:
            kinds = torch.zeros(b, f, dtype=torch.long, device=dev)

        tokens = self.embed(x)  # (B, F, N, D)
        dtype = tokens.dtype
        temb = self._conditioning(t, kinds, poses, dtype)  # (B, F, D)
        e = self.time_projection(temb).float().unflatten(-1, (6, cfg.dim))  # (B, F, 6, D)
        act_tok, act_mod = self.action_adapter(actions, b, f)
        if act_tok is not None:
            tokens = tokens + act_tok.to(dtype)[:, :, None, :]
        if act_mod is not None:
            e = e + act_mod.float()
        ctx = self.text(context, dtype)

        # Rotary tables and the token mask over [past frames, current frames].
        k_pos, k_pin = key_positions(pos, past)
        cos, sin = self.rope.cos_sin(k_pos, cfg.grid)  # (Fk*N, hd/2)
        mask = token_mask(pos, k_pos, k_pin, window, key_validity(b, f, past, key_valid, dev), n, causal)

        new_kv = []
        for i, blk in enumerate(self.blocks):
            pk = past.keys[i] if past is not None else None
            pv = past.values[i] if past is not None else None
            if cfg.grad_checkpointing and self.training and torch.is_grad_enabled():
                tokens, k, v = checkpoint(blk, tokens, e, ctx, cos, sin, mask, pk, pv, use_reentrant=False)
            else:
                tokens, k, v = blk(tokens, e, ctx, cos, sin, mask, pk, pv)
            if return_kv:
                new_kv.append((k, v))
        out = self.unpatchify(self.head(tokens, temb))
        return (out, new_kv) if return_kv else out


def build_backbone(cfg: WanConfig | Mapping[str, Any], load_weights: bool = True) -> WanDiT:
    """Build :class:`WanDiT` from a :class:`WanConfig` or its dict (recipe ``model.wan``), loading
    ``cfg.weights`` when set (and ``load_weights``). The load report is kept as ``model.load_report``
    (None when nothing was loaded). Raises ConfigError / CheckpointError with the key at fault.
    """
    if not isinstance(cfg, WanConfig):
        from infworld.config import build_dataclass

        cfg = build_dataclass(WanConfig, cfg, "wan")
    model = WanDiT(cfg)
    model.load_report = None
    if load_weights and cfg.weights:
        from infworld.models.wan.weights import load_wan_weights

        model.load_report = load_wan_weights(model, cfg.weights, cfg.weights_layout,
                                             strict=cfg.strict_weights)
    return model
