"""Frames inputs of ``infworld data import`` (importer.py): a video file, a folder of images or an
``.npy`` / ``.npz`` array, each read into (T, H, W, 3) uint8 frames resized with
:func:`infworld.data.frames.resize_frames`, exactly as the collectors do.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.episode import DAMAGED_NPZ_ERRORS, damaged_npz
from infworld.data.frames import resize_frames
from infworld.errors import DataError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_CHUNK = 256  # frames resized per call when converting a big array


def _natural_key(name: str) -> list:
    # "f2.png" < "f10.png"; zero-padded names sort the same as plain string order
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _to_rgb(frame: np.ndarray, path: str) -> np.ndarray:
    """(H, W[, C]) decoded frame -> (H, W, 3) uint8 (gray is repeated, alpha dropped)."""
    if frame.dtype != np.uint8:
        raise DataError(f"expected 8-bit frames, got {frame.dtype}", path=path, field="frames")
    if frame.ndim == 2:
        frame = frame[..., None]
    if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
        raise DataError(f"expected (H, W, 3) frames, got {frame.shape}", path=path, field="frames")
    return np.repeat(frame, 3, axis=-1) if frame.shape[-1] == 1 else frame[..., :3]


def _decoder_message(exc: BaseException) -> str:
    """One line from a decoder error: imageio puts ffmpeg's whole stderr (version banner, build
    configuration, library versions) in the message; its first line and ffmpeg's last line say it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("===")]
    if not lines:
        return type(exc).__name__
    head, tail = lines[0], re.sub(r"^\[[^]]*\]\s*", "", lines[-1])  # drop ffmpeg's "[in#0 @ 0x...]"
    return head if len(lines) == 1 or tail == head else f"{head}: {tail}"


def _read_image_folder(p: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """Images of folder ``p`` in natural name order -> (frames (T, H, W, 3) uint8 resized to ``size``,
    their common original (H, W)). Raises DataError for no image, an unreadable one or mixed sizes."""
    files = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS),
                   key=lambda f: _natural_key(f.name))
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in folder", path=str(p))
    import cv2

    out, expected = [], None
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)  # (H, W, 3) BGR uint8, alpha dropped
        if img is None:
            raise DataError("cannot read image", path=str(f))
        if expected is None:
            expected = img.shape[:2]
        elif img.shape[:2] != expected:
            raise DataError(f"image size (H, W) = {img.shape[:2]} differs from {expected} of "
                            f"{files[0].name}; all images of a folder must have one size",
                            path=str(f), field="frames")
        out.append(resize_frames(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), size))
    return np.stack(out), expected


def _read_array(p: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """``.npy`` / ``.npz`` (key ``frames`` or its only array) of (T, H, W, 3) uint8 -> (frames resized
    to ``size`` in chunks, original (H, W))."""
    if p.suffix.lower() == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except DAMAGED_NPZ_ERRORS as exc:
            raise damaged_npz(p, exc, what=".npy file") from exc
    else:
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                if "frames" not in keys and len(keys) != 1:
                    raise DataError(f"expected a 'frames' array or a single array, found {keys}",
                                    path=str(p))
                arr = z["frames" if "frames" in keys else keys[0]]
        except DAMAGED_NPZ_ERRORS as exc:
            raise damaged_npz(p, exc, what=".npz file") from exc
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"expected (T, H, W, 3) uint8, got {arr.shape} {arr.dtype}", path=str(p),
                        field="frames")
    frames = np.concatenate([resize_frames(np.asarray(arr[i:i + _CHUNK]), size)
                             for i in range(0, len(arr), _CHUNK)]) if len(arr) else arr[:0]
    return frames, arr.shape[1:3]


def _read_video(p: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int] | None, float | None]:
    """Decode video ``p`` -> (frames resized to ``size``, original (H, W) or None if it has no frame,
    fps from its metadata or None). Decoder failures become one-line DataErrors."""
    import imageio.v3 as iio

    plugin = None if p.suffix.lower() == ".gif" else "FFMPEG"
    out, expected = [], None
    try:
        for frame in iio.imiter(p, plugin=plugin):
            rgb = _to_rgb(np.asarray(frame), str(p))
            expected = expected or rgb.shape[:2]
            out.append(resize_frames(rgb, size))
        fps = iio.immeta(p, plugin=plugin).get("fps")
    except DataError:
        raise
    except Exception as exc:  # decoders raise many types (OSError, RuntimeError, ...)
        raise DataError(f"cannot decode video ({_decoder_message(exc)})", path=str(p)) from exc
    frames = np.stack(out) if out else np.zeros((0, *size, 3), np.uint8)
    return frames, expected, fps


def load_frames(path: str | os.PathLike, size: tuple[int, int]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read frames from a video, an image folder or an .npy/.npz array, resized to ``size`` (H, W).

    Returns ``(frames (T, H, W, 3) uint8, info)`` with info keys ``kind``, ``original_size`` [H, W]
    and ``fps`` (video only, else None).
    """
    p = Path(path)
    if not p.exists():
        raise DataError("frames input not found", path=str(p))
    fps = None
    if p.is_dir():
        kind, (frames, expected) = "images", _read_image_folder(p, size)
    elif p.suffix.lower() in (".npy", ".npz"):
        kind, (frames, expected) = "array", _read_array(p, size)
    elif p.suffix.lower() in VIDEO_EXTS:
        kind, (frames, expected, fps) = "video", _read_video(p, size)
    else:
        raise DataError(f"unsupported frames input: expected a folder of images, an .npy/.npz array or a "
                        f"video ({', '.join(VIDEO_EXTS)})", path=str(p))
    if len(frames) < 2:
        raise DataError(f"an episode needs at least 2 frames, got {len(frames)}", path=str(p), field="frames")
    info = {"kind": kind, "original_size": [int(expected[0]), int(expected[1])],
            "fps": float(fps) if fps and math.isfinite(fps) else None}
    return frames, info
