"""Video output and frame-fidelity helpers: atomic mp4 writing and uint8 PSNR.

mp4 files are encoded with imageio-ffmpeg into a hidden temp file beside the target and renamed
when complete, so an interrupted rollout never leaves a truncated video under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np

from infworld.data.episode import make_shareable
from infworld.data.outputs import check_output_file
from infworld.errors import DataError

PSNR_CAP_DB = 100.0  # identical frames (MSE 0) are reported as this, so results stay finite JSON


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> np.ndarray:
    """Per-frame PSNR in dB of frames ``a``, ``b`` (N, ...) (or one frame (H, W, C)), peak 255 (uint8).

    PSNR = 10 log10(peak^2 / MSE), capped at :data:`PSNR_CAP_DB` (:func:`psnr_from_mse`). The one
    PSNR of the project: rollouts, bench, the world and tokenizer tasks' evaluations.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        raise DataError(f"psnr: frame shapes differ: {a.shape} vs {b.shape}", field="frames")
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    diff = a.reshape(a.shape[0], -1).astype(np.float64) - b.reshape(b.shape[0], -1).astype(np.float64)
    out = psnr_from_mse((diff**2).mean(axis=1), peak)  # (N,)
    return out[0] if single else out


def psnr_from_mse(mse: float | np.ndarray, peak: float = 255.0) -> np.ndarray:
    """10 log10(peak^2 / MSE) dB, capped at :data:`PSNR_CAP_DB`; ``peak`` 255 for uint8 frames, 2 for
    an MSE measured on frames in [-1, 1] (the same PSNR as of those frames in 0..255)."""
    mse = np.asarray(mse, dtype=np.float64)
    return np.minimum(10.0 * np.log10(peak**2 / np.maximum(mse, 1e-30)), PSNR_CAP_DB)


def side_by_side(left: np.ndarray, right: np.ndarray | None, gap: int = 2) -> np.ndarray:
    """One frame (H, W, 3): ``left`` | gap | ``right`` (black when there is no right frame)."""
    if right is None:
        right = np.zeros_like(left)
    sep = np.full((left.shape[0], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([left, sep, right], axis=1)


class VideoWriter:
    """Streaming mp4 writer (context manager): frames go to a temp file, renamed on success.

    ``scale`` enlarges frames by pixel repetition (64x64 frames are tiny to look at); sizes are
    padded to even numbers as H.264 requires.
    """

    def __init__(self, path: str | os.PathLike, fps: float = 15.0, scale: int = 1):
        # Checked before any frame is made: an .mp4 name in a writable folder (DataError otherwise).
        self.path = check_output_file(path, (".mp4",), what="video file")
        self.fps = float(fps)
        self.scale = max(1, int(scale))
        self._tmp: str | None = None
        self._writer = None
        self.frames_written = 0

    def __enter__(self) -> VideoWriter:
        import imageio.v2 as imageio

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=".tmp.mp4",
                                         dir=self.path.parent)
        os.close(fd)
        make_shareable(self._tmp)
        self._writer = imageio.get_writer(self._tmp, format="FFMPEG", fps=self.fps, codec="libx264",
                                          quality=8, macro_block_size=1, pixelformat="yuv420p")
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 frame (H, W, 3)."""
        f = np.asarray(frame, dtype=np.uint8)
        if self.scale > 1:
            f = f.repeat(self.scale, axis=0).repeat(self.scale, axis=1)
        h, w = f.shape[:2]
        if h % 2 or w % 2:  # yuv420p needs even sizes
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)))
        self._writer.append_data(f)
        self.frames_written += 1

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp is not None and os.path.exists(self._tmp):
                os.unlink(self._tmp)


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float = 15.0,
              scale: int = 1) -> Path:
    """Write uint8 frames (each (H, W, 3)) to ``path`` atomically; returns the path."""
    with VideoWriter(path, fps=fps, scale=scale) as vw:
        for f in frames:
            vw.write(f)
    return Path(path)
