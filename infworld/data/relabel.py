"""Relabel a dataset's move / view actions from its camera poses (Infinite-World, arXiv 2602.02393,
Sec. 3.3, uncertainty-aware action labeling; method in docs/actions.md).

Used by ``infworld data label DIR --out DIR2 [--noise-std POS,ANG]``. The source dataset is read,
never modified; the new dataset gets the same episodes (frames, poses, interact ids, buttons,
extras, info) with ``move`` and ``view`` recomputed from ``pose`` by
:func:`infworld.data.actions.label_motion`. By default the pose noise and the typical speeds are
estimated once over the whole dataset (pooled), which is steadier than per-episode estimates on
short episodes.

Each episode is written atomically; ``meta.json`` is written last, so an interrupted relabel leaves
a folder without meta.json (not a dataset) rather than a dataset that looks complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.action_schema import UNCERTAIN
from infworld.data.actions import (
    AXES,
    LabelThresholds,
    PoseNoise,
    TypicalSpeeds,
    camera_motion,
    estimate_noise_pooled,
    estimate_speeds,
    label_motion,
    motion_std,
)
from infworld.data.episode import (
    EPISODE_DIR,
    META_FILE,
    DatasetMeta,
    list_episodes,
    read_episode,
    read_meta,
    read_npz,
    write_episode,
    write_meta,
)
from infworld.data.outputs import check_output_dir
from infworld.errors import ConfigError, DataError

LABELER = "infworld.data.actions uncertainty-aware pose labeling v1 (docs/actions.md)"


def _load_track(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position (T, 3), yaw (T,), pitch (T,)) of one episode, reading only its pose array."""
    pose = read_npz(path, ("pose",)).get("pose")
    if pose is None:
        raise DataError("episode has no pose array, so its actions cannot be labelled from poses",
                        path=str(path), field="pose")
    if pose.ndim != 2 or pose.shape[1] != 5 or pose.shape[0] < 2:
        raise DataError(f"expected shape (T >= 2, 5) [x, y, z, yaw, pitch], got {pose.shape}",
                        path=str(path), field="pose")
    pose = pose.astype(np.float64)
    return pose[:, :3], pose[:, 3], pose[:, 4]


def _prepare_out(src: Path, out: Path, overwrite: bool) -> None:
    if out.resolve() == src.resolve():
        raise ConfigError(f"out: must differ from the source dataset {src} (the source is never modified)")
    check_output_dir(out)
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"out: {out} is not empty; pass overwrite=True (--overwrite) to replace it")
        # Drop meta.json first: until the new one is written, out is visibly not a dataset.
        (out / META_FILE).unlink(missing_ok=True)


@dataclasses.dataclass
class _Estimates:
    """Per-episode inputs of :func:`label_motion` (one entry per episode, in ``paths`` order)."""

    motions: list[np.ndarray]  # (T-1, 4) camera-frame motion
    stds: list[np.ndarray]  # (T-1, 4) its std
    noises: list[PoseNoise]
    speeds: list[TypicalSpeeds]


def _source_episodes(src: Path) -> tuple[DatasetMeta, list[Path]]:
    """Meta and episode paths of dataset ``src``; raises DataError without poses or episodes."""
    meta = read_meta(src)
    if not meta.has_pose:
        raise DataError("dataset has no poses (has_pose is false), so it cannot be labelled from poses",
                        path=str(src / META_FILE), field="has_pose")
    paths = list_episodes(src)
    if not paths:
        raise DataError("dataset has no episodes", path=str(src / EPISODE_DIR))
    return meta, paths


def _estimate(src: Path, paths: list[Path], given: PoseNoise, thr: LabelThresholds,
              pooled: bool) -> _Estimates:
    """Poses only (no frames): camera-frame motion, then pose noise (unless ``given`` resolves it)
    and typical speeds, pooled over all episodes or per episode."""
    tracks = [_load_track(p) for p in paths]
    motions, noises = [], []
    for path, track in zip(paths, tracks, strict=True):
        try:
            motions.append(camera_motion(*track))
            if not pooled:
                noises.append(given if given.resolved() else estimate_noise_pooled([track], known=given))
        except DataError as exc:
            raise DataError(str(exc), path=str(path), field="pose") from exc
    if pooled:
        try:
            noise = given if given.resolved() else estimate_noise_pooled(tracks, known=given)
        except DataError as exc:
            raise DataError(str(exc), path=str(src)) from exc
        noises = [noise] * len(paths)
    stds = [motion_std(m, n) for m, n in zip(motions, noises, strict=True)]
    speeds = ([estimate_speeds(motions, stds, thr)] * len(paths) if pooled
              else [estimate_speeds([m], [s], thr) for m, s in zip(motions, stds, strict=True)])
    return _Estimates(motions, stds, noises, speeds)


def _rewrite_episodes(paths: list[Path], meta: DatasetMeta, out: Path, out_meta: DatasetMeta,
                      est: _Estimates, thr: LabelThresholds,
                      progress: Callable[[int, int], None] | None) -> tuple[dict[str, int], np.ndarray]:
    """Write every episode to ``out`` with the new labels (read fully: frames are copied as they
    are), then remove ``out``'s stale episodes. Returns (label counts, uncertain steps per axis)."""
    counts = {k: 0 for k in ("steps", "move_unc", "view_unc", "move_cmp", "move_same", "view_cmp",
                             "view_same", "move_same_all", "view_same_all")}
    axis_unc = np.zeros(len(AXES), dtype=np.int64)
    written = set()
    for i, path in enumerate(paths):
        ep = read_episode(path, meta)
        lab = label_motion(est.motions[i], est.stds[i], est.speeds[i], est.noises[i], thr)
        for g, old, new in (("move", ep.move, lab.move), ("view", ep.view, lab.view)):
            both = (old != UNCERTAIN) & (new != UNCERTAIN)
            counts[f"{g}_unc"] += int(np.sum(new == UNCERTAIN))
            counts[f"{g}_cmp"] += int(both.sum())
            counts[f"{g}_same"] += int(np.sum(both & (old == new)))
            counts[f"{g}_same_all"] += int(np.sum(old == new))
        counts["steps"] += len(lab.move)
        axis_unc += lab.uncertain.sum(axis=0)
        write_episode(out / EPISODE_DIR / path.name, dataclasses.replace(ep, move=lab.move, view=lab.view),
                      out_meta)
        written.add(path.name)
        if progress is not None:
            progress(i + 1, len(paths))
    for stale in list_episodes(out):
        if stale.name not in written:
            stale.unlink()
    return counts, axis_unc


def _summary(est: _Estimates, counts: dict[str, int], axis_unc: np.ndarray, given: PoseNoise,
             pooled: bool, out: Path) -> dict[str, Any]:
    """Noise used, typical speeds (medians over episodes), share uncertain, agreement with old labels."""
    n = max(counts["steps"], 1)
    noise_rec = {"position": float(np.median([x.position for x in est.noises])),
                 "angle": float(np.median([x.angle for x in est.noises]))}
    speed_rec = {g: (float(np.median(v)) if (v := [getattr(s, g) for s in est.speeds
                                                   if getattr(s, g) is not None]) else None)
                 for g in ("move", "turn", "pitch")}
    return {
        "episodes": len(est.motions), "steps": counts["steps"], "out": str(out),
        "noise": noise_rec,
        "noise_estimated": {"position": given.position is None, "angle": given.angle is None},
        "pooled": pooled, "typical_speed": speed_rec,
        "uncertain": {"move": counts["move_unc"] / n, "view": counts["view_unc"] / n,
                      **{a: float(axis_unc[j]) / n for j, a in enumerate(AXES)}},
        # Agreement with the old ids: on steps where neither label is uncertain, and on all steps.
        "agreement": {g: (counts[f"{g}_same"] / counts[f"{g}_cmp"] if counts[f"{g}_cmp"] else None)
                      for g in ("move", "view")}
        | {f"{g}_all": counts[f"{g}_same_all"] / n for g in ("move", "view")},
    }


def relabel_dataset(src: str | Path, out: str | Path,
                    noise_std: PoseNoise | tuple | str | None = None,
                    thresholds: LabelThresholds | None = None, *, pooled: bool = True,
                    overwrite: bool = False,
                    progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a copy of dataset ``src`` to ``out`` with move / view recomputed from the poses.

    noise_std: per-frame pose noise (PoseNoise, (position, angle) or "position,angle", None or a
        None field = estimate). thresholds: LabelThresholds (defaults documented there).
    pooled: estimate noise and typical speeds over all episodes at once (False: per episode).
    overwrite: allow a non-empty ``out`` (its stale episodes are removed at the end).
    progress: called as ``progress(done, total)`` after each episode.
    Returns summary stats: noise used, typical speeds, share uncertain, agreement with old labels.
    """
    src, out = Path(src), Path(out)
    thr = (thresholds or LabelThresholds()).validate()
    given = PoseNoise.parse(noise_std)
    meta, paths = _source_episodes(src)
    # 1. Poses only (no frames): camera-frame motion, then noise and typical speeds.
    est = _estimate(src, paths, given, thr, pooled)
    # 2. Rewrite every episode with the new labels.
    _prepare_out(src, out, overwrite)
    out_meta = dataclasses.replace(meta, extra=dict(meta.extra))
    counts, axis_unc = _rewrite_episodes(paths, meta, out, out_meta, est, thr, progress)
    # 3. meta.json last: only a finished relabel is a dataset.
    summary = _summary(est, counts, axis_unc, given, pooled, out)
    out_meta.extra["labels"] = {
        "labeler": LABELER, "source": str(src), "thresholds": dataclasses.asdict(thr),
        **{k: summary[k] for k in ("noise", "noise_estimated", "pooled", "typical_speed", "uncertain")},
    }
    write_meta(out, out_meta)
    return summary
