"""The Wan2.1 VAE as a tokenizer: frames <-> normalised latents, behind the tokenizer interface.

Wraps diffusers' ``AutoencoderKLWan`` (a causal 3D convolutional VAE: Wan team 2025, Sec. 3.1). Its
compression: 8 x 8 in space, 16 latent channels, and **4 x in time** for videos, causally: a video of
T = 1 + 4k frames becomes F = 1 + k latent frames; latent 0 holds frame 0 alone, latent j >= 1 holds
frames 4j-3 .. 4j. Each latent depends only on its frames and the frames before them, which is what
lets a stream be encoded and decoded chunk by chunk (:class:`VideoEncoderStream`,
:class:`VideoDecoderStream`, equal to the whole-video calls).

Two modes, one object:

* **image mode** (``temporal=False``, ``frames_per_latent = 1``): :meth:`WanVAE.encode` /
  :meth:`WanVAE.decode` take (N, 3, H, W) frames / (N, C, h, w) latents, each frame encoded alone as
  a one-frame video. This is the contract of every other tokenizer here (WorldNet flattens clips to
  frames), so the rollout engine works unchanged, one latent per frame.
* **video mode** (``temporal=True``, ``frames_per_latent = 4``): 5-D inputs (B, T, 3, H, W) /
  (B, F, C, h, w) are whole videos with the 4x temporal compression; a chunk of the world model is
  then a number of latent frames, and actions per latent frame are grouped by
  :func:`infworld.models.wan.latents.group_actions`. The rollout engine streams through
  :meth:`WanVAE.stream_encoder` / :meth:`WanVAE.stream_decoder` (infworld/video_frames.py); training
  reads whole-episode latents (latents.py, clips.py).

Latents are normalised with the per-channel mean and std of the VAE's config (``latents_mean``,
``latents_std``, as Wan's pipelines do): ``z_norm = (mu - mean) / std`` with mu the posterior mean.
Frames are uint8 (0..255) or float in [-1, 1]; decoded frames are float in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infworld.errors import CheckpointError, ConfigError, DataError

WAN_VAE_PREFIX = "wan-vae:"
ORIGINAL_VAE_FILE = "Wan2.1_VAE.pth"


def _diffusers():
    try:
        from diffusers import AutoencoderKLWan
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ConfigError("the Wan VAE needs diffusers: pip install 'infworld[wan]'") from exc
    return AutoencoderKLWan, WanCausalConv3d


def _to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float [-1, 1]; float taken as already in [-1, 1]."""
    return frames.float() / 127.5 - 1.0 if frames.dtype == torch.uint8 else frames.float()


class WanVAE(nn.Module):
    """Tokenizer over a frozen ``AutoencoderKLWan`` (module docstring)."""

    def __init__(self, vae: nn.Module, temporal: bool = False):
        super().__init__()
        self.vae = vae.eval()
        for p in self.vae.parameters():
            p.requires_grad_(False)
        cfg = vae.config
        self.temporal = bool(temporal)
        self.latent_channels = int(cfg.z_dim)
        self.temporal_compression = int(cfg.scale_factor_temporal or 4)
        self.spatial_compression = int(cfg.scale_factor_spatial or 8)
        c = self.latent_channels
        # derived from the config: not saved
        self.register_buffer("latent_mean", torch.tensor(cfg.latents_mean, dtype=torch.float32).view(c, 1, 1),
                             persistent=False)
        self.register_buffer("latent_std", torch.tensor(cfg.latents_std, dtype=torch.float32).view(c, 1, 1),
                             persistent=False)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, temporal: bool = False,
                        dtype: torch.dtype = torch.float32) -> WanVAE:
        """Load the VAE from a local path: a diffusers folder (``config.json`` +
        ``diffusion_pytorch_model.safetensors``, or a pipeline folder with ``vae/``), or the original
        ``Wan2.1_VAE.pth`` (the file, or a folder holding it), converted with diffusers' converter."""
        auto, _ = _diffusers()
        raw = str(path)
        p = Path(os.path.expandvars(raw)).expanduser()
        if not p.exists():
            hint = " (an environment variable in it is unset)" if "$" in str(p) else ""
            raise CheckpointError(f"Wan VAE {raw!r}: {str(p)!r} does not exist{hint} (docs/scale.md)")
        if p.is_dir() and (p / "vae" / "config.json").is_file():
            p = p / "vae"
        if p.is_dir() and (p / "config.json").is_file():
            try:
                vae = auto.from_pretrained(str(p), torch_dtype=dtype, local_files_only=True)
            except (OSError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"Wan VAE {str(p)!r}: cannot load the diffusers VAE ({exc})") from exc
            return cls(vae, temporal)
        pth = p / ORIGINAL_VAE_FILE if p.is_dir() else p
        if not pth.is_file():
            raise CheckpointError(f"Wan VAE {str(p)!r}: expected a diffusers VAE folder (config.json) or "
                                  f"{ORIGINAL_VAE_FILE}")
        return cls(load_original_vae(pth, dtype), temporal)

    @classmethod
    def from_config(cls, vae_config: dict[str, Any], temporal: bool = False) -> WanVAE:
        """An untrained VAE of this architecture (weights come from an export that contains it)."""
        auto, _ = _diffusers()
        cfg = {k: v for k, v in vae_config.items() if not k.startswith("_")}
        return cls(auto.from_config(cfg), temporal)

    def embed(self) -> dict[str, Any]:
        """JSON that rebuilds this tokenizer without files (:meth:`from_config`)."""
        return {"vae_config": {k: v for k, v in dict(self.vae.config).items() if not k.startswith("_")},
                "temporal": self.temporal}

    # -- sizes -----------------------------------------------------------------------------

    @property
    def frames_per_latent(self) -> int:
        """Video frames per latent frame in this mode (4 for Wan in video mode, 1 in image mode)."""
        return self.temporal_compression if self.temporal else 1

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames of a video of ``num_frames`` frames (1 + (T - 1) // 4 in video mode)."""
        r = self.frames_per_latent
        return num_frames if r == 1 else 1 + (num_frames - 1) // r

    def video_frames(self, num_latents: int) -> int:
        """Frames decoded from ``num_latents`` latent frames (1 + 4 (F - 1) in video mode)."""
        r = self.frames_per_latent
        return num_latents if r == 1 else 1 + r * (num_latents - 1)

    def latent_shape(self, frame_size: tuple[int, int]) -> tuple[int, int, int]:
        s = self.spatial_compression
        return self.latent_channels, frame_size[0] // s, frame_size[1] // s

    # -- normalisation ---------------------------------------------------------------------

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        """Posterior means (..., C, h, w) -> normalised latents."""
        return (mu.float() - self.latent_mean) / self.latent_std

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() * self.latent_std + self.latent_mean

    # -- the tokenizer interface -----------------------------------------------------------

    def _check_frames(self, x: torch.Tensor) -> None:
        s = self.spatial_compression
        if x.shape[-3] != 3 or x.shape[-2] % s or x.shape[-1] % s:
            raise DataError(f"Wan VAE: expected frames (..., 3, H, W) with H, W multiples of {s}, got "
                            f"{tuple(x.shape)}", field="frames")

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) frames -> (N, C, H/8, W/8), each frame alone; in video mode (B, T, 3, H, W)
        -> (B, 1 + (T-1)//4, C, H/8, W/8) (:meth:`encode_video`)."""
        if frames.dim() == 5:
            return self.encode_video(frames)
        self._check_frames(frames)
        x = _to_float(frames).to(self._dtype())[:, :, None]  # (N, 3, 1, H, W): one-frame videos
        mu = self.vae.encode(x).latent_dist.mode()  # (N, C, 1, h, w)
        return self.normalize(mu[:, :, 0])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, 3, H, W) in [-1, 1]; (B, F, C, h, w) -> a video (:meth:`decode_video`)."""
        if latents.dim() == 5:
            return self.decode_video(latents)
        z = self.denormalize(latents).to(self._dtype())[:, :, None]  # (N, C, 1, h, w)
        return self.vae.decode(z).sample[:, :, 0].float()

    @torch.no_grad()
    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W), T = 1 + r k -> normalised latents (B, 1 + k, C, h, w) (r = frames_per_latent)."""
        self._check_frames(frames)
        r, t = self.frames_per_latent, frames.shape[1]
        if (t - 1) % r:
            raise DataError(f"Wan VAE: a video of {t} frames; expected 1 + {r} k frames (4x temporal "
                            "compression: frame 0 alone, then groups of 4)", field="frames")
        if r == 1:
            return self.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        x = _to_float(frames).to(self._dtype()).transpose(1, 2)  # (B, 3, T, H, W)
        mu = self.vae.encode(x).latent_dist.mode()  # (B, C, F, h, w)
        return self.normalize(mu.transpose(1, 2))

    @torch.no_grad()
    def decode_video(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, F, C, h, w) -> (B, 1 + r (F - 1), 3, H, W) in [-1, 1]."""
        if self.frames_per_latent == 1:
            return self.decode(latents.flatten(0, 1)).unflatten(0, latents.shape[:2])
        z = self.denormalize(latents).to(self._dtype()).transpose(1, 2)  # (B, C, F, h, w)
        return self.vae.decode(z).sample.transpose(1, 2).float()

    def _dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def train(self, mode: bool = True) -> WanVAE:
        super().train(mode)
        self.vae.eval()  # frozen
        return self

    def stream_encoder(self) -> VideoEncoderStream:
        return VideoEncoderStream(self)

    def stream_decoder(self) -> VideoDecoderStream:
        return VideoDecoderStream(self)


def load_original_vae(path: Path, dtype: torch.dtype = torch.float32) -> nn.Module:
    """``Wan2.1_VAE.pth`` (the original release) -> ``AutoencoderKLWan`` with diffusers' converter;
    missing or unexpected keys raise CheckpointError naming them."""
    auto, _ = _diffusers()
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign file
        raise CheckpointError(f"Wan VAE {str(path)!r}: cannot read ({exc})") from exc
    vae = auto()  # the default config is Wan2.1's VAE
    converted = convert_wan_vae_to_diffusers(sd)
    result = vae.load_state_dict(converted, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"Wan VAE {str(path)!r}: missing keys {result.missing_keys[:10]}, unexpected "
                              f"keys {result.unexpected_keys[:10]} (not a Wan2.1 VAE?)")
    return vae.to(dtype)


class _Stream:
    """Shared state of the streaming coders: diffusers' per-conv feature cache (the last two time
    steps of each causal conv's input), so memory stays flat over any length."""

    def __init__(self, tok: WanVAE, part: nn.Module):
        _, causal = _diffusers()
        self.tok = tok
        self.part = part
        self.num_convs = sum(isinstance(m, causal) for m in part.modules())
        self.reset()

    def reset(self) -> None:
        self.cache: list[Any] = [None] * self.num_convs
        self.started = False

    def _run(self, x: torch.Tensor, **kw: Any) -> torch.Tensor:
        return self.part(x, feat_cache=self.cache, feat_idx=[0], **kw)


class VideoEncoderStream(_Stream):
    """Encode a video chunk by chunk: frame 0 alone, then every 4 frames; equal to
    :meth:`WanVAE.encode_video` of the whole video. Frames that do not complete a group wait."""

    def __init__(self, tok: WanVAE):
        super().__init__(tok, tok.vae.encoder)

    def reset(self) -> None:
        super().reset()
        self.pending: torch.Tensor | None = None  # (B, 3, k, H, W) frames waiting for their group

    @torch.no_grad()
    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, n, 3, H, W) -> the latents they complete (B, m, C, h, w), m >= 0."""
        tok, r = self.tok, self.tok.temporal_compression
        tok._check_frames(frames)
        x = _to_float(frames).to(tok._dtype()).transpose(1, 2)  # (B, 3, n, H, W)
        if self.pending is not None:
            x = torch.cat([self.pending, x], dim=2)
        out = []
        while x.shape[2] >= (r if self.started else 1):
            k = r if self.started else 1
            h = tok.vae.quant_conv(self._run(x[:, :, :k]))  # (B, 2C, 1, h, w): mean and log-variance
            out.append(h[:, : tok.latent_channels])
            x, self.started = x[:, :, k:], True
        self.pending = x if x.shape[2] else None
        if not out:
            c, (hh, ww) = tok.latent_channels, (s // tok.spatial_compression for s in frames.shape[-2:])
            return torch.zeros(frames.shape[0], 0, c, hh, ww)
        return tok.normalize(torch.cat(out, dim=2).transpose(1, 2))


class VideoDecoderStream(_Stream):
    """Decode latents chunk by chunk (latent 0 -> 1 frame, every later one -> 4 frames); equal to
    :meth:`WanVAE.decode_video` of the whole sequence."""

    def __init__(self, tok: WanVAE):
        super().__init__(tok, tok.vae.decoder)

    @torch.no_grad()
    def push(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, m, C, h, w) -> frames (B, n, 3, H, W) in [-1, 1]."""
        tok = self.tok
        z = tok.denormalize(latents).to(tok._dtype()).transpose(1, 2)  # (B, C, m, h, w)
        z = tok.vae.post_quant_conv(z)
        out = []
        for i in range(z.shape[2]):
            out.append(self._run(z[:, :, i : i + 1], first_chunk=not self.started))
            self.started = True
        return torch.cat(out, dim=2).clamp(-1.0, 1.0).transpose(1, 2).float()


def load_wan_tokenizer(spec: str, temporal: bool = False) -> tuple[WanVAE, dict[str, Any]]:
    """``"wan-vae:PATH"`` -> (the loaded tokenizer, the JSON that rebuilds it without files), the two
    values the world task's ``load_tokenizer`` returns for its other tokenizers."""
    if not spec.startswith(WAN_VAE_PREFIX):
        raise ConfigError(f"tokenizer {spec!r}: expected '{WAN_VAE_PREFIX}PATH'")
    tok = WanVAE.from_pretrained(spec[len(WAN_VAE_PREFIX):], temporal=temporal)
    return tok, {"spec": spec, **tok.embed()}


def build_wan_tokenizer(embed: dict[str, Any]) -> WanVAE:
    """Rebuild the (untrained) tokenizer from :func:`load_wan_tokenizer`'s JSON; its weights come with
    the world export (they are part of the WorldNet state dict)."""
    if "vae_config" not in embed:
        raise CheckpointError(f"world config: tokenizer entry {embed.get('spec')!r} lacks 'vae_config'")
    return WanVAE.from_config(dict(embed["vae_config"]), temporal=bool(embed.get("temporal", False)))
