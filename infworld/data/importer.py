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
    META_FILE,
    DatasetMeta,
    Episode,
    check_episode,
    episode_path,
    list_episodes,
    read_meta,
    write_episode,
    write_meta,
)
from infworld.data.import_frames import IMAGE_EXTS, VIDEO_EXTS, load_frames  # noqa: F401 (re-exported)
from infworld.data.outputs import check_output_dir
from infworld.envs.registry import game_interact_vocab
from infworld.errors import DataError

POSE_COLUMNS = ("frame", "x", "y", "z", "yaw", "pitch")
ACTION_COLUMNS = ("frame", "forward", "right", "yaw", "pitch")
# each action id comes from its own id column or from the two tri-state columns it encodes
ID_COLUMNS = {"move": ("forward", "right"), "view": ("yaw", "pitch")}


def read_csv_table(path: str | os.PathLike, required: tuple[str, ...],
                   optional: tuple[str, ...] = (), names: dict[str, list[str]] | None = None
                   ) -> dict[str, np.ndarray]:
    """Numeric columns of a CSV with a header row, as float64 arrays (one value per data row).

    ``names``: columns whose cells may also be names from a vocabulary (``{"interact": ["none",
    "do", ...]}``), read as their index. Raises DataError naming the file, the column and the row
    (1-based data row; the header is line 1) for a missing column, a short row, an empty cell, a
    non-number (or an unknown name, listing the valid ones), NaN or inf.
    """
    names = names or {}
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
                if c in names and cell in names[c]:
                    v = float(names[c].index(cell))
                elif c in names:
                    raise DataError(f"row {r} (line {r + 1}): unknown action name {cell!r}; valid names are "
                                    f"{', '.join(names[c])} (or their ids 0..{len(names[c]) - 1})",
                                    path=path, field=c) from None
                else:
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
    ``view`` id column or from ``yaw,pitch``. ``interact_vocab`` (an existing dataset's, or the
    game's: Crafter's for ``--env crafter``) bounds the interact ids, and the ``interact`` column may
    then name actions (``place_table``) instead of giving ids. Every value is checked, the error
    naming the file, column, row and valid values.
    """
    path = str(path)
    table = read_csv_table(path, ("frame",), optional=(*ID_COLUMNS, *ACTION_COLUMNS[1:], "interact"),
                           names={"interact": list(interact_vocab)} if interact_vocab else None)
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


def _target_dataset(out: Path, size: int | tuple[int, int] | None, env: str | None,
                    poses: str | os.PathLike | None) -> tuple[DatasetMeta | None, tuple[int, int]]:
    """(the existing dataset's meta or None for a new one, frame size (H, W)) of an import into ``out``.

    Raises DataError for a non-empty folder that is not a dataset, or a dataset whose size, env or
    poses do not match the request.
    """
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
    return existing, hw


def _episode_actions(actions: str | os.PathLike | None, pose: np.ndarray | None, t: int,
                     existing: DatasetMeta | None, env: str | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(move, view, interact) int64 of length ``t`` - 1 and where they came from: the actions CSV,
    else labeled from the poses, else all uncertain."""
    interact = np.zeros(t - 1, dtype=np.int64)
    if actions is not None:
        vocab = existing.interact_vocab if existing else game_interact_vocab(env)
        move, view, interact = read_actions_csv(actions, t, vocab)
        return move, view, interact, "csv"
    if pose is not None:
        from infworld.data.actions import label_from_poses  # lazy: the labeler is heavier and optional here

        labels = label_from_poses(pose[:, :3], pose[:, 3], pose[:, 4], noise_std=None)
        return np.asarray(labels.move, np.int64), np.asarray(labels.view, np.int64), interact, "poses"
    move = np.full(t - 1, UNCERTAIN, dtype=np.int64)
    view = np.full(t - 1, UNCERTAIN, dtype=np.int64)
    return move, view, interact, "none (all uncertain)"


def _new_meta(env: str | None, hw: tuple[int, int], interact: np.ndarray, fps: float | None,
              has_pose: bool) -> DatasetMeta:
    """Meta of a new dataset of imported episodes (an interact vocabulary covering ``interact``)."""
    n_interact = int(interact.max()) + 1 if interact.size else 1
    return DatasetMeta(
        env=env or "custom",
        size=hw,
        interact_vocab=game_interact_vocab(env) or ["none"] + [f"interact_{k}" for k in range(1, n_interact)],
        policy="imported",
        fps=float(fps or 30.0),
        has_pose=has_pose,
        extra={"imported": True},
    )


def _next_index(out: Path) -> int:
    """The episode number after the highest ``ep_N.npz`` of dataset ``out`` (0 if it has none)."""
    numbers = [int(m.group(1)) for p in list_episodes(out) if (m := re.match(r"ep_(\d+)\.npz$", p.name))]
    return max(numbers) + 1 if numbers else 0


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
    existing, hw = _target_dataset(out, size, env, poses)
    frames_arr, src = load_frames(frames, hw)
    t = len(frames_arr)
    pose = read_poses_csv(poses, t) if poses is not None else None
    move, view, interact, actions_from = _episode_actions(actions, pose, t, existing, env)
    if existing is not None:
        meta = existing  # read_actions_csv checked the interact ids against its vocabulary
    else:
        meta = _new_meta(env, hw, interact, fps or src["fps"], has_pose=pose is not None)
    index = _next_index(out) if existing is not None else 0
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
