"""The world model's frozen tokenizer, named by a spec string: frames (3, H, W) <-> latents (C, h, w).

Three kinds of spec (the world recipe's ``model.tokenizer``, docs/training.md):

* ``pixels:P``: :class:`PixelTokenizer`, a parameter-free space-to-depth map, frames (3, H, W) ->
  latents (3 P^2, H/P, W/P), for pixel-space diffusion as in DIAMOND, tests and quick experiments;
* ``wan-vae:PATH``: the Wan2.1 VAE (infworld/models/wan/vae.py), one latent per frame in image
  mode, 4 frames per latent in video mode (``temporal``);
* anything else: an exported tokenizer (a folder or a name, loaded with
  :func:`infworld.models.loading.load_model`).

:func:`load_tokenizer` loads one and returns, beside it, the JSON that the world export embeds;
:func:`build_tokenizer` rebuilds the untrained module from that JSON alone (the trained weights come
with the world export's state dict), so an export needs no other file.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from infworld.errors import CheckpointError, ConfigError

PIXELS_PREFIX = "pixels:"
WAN_VAE_PREFIX = "wan-vae:"  # = infworld.models.wan.vae.WAN_VAE_PREFIX (that module imports diffusers lazily)


class PixelTokenizer(nn.Module):
    """Space-to-depth "tokenizer" without parameters: (..., 3, H, W) <-> (..., 3 P^2, H/P, W/P) in [-1, 1]."""

    def __init__(self, patch: int, image_size: tuple[int, int]):
        super().__init__()
        if patch < 1 or image_size[0] % patch or image_size[1] % patch:
            raise ConfigError(f"tokenizer 'pixels:{patch}': the patch must divide the frame size "
                              f"{tuple(image_size)}")
        self.patch = patch
        self.image_size = tuple(image_size)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.float() / 127.5 - 1.0 if frames.dtype == torch.uint8 else frames.float()
        lead = x.shape[:-3]
        return F.pixel_unshuffle(x.reshape(-1, *x.shape[-3:]), self.patch).reshape(*lead, -1, *self._grid())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        lead = latents.shape[:-3]
        x = F.pixel_shuffle(latents.reshape(-1, *latents.shape[-3:]), self.patch)
        return x.clamp(-1.0, 1.0).reshape(*lead, *x.shape[-3:])

    def _grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch, self.image_size[1] // self.patch


def _export_meta_config(meta: Any, source: str) -> tuple[str, dict[str, Any]]:
    """(task, model config) of a loaded export's config.json."""
    if isinstance(meta, dict):
        task = meta.get("task")
        keys = ("model_config", "model", "config")
        cfg = next((meta[k] for k in keys if isinstance(meta.get(k), dict)), None)
        if isinstance(task, str) and cfg is not None:
            return task, cfg
    raise CheckpointError(f"tokenizer {source!r}: its config.json lacks 'task' and the model config")


def load_tokenizer(spec: str, frame_size: tuple[int, int], temporal: bool = False
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """The tokenizer named by ``spec`` and the JSON that rebuilds it without files (see build_tokenizer);
    ``temporal``: the Wan VAE in video mode."""
    if spec.startswith(PIXELS_PREFIX):
        embed: dict[str, Any] = {"spec": spec}
    elif spec.startswith(WAN_VAE_PREFIX):
        from infworld.models.wan.vae import load_wan_tokenizer

        return load_wan_tokenizer(spec, temporal)  # image mode (one latent per frame) unless temporal
    else:
        from infworld.models.loading import load_model

        module, meta = load_model(spec, map_location="cpu")
        task, cfg = _export_meta_config(meta, spec)
        if task != "tokenizer":
            raise CheckpointError(f"tokenizer {spec!r}: is a {task!r} model, expected a 'tokenizer' export")
        embed = {"spec": spec, "task": task, "model_config": cfg}
        return module, embed
    return build_tokenizer(embed, frame_size), embed


def build_tokenizer(embed: dict[str, Any], frame_size: tuple[int, int]) -> nn.Module:
    """Rebuild the (untrained) tokenizer from its embedded config; weights come with the world export."""
    spec = str(embed.get("spec", ""))
    if spec.startswith(PIXELS_PREFIX):
        try:
            patch = int(spec[len(PIXELS_PREFIX):])
        except ValueError:
            raise ConfigError(f"tokenizer {spec!r}: expected 'pixels:P' with an integer P") from None
        return PixelTokenizer(patch, frame_size)
    if spec.startswith(WAN_VAE_PREFIX):
        from infworld.models.wan.vae import build_wan_tokenizer

        return build_wan_tokenizer(embed)
    if "task" not in embed or "model_config" not in embed:
        raise CheckpointError(f"world config: tokenizer entry {embed!r} lacks 'task'/'model_config'")
    from infworld.models.loading import build_exported

    return build_exported(embed["task"], embed["model_config"])
