"""The world network: the frozen tokenizer plus the backbone that denoises its latents.

:class:`WorldNet` is what the world task trains (infworld/train/tasks/world.py), what an export
holds, and what the rollout engine (infworld/world.py) runs. The tokenizer (models/tokenizers.py)
travels inside it, so an export is self-contained; the backbone sits at ``WorldNet.dit``: the
CPU-scale :class:`~infworld.models.dit.DiT` (``backbone: dit``) or the Wan2.1 transformer
(``backbone: wan``, infworld/models/wan/, docs/scale.md), with the same forward signature.
``memory_modules`` holds the learned parts of memory strategies (HPMC's compressor), trained jointly.

:func:`build_world_net` rebuilds the untrained module from the ``model_config`` an export stores
(the world task's ``export_config()``), ready for the exported weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from infworld.config import build_dataclass
from infworld.errors import CheckpointError
from infworld.models.dit import DiT, DiTConfig
from infworld.models.tokenizers import build_tokenizer
from infworld.models.wan.config import WanConfig
from infworld.models.wan.transformer import build_backbone
from infworld.video_frames import frames_per_latent

BACKBONES = ("dit", "wan")


class WorldNet(nn.Module):
    """Frozen tokenizer + trainable DiT; ``forward`` is the DiT (so DDP wraps the right thing)."""

    def __init__(self, dit: DiT, tokenizer: nn.Module, frame_size: tuple[int, int],
                 model_config: dict[str, Any], memory_modules: nn.ModuleDict | None = None):
        super().__init__()
        self.dit = dit
        # learned memory parts by strategy name (HPMC's compressor), trained jointly with the DiT
        self.memory_modules = memory_modules if memory_modules is not None else nn.ModuleDict()
        self.tokenizer = tokenizer.eval()
        for p in self.tokenizer.parameters():
            p.requires_grad_(False)
        self.frame_size = tuple(frame_size)
        self.model_config = model_config  # export_config(): rebuilds this module

    def forward(self, x: torch.Tensor, t: torch.Tensor, actions: dict[str, torch.Tensor],
                memory: Any = None, ref_pose: torch.Tensor | None = None, memory_name: str | None = None,
                **kw: Any):
        """The DiT; with ``memory`` (a MemoryContext) its frames are first run at t = 0 and pinned as
        context (memory/context.py), inside this one call so DDP sees a single forward.
        ``memory_name``: the strategy that built it (its layout may differ from the default)."""
        if memory is not None:
            from infworld.memory.context import MemoryLayout, memory_past

            layout = MemoryLayout.of(self.model_config, memory_name)
            kw["past"] = memory_past(self.dit, memory, ref_pose, layout=layout)
        return self.dit(x, t, actions, **kw)

    @property
    def frames_per_latent(self) -> int:
        """Video frames per latent frame of the tokenizer (4: the Wan VAE in video mode)."""
        return frames_per_latent(self.tokenizer)

    def no_weight_decay(self) -> set[str]:
        """The per-block modulation offsets are biases in matrix form: no weight decay (trainer.py)."""
        return {name for name, _ in self.named_parameters() if name.endswith(".modulation")}

    def train(self, mode: bool = True) -> WorldNet:
        super().train(mode)
        self.tokenizer.eval()  # frozen: never in training mode (e.g. running latent statistics)
        return self

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, max_batch: int = 64) -> torch.Tensor:
        """Frames (B, L, 3, H, W) uint8 or float in [-1, 1] -> latents (B, L, C, h, w); in video mode
        (B, 1 + r k, ...) -> (B, 1 + k, ...), each row one video."""
        if self.frames_per_latent > 1:
            return self.tokenizer.encode(frames)
        b, n = frames.shape[:2]
        flat = frames.reshape(b * n, *frames.shape[2:])
        z = torch.cat([self.tokenizer.encode(flat[i:i + max_batch]) for i in range(0, b * n, max_batch)])
        return z.reshape(b, n, *z.shape[1:])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_batch: int = 64) -> torch.Tensor:
        """Latents (B, L, C, h, w) -> frames (B, L, 3, H, W) in [-1, 1]; in video mode (B, 1 + r (L - 1),
        ...), each row one video."""
        if self.frames_per_latent > 1:
            return self.tokenizer.decode(latents.float())
        b, n = latents.shape[:2]
        flat = latents.reshape(b * n, *latents.shape[2:]).float()
        x = torch.cat([self.tokenizer.decode(flat[i:i + max_batch]) for i in range(0, b * n, max_batch)])
        return x.reshape(b, n, *x.shape[1:])


def build_world_net(model_config: dict[str, Any]) -> WorldNet:
    """The untrained :class:`WorldNet` that ``model_config`` (an export's, the world task's
    ``export_config()``) describes; CheckpointError when it is incomplete or names unknown parts."""
    backbone = model_config.get("backbone", "dit")
    if backbone not in BACKBONES:
        raise CheckpointError(f"world model config: unknown backbone {backbone!r}; expected one of "
                              f"{list(BACKBONES)}")
    try:
        if backbone == "wan":
            dit_cfg = build_dataclass(WanConfig, model_config["wan"], "wan")
        else:
            dit_cfg = build_dataclass(DiTConfig, model_config["dit"], "dit")
        frame_size = tuple(int(s) for s in model_config["frame_size"])
        tokenizer = build_tokenizer(dict(model_config["tokenizer"]), frame_size)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"world model config is incomplete or corrupt ({exc!r})") from exc
    modules = nn.ModuleDict()
    for name in model_config.get("memory_modules") or []:
        from infworld.memory.registry import memory_class

        cls_ = memory_class(name)
        if cls_ is None:
            raise CheckpointError(f"world model config: unknown memory {name!r} in memory_modules")
        module = cls_.build_module(dict(model_config.get("memory", {}).get(name, {})),
                                   (dit_cfg.in_channels, *dit_cfg.latent_size))
        if module is not None:
            modules[name] = module
    # the export holds every weight: Wan's are not read again from wan.weights
    net = build_backbone(dit_cfg, load_weights=False) if backbone == "wan" else DiT(dit_cfg)
    return WorldNet(net, tokenizer, frame_size, dict(model_config), modules)
