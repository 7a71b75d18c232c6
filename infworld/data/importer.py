"""Turn a user's own footage into an episode (``infworld data import``), see docs/own_data.md.

Inputs:

* frames: a video file (decoded with imageio's ffmpeg plugin), a folder of images (png/jpg/...,
  sorted by name with digit runs compared as numbers, read with OpenCV), or an ``.npy`` / ``.npz``
  array of frames (T, H, W, 3) uint8 (``.npz``: key ``frames`` or its only array). Every frame is
  resized with :func:`infworld.data.frames.resize_frames`, exactly as the collectors do.
* optional ``poses.csv`` with columns ``frame,x,y,z,yaw,pitch`` (one row per frame; yaw in degrees
  CCW from +x, pitch + = up, as in the episode format);
* optional ``actions.csv`` with columns ``frame,forward,right,yaw,pitch[,interact]``: tri-states in
  {-1, 0, 1} (yaw +1 = turn right, pitch +1 = look up; action row t is what happens between frame t
  and t + 1; a row for the last frame is accepted and ignored) and an interact id >= 0. Instead of
  ``forward,right`` a ``move`` column, and instead of ``yaw,pitch`` a ``view`` column, may give the
  schema's ids 0..9 directly (9 = uncertain, which tri-states cannot say).

With poses and no actions the actions are labeled from the poses with Infinite-World's
uncertainty-aware labeling (:func:`infworld.data.actions.label_from_poses`); with neither, every
move/view id is 9 (uncertain) so the episode can still teach appearance and memory, never a wrong
action response. Nothing is written until every input has been read and checked.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.action_schema import UNCERTAIN, encode_pair
from infworld.data.episode import (
    DAMAGED_NPZ_ERRORS,
    META_FILE,
    DatasetMeta,
    Episode,
    check_episode,
    damaged_npz,
    episode_path,
    list_episodes,
    read_meta,
    write_episode,
    write_meta,
)
from infworld.data.frames import resize_frames
from infworld.data.outputs import check_output_dir
from infworld.errors import DataError

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".gif")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
POSE_COLUMNS = ("frame", "x", "y", "z", "yaw", "pitch")
ACTION_COLUMNS = ("frame", "forward", "right", "yaw", "pitch")
# each action id comes from its own id column or from the two tri-state columns it encodes
ID_COLUMNS = {"move": ("forward", "right"), "view": ("yaw", "pitch")}
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
        kind = "images"
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
        frames = np.stack(out)
    elif p.suffix.lower() in (".npy", ".npz"):
        kind = "array"
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
        expected = arr.shape[1:3]
        frames = np.concatenate([resize_frames(np.asarray(arr[i:i + _CHUNK]), size)
                                 for i in range(0, len(arr), _CHUNK)]) if len(arr) else arr[:0]
    elif p.suffix.lower() in VIDEO_EXTS:
        kind = "video"
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
    else:
        raise DataError(f"unsupported frames input: expected a folder of images, an .npy/.npz array or a "
                        f"video ({', '.join(VIDEO_EXTS)})", path=str(p))
    if len(frames) < 2:
        raise DataError(f"an episode needs at least 2 frames, got {len(frames)}", path=str(p), field="frames")
    info = {"kind": kind, "original_size": [int(expected[0]), int(expected[1])],
            "fps": float(fps) if fps and math.isfinite(fps) else None}
    return frames, info


def read_csv_table(path: str | os.PathLike, required: tuple[str, ...],
                   optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV with a header row, as float64 arrays (one value per data row).

    Raises DataError naming the file, the column and the row (1-based data row; the header is line 1)
    for a missing column, a short row, an empty cell, a non-number, NaN or inf.
    """
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel writes a BOM
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except OSError as exc:
        raise DataError(f"cannot read CSV ({exc})", path=path) from exc
    if not rows:
        raise DataError(f"empty file; expected a header row with columns {','.join(required)}", path=path)
    header = [h.strip().lower() for h in rows[0]]
    for col in required:
        if col not in header:
            raise DataError(f"missing column (header is {','.join(header)}; expected {','.join(required)})",
                            path=path, field=col)
    cols = [c for c in required + optional if c in header]
    out = {c: np.empty(len(rows) - 1) for c in cols}
    for r, row in enumerate(rows[1:], start=1):
        for c in cols:
            j = header.index(c)
            cell = row[j].strip() if j < len(row) else ""
            if not cell:
                raise DataError(f"row {r} (line {r + 1}): empty cell", path=path, field=c)
            try:
                v = float(cell)
            except ValueError:
                raise DataError(f"row {r} (line {r + 1}): not a number: {cell!r}",
                                path=path, field=c) from None
            if not math.isfinite(v):
                raise DataError(f"row {r} (line {r + 1}): {cell} is not a finite number", path=path, field=c)
            out[c][r - 1] = v
    return out


def _order_rows(table: dict[str, np.ndarray], path: str, n_expected: tuple[int, ...],
                what: str) -> np.ndarray:
    """Row order sorting the ``frame`` column, which must be exactly 0..N-1 for an N in ``n_expected``."""
    frame = table["frame"]
    n = len(frame)
    if n not in n_expected:
        want = " or ".join(str(k) for k in n_expected)
        raise DataError(f"{n} rows, expected {want} ({what}; frame indices 0..{n_expected[0] - 1})",
                        path=path, field="frame")
    seen = np.full(n, -1)
    for r, v in enumerate(frame, start=1):
        if v != int(v) or not 0 <= v < n:
            raise DataError(f"row {r} (line {r + 1}): frame index {v:g} is not an integer in 0..{n - 1}",
                            path=path, field="frame")
        if seen[int(v)] >= 0:
            raise DataError(f"row {r} (line {r + 1}): frame {int(v)} repeats row {seen[int(v)]}",
                            path=path, field="frame")
        seen[int(v)] = r
    return np.argsort(frame, kind="stable")


def read_poses_csv(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """``poses.csv`` -> (T, 5) float32 [x, y, z, yaw_deg, pitch_deg] in frame order."""
    table = read_csv_table(path, POSE_COLUMNS)
    order = _order_rows(table, str(path), (num_frames,), f"one per frame for {num_frames} frames")
    return np.stack([table[c][order] for c in POSE_COLUMNS[1:]], axis=1).astype(np.float32)


def _first_bad_row(values: np.ndarray, ok: np.ndarray, path: str, column: str, expected: str) -> None:
    """Raise naming the file, column, first row where ``ok`` is False, its value and the valid values."""
    bad = np.nonzero(~ok)[0]
    if len(bad):
        r = int(bad[0]) + 1
        raise DataError(f"row {r} (line {r + 1}): {values[bad[0]]:g} is not {expected}",
                        path=path, field=column)


def read_actions_csv(path: str | os.PathLike, num_frames: int,
                     interact_vocab: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``actions.csv`` -> (move, view, interact) int64 arrays of length T - 1.

    Move comes from a ``move`` id column (0..9) or from ``forward,right`` tri-states; view from a
    ``view`` id column or from ``yaw,pitch``. ``interact_vocab`` (an existing dataset's) bounds the
    interact ids. Every value is checked, the error naming the file, column, row and valid values.
    """
    path = str(path)
    table = read_csv_table(path, ("frame",), optional=(*ID_COLUMNS, *ACTION_COLUMNS[1:], "interact"))
    order = _order_rows(table, path, (num_frames - 1, num_frames),
                        f"one per transition for {num_frames} frames")[: num_frames - 1]
    ids: dict[str, np.ndarray] = {}
    for key, (a, b) in ID_COLUMNS.items():
        if key in table:
            if a in table or b in table:
                raise DataError(f"give either a {key} id column or {a},{b} tri-state columns, not both",
                                path=path, field=key)
            v = table[key]
            _first_bad_row(v, (v == np.round(v)) & (v >= 0) & (v <= UNCERTAIN), path, key,
                           f"a {key} id: valid ids are integers 0..{UNCERTAIN} ({UNCERTAIN} = uncertain)")
            ids[key] = v[order].astype(np.int64)
            continue
        for c in (a, b):
            if c not in table:
                raise DataError(f"missing column: give {a},{b} (tri-states in {{-1, 0, 1}}) or {key} "
                                f"(ids 0..{UNCERTAIN})", path=path, field=c)
        for c in (a, b):
            ok = np.isin(table[c], (-1.0, 0.0, 1.0))
            _first_bad_row(table[c], ok, path, c, "a tri-state in {-1, 0, 1}")
        ids[key] = encode_pair(table[a][order].astype(np.int64), table[b][order].astype(np.int64))
    interact = np.zeros(num_frames - 1, dtype=np.int64)
    if "interact" in table:
        v = table["interact"]
        ok = (v >= 0) & (v == np.round(v))
        valid = "an interact id: valid ids are integers >= 0"
        if interact_vocab is not None:
            ok &= v < len(interact_vocab)
            valid = (f"an interact id of the dataset's vocabulary: valid ids are "
                     f"0..{len(interact_vocab) - 1} ({', '.join(interact_vocab)})")
        _first_bad_row(v, ok, path, "interact", valid)
        interact = v[order].astype(np.int64)
    return ids["move"], ids["view"], interact


def _parse_size(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise DataError(f"expected a positive size or (H, W), got {size!r}", field="size")
    return hw  # type: ignore[return-value]


def import_episode(
    frames: str | os.PathLike,
    out: str | os.PathLike,
    poses: str | os.PathLike | None = None,
    actions: str | os.PathLike | None = None,
    size: int | tuple[int, int] | None = None,
    env: str | None = None,
    fps: float | None = None,
) -> dict[str, Any]:
    """Import one episode into dataset ``out`` (created, or appended to if it is a compatible dataset).

    ``size`` (int or (H, W)) defaults to the existing dataset's size, else 64; ``env`` defaults to
    the existing dataset's env, else "custom"; ``fps`` to the video's, else 30. Returns a summary.
    """
    out = check_output_dir(out)
    existing = None
    if (out / META_FILE).exists():
        existing = read_meta(out)
    elif out.is_dir() and any(out.iterdir()):
        raise DataError("output folder exists, is not empty and has no meta.json (not a dataset)",
                        path=str(out))
    hw = _parse_size(size) if size is not None else (existing.size if existing else (64, 64))
    if existing is not None:
        meta_path = str(out / META_FILE)
        if tuple(existing.size) != hw:
            raise DataError(f"dataset frame size {tuple(existing.size)} differs from requested {hw}",
                            path=meta_path, field="size")
        if env is not None and env != existing.env:
            raise DataError(f"dataset env {existing.env!r} differs from requested {env!r}",
                            path=meta_path, field="env")
        if existing.has_pose and poses is None:
            raise DataError("the dataset has poses (has_pose true) but no --poses CSV was given",
                            path=meta_path, field="has_pose")

    frames_arr, src = load_frames(frames, hw)
    t = len(frames_arr)
    pose = read_poses_csv(poses, t) if poses is not None else None
    interact = np.zeros(t - 1, dtype=np.int64)
    if actions is not None:
        move, view, interact = read_actions_csv(actions, t, existing.interact_vocab if existing else None)
        actions_from = "csv"
    elif pose is not None:
        from infworld.data.actions import label_from_poses  # lazy: the labeler is heavier and optional here

        labels = label_from_poses(pose[:, :3], pose[:, 3], pose[:, 4], noise_std=None)
        move, view = np.asarray(labels.move, np.int64), np.asarray(labels.view, np.int64)
        actions_from = "poses"
    else:
        move = np.full(t - 1, UNCERTAIN, dtype=np.int64)
        view = np.full(t - 1, UNCERTAIN, dtype=np.int64)
        actions_from = "none (all uncertain)"

    n_interact = int(interact.max()) + 1 if interact.size else 1
    if existing is not None:
        meta = existing  # read_actions_csv checked the interact ids against its vocabulary
    else:
        meta = DatasetMeta(
            env=env or "custom",
            size=hw,
            interact_vocab=["none"] + [f"interact_{k}" for k in range(1, n_interact)],
            policy="imported",
            fps=float(fps or src["fps"] or 30.0),
            has_pose=pose is not None,
            extra={"imported": True},
        )
    names = [p.name for p in list_episodes(out)] if existing is not None else []
    numbers = [int(m.group(1)) for n in names if (m := re.match(r"ep_(\d+)\.npz$", n))]
    index = max(numbers) + 1 if numbers else 0
    ep = Episode(
        frames=frames_arr, move=move, view=view, interact=interact, pose=pose,
        info={"source": str(frames), "source_kind": src["kind"], "original_size": src["original_size"],
              "source_fps": src["fps"], "poses_csv": str(poses) if poses else None,
              "actions_csv": str(actions) if actions else None, "actions_from": actions_from},
    )
    path = episode_path(out, index)
    # Check before writing anything so a bad import leaves no half-made dataset behind.
    check_episode(ep, meta=meta, path=str(path))
    if existing is None:
        write_meta(out, meta)
    write_episode(path, ep, meta=meta)
    return {
        "dataset": str(out),
        "episode": str(path),
        "appended": existing is not None,
        "frames": t,
        "size": list(hw),
        "source": src["kind"],
        "original_size": src["original_size"],
        "has_pose": pose is not None,
        "actions_from": actions_from,
        "move_uncertain_share": float(np.mean(move == UNCERTAIN)),
        "view_uncertain_share": float(np.mean(view == UNCERTAIN)),
    }
