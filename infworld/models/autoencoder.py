"""A small convolutional frame autoencoder: the CPU-scale tokenizer of the world model.

Frames ``(B, 3, H, W)`` (uint8, or float in [-1, 1]) <-> latents ``(B, C, H/f, W/f)``. The layout
follows the latent-diffusion autoencoder (Rombach et al., "High-Resolution Image Synthesis with
Latent Diffusion Models", 2022: residual conv blocks, per-level downsampling, a mirrored decoder),
shrunk for CPUs:

* the stem is a space-to-depth (pixel unshuffle by ``patch``) followed by a 3x3 conv, so no conv ever
  runs at full resolution with many channels;
* each level halves the resolution and doubles the width (capped at ``max_channels``) until the
  total compression is ``downsample``;
* the decoder upsamples by sub-pixel convolution (Shi et al., 2016: conv to 4x channels + pixel
  shuffle), initialised so the four sub-pixels start equal (no checkerboard at init).

The latents are standardised for the world model: running per-channel mean/variance of the raw
latents are tracked as buffers during training (exported with the weights), and :meth:`encode`
returns ``(z - mean) / std`` (about unit variance), :meth:`decode` undoes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from infworld.errors import ConfigError, DataError


def _is_pow2(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass
class AutoencoderConfig:
    """Architecture of :class:`FrameAutoencoder` (everything needed to rebuild it for inference)."""

    image_size: tuple[int, int] = (64, 64)  # (H, W) of the frames
    in_channels: int = 3
    patch: int = 2  # space-to-depth factor of the stem (power of 2)
    downsample: int = 8  # total spatial compression f (power of 2, multiple of patch)
    channels: int = 32  # width of the first level; doubled at every further level
    max_channels: int = 256
    blocks: int = 1  # residual blocks per level, in the encoder and in the decoder
    latent_channels: int = 16
    norm_groups: int = 0  # GroupNorm groups inside residual blocks; 0 = no normalisation
    stats_momentum: float = 0.01  # floor of the running-statistics momentum (cumulative average before)
    grad_checkpointing: bool = False  # recompute residual blocks in backward (saves activation memory)
    channels_last: bool = True  # NHWC activations/weights: ~2x faster convs on CPU (oneDNN) and GPU

    def __post_init__(self) -> None:
        h, w = self.image_size
        f, p = self.downsample, self.patch
        if not _is_pow2(f):
            raise ConfigError(f"model.downsample: expected a power of 2, got {f}")
        if not _is_pow2(p) or p > f:
            raise ConfigError(f"model.patch: expected a power of 2 <= downsample ({f}), got {p}")
        if h < 1 or w < 1 or h % f or w % f:
            raise ConfigError(f"model.image_size: {tuple(self.image_size)} must be positive multiples of "
                              f"downsample={f}")
        for name in ("in_channels", "channels", "max_channels", "blocks", "latent_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: expected an int >= 1, got {getattr(self, name)}")
        if self.norm_groups < 0 or (self.norm_groups and any(c % self.norm_groups for c in self.widths)):
            raise ConfigError(f"model.norm_groups: {self.norm_groups} must be 0 or divide every level width "
                              f"{self.widths}")
        if not 0.0 < self.stats_momentum <= 1.0:
            raise ConfigError(f"model.stats_momentum: expected a float in (0, 1], got {self.stats_momentum}")

    @property
    def levels(self) -> int:
        """Resolution levels after the stem: log2(downsample / patch) + 1."""
        return int(math.log2(self.downsample // self.patch)) + 1

    @property
    def widths(self) -> list[int]:
        return [min(self.channels * 2**i, self.max_channels) for i in range(self.levels)]

    @property
    def latent_size(self) -> tuple[int, int]:
        return self.image_size[0] // self.downsample, self.image_size[1] // self.downsample

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H/f, W/f) of one frame's latents."""
        return (self.latent_channels, *self.latent_size)


class ResBlock(nn.Module):
    """``x + conv(act(conv(act(norm(x)))))``; the last conv starts at zero so the block is the identity."""

    def __init__(self, ch: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, ch) if groups else nn.Identity()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, h, w) -> (B, C, h, w)
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class Upsample(nn.Module):
    """Sub-pixel upsampling by 2: conv to ``4 * out`` channels, then pixel shuffle."""

    def __init__(self, cin: int, cout: int, factor: int = 2):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(cin, cout * factor * factor, 3, padding=1)
        with torch.no_grad():  # ICNR-style init: every sub-pixel gets the same kernel
            w = self.conv.weight.view(cout, factor * factor, cin, 3, 3)
            w.copy_(w[:, :1].expand_as(w))
            b = self.conv.bias.view(cout, factor * factor)
            b.copy_(b[:, :1].expand_as(b))
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, h, w) -> (B, cout, 2h, 2w)
        return self.shuffle(self.conv(x))


class FrameAutoencoder(nn.Module):
    """Frames <-> standardised latents (see the module docstring)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        widths, g, p = cfg.widths, cfg.norm_groups, cfg.patch
        # Encoder: (B, 3, H, W) -> unshuffle (B, 3p^2, H/p, W/p) -> levels -> (B, C, H/f, W/f)
        enc: list[nn.Module] = [nn.PixelUnshuffle(p),
                                nn.Conv2d(cfg.in_channels * p * p, widths[0], 3, padding=1)]
        for i, w in enumerate(widths):
            enc += [ResBlock(w, g) for _ in range(cfg.blocks)]
            if i + 1 < len(widths):
                enc.append(nn.Conv2d(w, widths[i + 1], 3, stride=2, padding=1))
        enc += [nn.SiLU(), nn.Conv2d(widths[-1], cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        # Decoder mirrors it: (B, C, H/f, W/f) -> ... -> (B, 3p^2, H/p, W/p) -> shuffle (B, 3, H, W)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, widths[-1], 3, padding=1)]
        for i in reversed(range(len(widths))):
            dec += [ResBlock(widths[i], g) for _ in range(cfg.blocks)]
            if i > 0:
                dec.append(Upsample(widths[i], widths[i - 1]))
        dec += [nn.SiLU(), nn.Conv2d(widths[0], cfg.in_channels * p * p, 3, padding=1), nn.PixelShuffle(p)]
        self.decoder = nn.Sequential(*dec)
        c = cfg.latent_channels
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_sqmean", torch.ones(c))  # running E[z^2] per channel
        self.register_buffer("stats_count", torch.zeros((), dtype=torch.long))
        if cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    # -- shapes and conversions -------------------------------------------------------------

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    @staticmethod
    def to_float(frames: torch.Tensor) -> torch.Tensor:
        """uint8 [0, 255] -> float [-1, 1]; float input is assumed to be in [-1, 1] already."""
        if frames.dtype == torch.uint8:
            return frames.float() / 127.5 - 1.0
        if not frames.is_floating_point():
            raise DataError(f"expected uint8 or float frames, got dtype {frames.dtype}", field="frames")
        return frames

    @staticmethod
    def to_uint8(frames: torch.Tensor) -> torch.Tensor:
        """float [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
        return ((frames.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)

    def _flatten(self, x: torch.Tensor, shape: tuple[int, ...], what: str) -> tuple[torch.Tensor, tuple]:
        """(..., *shape) -> (N, *shape), checking the trailing dims against the config."""
        if x.ndim < len(shape) + 1 or tuple(x.shape[-len(shape):]) != shape:
            raise DataError(f"expected {what} of shape (..., {', '.join(map(str, shape))}), got "
                            f"{tuple(x.shape)}", field=what)
        lead = tuple(x.shape[:-len(shape)])
        return x.reshape(-1, *shape), lead

    # -- statistics -------------------------------------------------------------------------

    def latent_std(self, eps: float = 1e-6) -> torch.Tensor:
        var = (self.latent_sqmean - self.latent_mean.pow(2)).clamp_min(0.0)
        return (var + eps).sqrt()  # (C,)

    @torch.no_grad()
    def update_stats(self, z: torch.Tensor) -> None:
        """Fold a batch of raw latents (N, C, h, w) into the running per-channel mean and E[z^2]."""
        z = z.detach().float()
        m = max(1.0 / (int(self.stats_count) + 1), self.config.stats_momentum)
        self.latent_mean.lerp_(z.mean(dim=(0, 2, 3)), m)
        self.latent_sqmean.lerp_(z.pow(2).mean(dim=(0, 2, 3)), m)
        self.stats_count += 1

    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> int:
        """Set the latent statistics exactly from frame batches (N, 3, H, W); returns the frame count.

        Called at the end of training on the final (EMA) weights, where the running estimates
        lag behind weights that moved during training.
        """
        total = 0
        s1 = torch.zeros(self.config.latent_channels, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for frames in batches:
            cfg = self.config
            x, _ = self._flatten(self.to_float(frames), (cfg.in_channels, *cfg.image_size), "frames")
            z = self.encode_raw(x).double().cpu()  # (N, C, h, w)
            n = z.shape[0] * z.shape[2] * z.shape[3]
            s1 += z.sum(dim=(0, 2, 3))
            s2 += z.pow(2).sum(dim=(0, 2, 3))
            total += n
        if total == 0:
            raise DataError("calibrate() got no frames", field="frames")
        self.latent_mean.copy_((s1 / total).to(self.latent_mean))
        self.latent_sqmean.copy_((s2 / total).to(self.latent_sqmean))
        return total // (self.latent_shape[1] * self.latent_shape[2])

    def normalize(self, z: torch.Tensor) -> torch.Tensor:  # (..., C, h, w), raw -> standardised
        return (z - self.latent_mean[:, None, None]) / self.latent_std()[:, None, None]

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:  # (..., C, h, w), standardised -> raw
        return z * self.latent_std()[:, None, None] + self.latent_mean[:, None, None]

    # -- networks ---------------------------------------------------------------------------

    def _run(self, net: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for layer in net:
            if self.config.grad_checkpointing and self.training and isinstance(layer, ResBlock):
                x = checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return x

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] -> raw latents (N, C, H/f, W/f)."""
        return self._run(self.encoder, x)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents (N, C, h, w) -> frames (N, 3, H, W), unclamped."""
        return self._run(self.decoder, z)

    def forward(self, frames: torch.Tensor, latent_noise: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: frames (N, 3, H, W) -> (reconstruction (N, 3, H, W), raw latents (N, C, h, w)).

        In training mode the running latent statistics are updated. ``latent_noise`` adds Gaussian
        noise of that many latent standard deviations before decoding, so the decoder learns to
        tolerate the small errors a world model makes in latent space.
        """
        cfg = self.config
        x, _ = self._flatten(self.to_float(frames), (cfg.in_channels, *cfg.image_size), "frames")
        z = self.encode_raw(x)
        if self.training:
            self.update_stats(z)
        zd = z
        if latent_noise > 0:
            eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
            zd = z + latent_noise * self.latent_std().detach()[:, None, None].to(z.dtype) * eps
        return self.decode_raw(zd), z

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (..., 3, H, W) uint8 or float in [-1, 1] -> standardised latents (..., C, H/f, W/f)."""
        cfg = self.config
        x, lead = self._flatten(self.to_float(frames), (cfg.in_channels, *cfg.image_size), "frames")
        return self.normalize(self.encode_raw(x)).reshape(*lead, *cfg.latent_shape)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents (..., C, H/f, W/f) -> frames (..., 3, H, W) in [-1, 1]."""
        cfg = self.config
        z, lead = self._flatten(latents, cfg.latent_shape, "latents")
        x = self.decode_raw(self.denormalize(z)).clamp(-1.0, 1.0)
        return x.reshape(*lead, cfg.in_channels, *cfg.image_size)

    def decode_uint8(self, latents: torch.Tensor) -> torch.Tensor:
        """Standardised latents (..., C, h, w) -> uint8 frames (..., 3, H, W)."""
        return self.to_uint8(self.decode(latents))

