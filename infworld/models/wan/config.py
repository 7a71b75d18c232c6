"""Configuration of the Wan2.1 backbone (:class:`WanConfig`) and the sizes of the released models.

The transformer sizes follow Wan2.1 (Wan team 2025, "Wan: Open and Advanced Large-Scale Video
Generative Models", Table 1). Field names match :class:`~infworld.models.dit.DiTConfig` wherever the
meaning is the same (``dim``, ``depth``, ``num_heads``, ``in_channels``, ``latent_size``,
``max_frames``, ``num_frame_kinds``, ``pose_dim``, ``actions``...), so the rollout engine, the KV
cache and the memory strategies read either config the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from infworld.errors import ConfigError
from infworld.models.action import ActionConfig

# Sizes of the released text-to-video transformers (patch (1, 2, 2), freq_dim 256, text_dim 4096).
WAN_SIZES: dict[str, dict[str, int]] = {
    "1.3B": {"dim": 1536, "ffn_dim": 8960, "depth": 30, "num_heads": 12},
    "14B": {"dim": 5120, "ffn_dim": 13824, "depth": 40, "num_heads": 40},
}


@dataclass
class WanConfig:
    """Sizes and options of :class:`~infworld.models.wan.transformer.WanDiT`.

    Architecture (must match the weights): ``dim``, ``ffn_dim``, ``depth`` (Wan's ``num_layers``),
    ``num_heads``, ``freq_dim``, ``text_dim``, ``patch_size`` (t, h, w; t must be 1 so a frame is a
    unit of causal attention), ``eps``, ``cross_attn_norm``, ``out_channels`` (0 = ``in_channels``).
    Defaults are Wan2.1-T2V-1.3B.

    Derived like DiTConfig: ``in_channels = 0`` / ``latent_size = (0, 0)`` from the tokenizer and
    ``max_frames = 0`` from the clip length (in latent frames). The Wan VAE gives 16 channels, so a
    recipe that loads weights should state ``in_channels: 16``; a tokenizer with other channels is
    then refused with a clear message instead of a shape error deep in the loader.

    Text: ``text_context`` is what the cross-attention reads when no text encoder output is passed
    to ``forward(context=...)``: ``"zero"`` (default) is a fixed all-zero T5 context of
    ``text_len`` tokens, which is exactly the zero padding every Wan2.1 prompt embedding carries
    after its tokens (the pipelines pad to 512 with zeros); ``"file:PATH"`` loads a fixed (L,
    text_dim) tensor from a .safetensors/.pt file (e.g. T5 of the empty prompt, computed once
    elsewhere). Either way it is a constant buffer, not learned: the world model is conditioned by
    actions, and a constant context keeps the loaded network unchanged.

    World-model additions (all zero-initialised, so loaded weights give the original network until
    trained): ``actions`` (Infinite-World style: ids embedded per video frame, strided 1-D convs down
    to the latent frame rate when ``frames_per_latent > 1``, added to the tokens; ``action_width`` 0
    = ``dim``), ``action_adaln`` (the action also drives a zero-init 6-way modulation, a pathway that
    cannot vanish beside the timestep), ``num_frame_kinds`` (memory frames), ``pose_dim`` (relative
    pose features of memory frames, memory/context.py).

    Weights: ``weights`` is a local file or folder in the original Wan2.1 layout or diffusers'
    ``WanTransformer3DModel`` layout (``weights_layout`` "auto" tells them apart by their keys);
    "" = random init (tests, ablations). ``$VARS`` and ``~`` are expanded. ``strict_weights``: a
    checkpoint missing a transformer tensor, or carrying tensors this network does not have, is an
    error (False: reported only, see weights.LoadReport).
    """

    in_channels: int = 0
    out_channels: int = 0
    latent_size: tuple[int, int] = (0, 0)
    patch_size: tuple[int, int, int] = (1, 2, 2)
    dim: int = 1536
    ffn_dim: int = 8960
    depth: int = 30
    num_heads: int = 12
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    eps: float = 1e-6
    cross_attn_norm: bool = True
    rope_theta: float = 10000.0
    max_frames: int = 0
    text_context: str = "zero"
    frames_per_latent: int = 1  # video frames per latent frame (Wan VAE in video mode: 4)
    actions: ActionConfig = field(default_factory=ActionConfig)
    action_width: int = 0
    action_adaln: bool = False
    num_frame_kinds: int = 2
    pose_dim: int = 0
    pose_scale: float = 256.0
    grad_checkpointing: bool = False
    weights: str = ""
    weights_layout: Literal["auto", "original", "diffusers"] = "auto"
    strict_weights: bool = True

    @property
    def patch(self) -> tuple[int, int]:
        return int(self.patch_size[1]), int(self.patch_size[2])

    @property
    def grid(self) -> tuple[int, int]:
        ph, pw = self.patch
        return self.latent_size[0] // ph, self.latent_size[1] // pw

    @property
    def tokens_per_frame(self) -> int:
        gh, gw = self.grid
        return gh * gw

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def out_dim(self) -> int:
        return self.out_channels or self.in_channels

    @property
    def action_dim(self) -> int:
        return self.action_width or self.dim

    def check(self) -> None:
        if self.in_channels < 1 or min(self.latent_size) < 1:
            raise ConfigError(f"wan: in_channels={self.in_channels}, latent_size={tuple(self.latent_size)} "
                              "are unresolved; expected positive values (taken from the tokenizer)")
        pt, ph, pw = self.patch_size
        if pt != 1:
            raise ConfigError(f"wan.patch_size: temporal patch {pt} is not supported; expected 1 (one latent "
                              "frame is the unit of block-causal attention and of the KV cache)")
        if ph < 1 or pw < 1 or self.latent_size[0] % ph or self.latent_size[1] % pw:
            raise ConfigError(f"wan.patch_size: {tuple(self.patch_size)} must divide latent_size "
                              f"{tuple(self.latent_size)}")
        if self.dim % self.num_heads:
            raise ConfigError(f"wan.dim: {self.dim} must be divisible by num_heads {self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ConfigError(f"wan: head_dim = dim / num_heads = {self.head_dim} must be even and >= 6 "
                              "(3D rotary embedding)")
        if self.max_frames < 1:
            raise ConfigError(f"wan.max_frames: {self.max_frames} is unresolved; expected >= 1 (the clip "
                              "length in latent frames)")
        for name in ("depth", "ffn_dim", "freq_dim", "text_dim", "text_len", "num_frame_kinds",
                     "frames_per_latent"):
            if getattr(self, name) < 1:
                raise ConfigError(f"wan.{name}: expected >= 1, got {getattr(self, name)}")
        if self.freq_dim % 2:
            raise ConfigError(f"wan.freq_dim: expected an even number, got {self.freq_dim}")
        if self.out_channels < 0 or self.action_width < 0 or self.pose_dim < 0 or self.pose_scale <= 0:
            raise ConfigError("wan.out_channels/action_width/pose_dim: expected >= 0 and pose_scale > 0, got "
                              f"{self.out_channels}/{self.action_width}/{self.pose_dim}/{self.pose_scale}")
        if self.eps <= 0:
            raise ConfigError(f"wan.eps: expected > 0, got {self.eps}")
        if self.text_context != "zero" and not self.text_context.startswith("file:"):
            raise ConfigError(f"wan.text_context: expected 'zero' or 'file:PATH', got {self.text_context!r}")
        self.actions.check()
