"""Video frames <-> latent frames at the boundary of the rollout engine (infworld/world.py).

A tokenizer may compress time. Its optional attribute ``frames_per_latent`` (r, default 1) says how
many video frames one latent frame stands for: 1 for the pixel tokenizer, our autoencoder and the Wan
VAE in image mode; 4 for the Wan VAE in video mode, whose causal encoder turns a video of 1 + r k
frames into 1 + k latents (latent 0 holds frame 0 alone, latent j >= 1 the frames r(j-1)+1 .. rj;
infworld/models/wan/vae.py). The engine counts, caches, remembers and generates **latent** frames;
:class:`VideoFrames` converts what crosses its public API:

* frames: ``reset`` takes 1 + r k frames (k + 1 latents), ``observe`` and ``step`` r n frames or
  actions (n latents); anything else is a DataError naming the expected multiple;
* actions: grouped per latent frame as Infinite-World does, (B, n, r) per field, oldest first
  (:func:`~infworld.models.wan.latents.group_actions`; latent 0 after a reset has r null actions); the
  backbone's action adapter reduces each group with strided 1-D convolutions (models/wan/adapters.py);
* poses: each latent frame takes the pose of its last video frame (as in the training latents);
* coding: frames are encoded and latents decoded through the VAE's streaming coders, which keep the
  causal convolution caches (:class:`~infworld.models.wan.vae.VideoEncoderStream` /
  ``VideoDecoderStream``), so a rollout decoded chunk by chunk equals the whole video decoded at once,
  with flat memory. The rollout is one video for both coders: the decoder also sees every observed
  latent, the encoder every committed generated frame (so ``observe`` after ``step`` continues the
  same video). That costs one extra pass per committed frame (an encode of generated frames, a decode
  of observed latents), small beside the DiT at Wan scale (docs/scale.md). ``step(commit=False)``
  decodes from a snapshot of the decoder state and leaves it unchanged.

With r = 1 every method is the identity or the tokenizer's per-frame ``encode``/``decode``, so the
engine behaves exactly as without this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from infworld.errors import ConfigError, DataError, MemoryConfigError


def frames_to_float(frames: Any, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames (B, n, H, W, 3) or (n, H, W, 3) -> float (B, n, 3, H, W) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(frames)) if not torch.is_tensor(frames) else frames
    if x.dim() == 4:
        x = x[None]
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] != 3 or tuple(x.shape[2:4]) != tuple(size):
        raise DataError(f"expected uint8 frames (B, n, {size[0]}, {size[1]}, 3), got "
                        f"{tuple(x.shape)} {x.dtype}", field="frames")
    return x.permute(0, 1, 4, 2, 3).float() / 127.5 - 1.0


def float_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (B, n, 3, H, W) in [-1, 1] -> uint8 numpy (B, n, H, W, 3)."""
    u8 = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 1, 3, 4, 2).cpu().numpy()


def frames_per_latent(tokenizer: Any) -> int:
    """The tokenizer's video frames per latent frame (its optional ``frames_per_latent``, default 1)."""
    r = getattr(tokenizer, "frames_per_latent", 1)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ConfigError(f"tokenizer {type(tokenizer).__name__}: frames_per_latent must be an int >= 1, "
                          f"got {r!r}")
    return r


class VideoFrames:
    """The engine's video <-> latent conversions for a world network ``net`` (module docstring)."""

    def __init__(self, net: torch.nn.Module):
        self.net = net
        self.tok = getattr(net, "tokenizer", None)
        self.r = r = frames_per_latent(self.tok)
        backbone_r = int(getattr(net.dit.cfg, "frames_per_latent", 1))
        if backbone_r != r:
            raise ConfigError(f"the tokenizer gives {r} video frames per latent frame, but the backbone "
                              f"groups {backbone_r} actions per latent frame (frames_per_latent); train "
                              "them together (docs/scale.md, video mode)")
        if r > 1 and not (hasattr(self.tok, "stream_encoder") and hasattr(self.tok, "stream_decoder")):
            raise ConfigError(f"tokenizer {type(self.tok).__name__}: compresses time ({r} frames per latent) "
                              "but has no stream_encoder()/stream_decoder() for chunked rollouts")
        self.encoder = self.decoder = None
        self.reset()

    def reset(self) -> None:
        """Start a new video: fresh streaming coders (r > 1)."""
        if self.r > 1:
            self.encoder, self.decoder = self.tok.stream_encoder(), self.tok.stream_decoder()

    def check_memory(self, memory: Any) -> None:
        """Dead reckoning integrates one action per frame: not at r > 1 (pass poses instead)."""
        tracker = getattr(memory, "tracker", None)
        if self.r > 1 and getattr(tracker, "mode", "") == "dead_reckon":
            raise MemoryConfigError(f"memory {memory.name!r}: poses='dead_reckon' integrates one action per "
                                    f"frame and is not supported with {self.r} frames per latent frame; pass "
                                    "camera poses (B, n, 5) to reset/step/observe")

    # -- counts ------------------------------------------------------------------------------

    def latents_of(self, n: int, first: bool = False) -> int:
        """Latent frames for ``n`` video frames (``first``: a reset's context, 1 + r k frames)."""
        r = self.r
        if r == 1:
            return n
        if first and (n < 1 or (n - 1) % r):
            raise DataError(f"expected 1 + {r} k context frames ({r} video frames per latent frame, the "
                            f"first alone), got {n}", field="frames")
        if not first and (n < r or n % r):
            raise DataError(f"expected a multiple of {r} frames ({r} video frames per latent frame), got {n}",
                            field="frames")
        return 1 + (n - 1) // r if first else n // r

    def step_latents(self, n: int, chunk: int) -> int:
        """Latent frames generated by ``step`` with ``n`` actions (1 .. ``chunk`` latent frames)."""
        r = self.r
        if r == 1 and not 1 <= n <= chunk:
            raise DataError(f"expected 1..{chunk} actions per step (the chunk size), got {n}",
                            field="actions")
        if r > 1 and (n % r or not 1 <= n // r <= chunk):
            raise DataError(f"expected a multiple of {r} actions per step ({r} video frames per latent "
                            f"frame), from {r} to {r * chunk} (chunk {chunk} latent frames), got {n}",
                            field="actions")
        return n // r

    # -- actions and poses -------------------------------------------------------------------

    def group(self, actions: dict[str, torch.Tensor], first: bool = False) -> dict[str, torch.Tensor]:
        """Per-video-frame actions (B, n[, d]) -> per latent frame (B, n / r, r[, d]). ``first``: a
        reset's frame actions (frame 0's is null), grouped as the training latents (latent 0: r nulls)."""
        if self.r == 1:
            return actions
        if first:
            from infworld.models.wan.latents import group_actions

            return group_actions({k: a[:, 1:] for k, a in actions.items()}, self.r)
        return {k: a.unflatten(1, (a.shape[1] // self.r, self.r)) for k, a in actions.items()}

    def poses(self, poses: torch.Tensor | None, first: bool = False) -> torch.Tensor | None:
        """Per-video-frame poses (B, n, 5) -> the pose of each latent frame's last video frame."""
        if poses is None or self.r == 1:
            return poses
        return poses[:, :: self.r] if first else poses[:, self.r - 1 :: self.r]

    # -- coding ------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Observed frames (B, n, 3, H, W) in [-1, 1] -> their latents (B, n / r (+1 after reset), C, h, w);
        at r > 1 the latents also enter the decoder's causal cache (their frames are discarded)."""
        if self.r == 1:
            return self.net.encode(frames)
        latents = self.encoder.push(frames).to(frames.device)
        self.decoder.push(latents)
        return latents

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, commit: bool = True) -> torch.Tensor:
        """Generated latents (B, n, C, h, w) -> frames (B, n r, 3, H, W) in [-1, 1]. At r > 1, committed
        frames also enter the encoder's causal cache; ``commit=False`` leaves both coders unchanged."""
        if self.r == 1:
            return self.net.decode(latents)
        dec = self.decoder
        saved = (list(dec.cache), dec.started)  # cache entries are replaced, never written in place
        frames = dec.push(latents)
        if commit:
            self.encoder.push(frames)  # no latent completes early: groups of r frames stay aligned
        else:
            dec.cache, dec.started = saved
        return frames

    def nbytes(self) -> int:
        """Bytes of the coders' causal caches (0 at r = 1)."""
        total = 0
        for stream in (self.encoder, self.decoder):
            if stream is None:
                continue
            tensors = [c for c in stream.cache if torch.is_tensor(c)]
            tensors += [stream.pending] if getattr(stream, "pending", None) is not None else []
            total += sum(t.numel() * t.element_size() for t in tensors)
        return total
