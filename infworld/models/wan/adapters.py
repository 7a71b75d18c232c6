"""World-model inputs added to a pretrained Wan2.1 transformer: actions and the fixed text context.

Actions (Infinite-World, arXiv 2602.02393, Sec. 3.3): the move and view ids (and interact, and any
continuous fields) of every **video** frame are embedded (infworld/models/action.py, with its learned
null vector), then brought down to the **latent** frame rate with strided 1-D convolutions over time
when the VAE compresses time (Wan's VAE: 4 video frames per latent frame), and added to the tokens
of their latent frame. The convolutions have kernel = stride, so each latent frame sees exactly its
own group of actions: nothing leaks across frames, which keeps attention block-causal and lets a
frame be generated from its own actions alone when streaming.

Everything that writes into the pretrained network starts at zero (the output projection to the
tokens, the optional modulation MLP), so a freshly loaded model computes exactly what Wan computes
until it is trained.

Action shapes per field, with r = ``frames_per_latent``: ids (B, F) (one action per latent frame,
repeated over its r video frames) or (B, F, r) (one per video frame, oldest first); continuous values
(B, F, d) or (B, F, r, d). :func:`infworld.models.wan.latents.group_actions` turns per-transition
episode actions into the (B, F, r) form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from infworld.errors import CheckpointError, DataError
from infworld.models.action import ActionEncoder
from infworld.models.dit import RMSNorm
from infworld.models.wan.config import WanConfig


def temporal_downsampler(width: int, factor: int) -> nn.Module:
    """(N, W, factor) -> (N, W, 1): log2(factor) stride-2 convolutions (kernel 2) with SiLU between
    them when ``factor`` is a power of two, else one convolution of kernel = stride = factor."""
    if factor == 1:
        return nn.Identity()
    if factor & (factor - 1) == 0:
        layers: list[nn.Module] = []
        for i in range(int(math.log2(factor))):
            if i:
                layers.append(nn.SiLU())
            layers.append(nn.Conv1d(width, width, kernel_size=2, stride=2))
        return nn.Sequential(*layers)
    return nn.Conv1d(width, width, kernel_size=factor, stride=factor)


class ActionAdapter(nn.Module):
    """Per-latent-frame action features: a token offset (B, F, D) and optionally a modulation offset
    (B, F, 6, D), both zero at initialisation (module docstring)."""

    def __init__(self, cfg: WanConfig):
        super().__init__()
        w, d = cfg.action_dim, cfg.dim
        self.r = cfg.frames_per_latent
        self.encoder = ActionEncoder(cfg.actions, w)
        self.continuous = set(cfg.actions.continuous)
        self.down = temporal_downsampler(w, self.r)
        self.to_tokens = nn.Linear(w, d)
        nn.init.zeros_(self.to_tokens.weight)
        nn.init.zeros_(self.to_tokens.bias)
        self.norm = RMSNorm(w) if cfg.action_adaln else None
        self.to_mod = (nn.Sequential(nn.Linear(w, d), nn.SiLU(), nn.Linear(d, 6 * d))
                       if cfg.action_adaln else None)
        if self.to_mod is not None:
            nn.init.zeros_(self.to_mod[2].weight)
            nn.init.zeros_(self.to_mod[2].bias)

    def _per_video_frame(self, name: str, value: torch.Tensor, b: int, f: int) -> torch.Tensor:
        """One field as (B, F * r[, d]), video frames in time order."""
        r = self.r
        per_latent = value.dim() == (3 if name in self.continuous else 2)
        if tuple(value.shape[:2]) != (b, f):
            raise DataError(f"expected leading shape ({b}, {f}) (batch, latent frames), got "
                            f"{tuple(value.shape)}", field=name)
        if per_latent:
            value = value.unsqueeze(2).expand(b, f, r, *value.shape[2:])  # the same action for all r frames
        elif value.shape[2] != r:
            raise DataError(f"expected {r} actions per latent frame (frames_per_latent), got shape "
                            f"{tuple(value.shape)}", field=name)
        return value.reshape(b, f * r, *value.shape[3:])

    def forward(self, actions: Mapping[str, torch.Tensor] | None, b: int, f: int
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Returns (token offset (B, F, D), modulation offset (B, F, 6, D) or None); (None, None)
        when ``actions`` is None or empty (no action conditioning at all)."""
        if not actions:
            return None, None
        flat = {k: self._per_video_frame(k, v, b, f) if k in self.encoder.fields else v
                for k, v in actions.items()}
        emb = self.encoder(flat, b, f * self.r)  # (B, F*r, W)
        w = emb.shape[-1]
        grouped = emb.reshape(b * f, self.r, w).transpose(1, 2)  # (B*F, W, r)
        feat = self.down(grouped).reshape(b, f, w)  # (B, F, W): one vector per latent frame
        tokens = self.to_tokens(feat)
        mod = None
        if self.to_mod is not None:
            mod = self.to_mod(self.norm(feat)).unflatten(-1, (6, -1))  # (B, F, 6, D)
        return tokens, mod


def null_text_context(cfg: WanConfig) -> tuple[torch.Tensor, bool]:
    """The fixed text context fed to the cross-attention when no text encoder output is given, and
    whether it belongs in checkpoints.

    ``"zero"``: an all-zero context. Wan2.1 prompts are T5 embeddings zero-padded to ``text_len``
    tokens; an all-zero context of any length L gives L identical keys and values, so attention over
    it equals attention over one of them: we store one (1, text_dim) row (not saved: it derives from
    the config). ``"file:PATH"``: a (L, text_dim) tensor read from a .safetensors (first tensor) or
    .pt file, saved with the model so an export carries it.
    """
    if cfg.text_context == "zero":
        return torch.zeros(1, cfg.text_dim), False
    path = Path(cfg.text_context[len("file:"):]).expanduser()
    if not path.is_file():
        raise CheckpointError(f"wan.text_context: file {str(path)!r} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            ctx = next(iter(tensors.values())) if tensors else None
        else:
            ctx = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise CheckpointError(f"wan.text_context: cannot read {str(path)!r} ({exc})") from exc
    if not torch.is_tensor(ctx):
        raise CheckpointError(f"wan.text_context: {str(path)!r} holds no tensor")
    ctx = ctx.float().reshape(-1, ctx.shape[-1]) if ctx.dim() > 1 else ctx.float()[None]
    if ctx.shape[-1] != cfg.text_dim:
        raise CheckpointError(f"wan.text_context: {str(path)!r} has width {ctx.shape[-1]}, expected "
                              f"text_dim {cfg.text_dim}")
    return ctx, True
