"""Frame resizing shared by every collector and importer, so all data is resized the same way."""

from __future__ import annotations

import cv2
import numpy as np


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(T, H, W, C)`` or ``(H, W, C)`` uint8 frames to ``size = (H', W')``.

    Area interpolation when shrinking (no aliasing on the 160x120 -> 64x64 Doom path), bilinear when
    growing. The aspect ratio is not preserved: the dataset resolution wins, as in the collectors.
    """
    h, w = int(size[0]), int(size[1])
    single = frames.ndim == 3
    batch = frames[None] if single else frames
    if batch.shape[1:3] == (h, w):
        out = batch.astype(np.uint8, copy=False)
    else:
        shrink = batch.shape[1] >= h and batch.shape[2] >= w
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        out = np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in batch])
        if out.ndim == 3:  # cv2 drops a trailing channel of size 1
            out = out[..., None]
        out = out.astype(np.uint8, copy=False)
    return out[0] if single else out
