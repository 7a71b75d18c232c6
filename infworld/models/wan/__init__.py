"""Wan2.1 at the scale path: the transformer as a block-causal, action-conditioned world-model backbone
(transformer.py), its weights in the original and diffusers layouts (weights.py), and the Wan VAE as
a tokenizer (vae.py, needs the ``wan`` extra: diffusers) with latent caching (latents.py) and latent-rate
training clips for video mode (clips.py).
See docs/scale.md."""

from infworld.models.wan.config import WAN_SIZES, WanConfig
from infworld.models.wan.transformer import WanDiT, build_backbone
from infworld.models.wan.weights import LoadReport, load_wan_weights, save_wan_weights

__all__ = ["WAN_SIZES", "LoadReport", "WanConfig", "WanDiT", "build_backbone", "load_wan_weights",
           "save_wan_weights"]
