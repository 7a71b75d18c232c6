"""Dataset summary for ``infworld data info``: sizes, lengths, action histograms, pose extent, revisits.

Only the small arrays (actions, poses) are decompressed; frame counts come from the .npy headers
inside each episode's .npz, so ``info`` stays fast on datasets of many large episodes.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from infworld.data.action_schema import NUM_MOVE, NUM_VIEW, UNCERTAIN
from infworld.data.episode import EXTRA_PREFIX, POSE_FIELDS, list_episodes, read_meta
from infworld.data.revisits import default_revisit_dist, revisit_stats
from infworld.errors import DataError


def npz_headers(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the .npy headers (no decompression)."""
    path = str(path)
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as fp:
                    version = np.lib.format.read_magic(fp)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                out[name[: -len(".npy")]] = (tuple(int(s) for s in shape), np.dtype(dtype))
    except FileNotFoundError as exc:
        raise DataError("episode file not found", path=path) from exc
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"corrupt or truncated episode file ({exc})", path=path) from exc
    if "frames" not in out:
        raise DataError("missing array", path=path, field="frames")
    return out


def episode_length(path: str | os.PathLike) -> int:
    """Number of frames T of an episode file, from its header only."""
    return npz_headers(path)["frames"][0][0]


def load_arrays(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decompress only the named arrays (those present) of one episode, e.g. poses without frames."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in names if k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"corrupt or truncated episode file ({exc})", path=str(path)) from exc


def dataset_info(
    root: str | os.PathLike,
    revisit_min_gap: int = 50,
    revisit_dist: float | None = None,
    revisit_angle_deg: float | None = 30.0,
) -> dict[str, Any]:
    """Summarise a dataset as a JSON-able dict.

    Keys: env, scenario, policy, size [H, W], fps, frame_skip, episodes, frames, length
    {min, mean, max}, bytes (on disk), actions {move, view, interact: {counts, uncertain_share}},
    interact_vocab, has_pose, has_depth, extras, pose_extent {field: [min, max]} (None without poses),
    revisits (from :func:`revisit_stats`, None without poses). ``revisit_dist=None`` picks the
    environment's default (:func:`default_revisit_dist`).
    """
    meta = read_meta(root)
    paths = list_episodes(root)
    lengths: list[int] = []
    move_counts = np.zeros(NUM_MOVE, dtype=np.int64)
    view_counts = np.zeros(NUM_VIEW, dtype=np.int64)
    interact_counts = np.zeros(len(meta.interact_vocab), dtype=np.int64)
    poses: list[np.ndarray] = []
    depth_episodes = 0
    extras: set[str] = set()
    n_bytes = 0
    for path in paths:
        headers = npz_headers(path)
        lengths.append(headers["frames"][0][0])
        depth_episodes += "depth" in headers
        extras.update(k[len(EXTRA_PREFIX):] for k in headers if k.startswith(EXTRA_PREFIX))
        n_bytes += path.stat().st_size
        small = load_arrays(path, ("move", "view", "interact", "pose"))
        for key, counts in (("move", move_counts), ("view", view_counts), ("interact", interact_counts)):
            if key not in small:
                raise DataError("missing array", path=str(path), field=key)
            ids = small[key].astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= len(counts)):
                raise DataError(f"ids must be in 0..{len(counts) - 1}, got range {ids.min()}..{ids.max()}",
                                path=str(path), field=key)
            counts += np.bincount(ids, minlength=len(counts))
        if "pose" in small:
            poses.append(small["pose"])

    def hist(counts: np.ndarray, uncertain: int | None) -> dict[str, Any]:
        total = int(counts.sum())
        out: dict[str, Any] = {"counts": [int(c) for c in counts]}
        if uncertain is not None:
            out["uncertain_share"] = float(counts[uncertain] / total) if total else 0.0
        return out

    pose_extent = None
    revisits = None
    if poses:
        allp = np.concatenate(poses)  # (sum T, 5)
        pose_extent = {name: [float(allp[:, i].min()), float(allp[:, i].max())]
                       for i, name in enumerate(POSE_FIELDS)}
        dist = revisit_dist if revisit_dist is not None else default_revisit_dist(meta.env)
        rs = revisit_stats(poses, min_gap=revisit_min_gap, dist=dist, angle_deg=revisit_angle_deg)
        revisits = {k: v for k, v in rs.items() if k not in ("masks", "sources")}
    n_frames = int(sum(lengths))
    return {
        "root": str(root),
        "env": meta.env,
        "scenario": meta.scenario,
        "policy": meta.policy,
        "size": list(meta.size),
        "fps": meta.fps,
        "frame_skip": meta.frame_skip,
        "episodes": len(paths),
        "frames": n_frames,
        "length": {
            "min": int(min(lengths)) if lengths else 0,
            "mean": float(np.mean(lengths)) if lengths else 0.0,
            "max": int(max(lengths)) if lengths else 0,
        },
        "bytes": n_bytes,
        "actions": {
            "move": hist(move_counts, UNCERTAIN),
            "view": hist(view_counts, UNCERTAIN),
            "interact": hist(interact_counts, None),
        },
        "interact_vocab": list(meta.interact_vocab),
        "has_pose": meta.has_pose,
        "pose_episodes": len(poses),
        "has_depth": meta.has_depth,
        "depth_episodes": depth_episodes,
        "extras": sorted(extras),
        "pose_extent": pose_extent,
        "revisits": revisits,
    }


def format_info(info: dict[str, Any]) -> str:
    """Render :func:`dataset_info` output as a readable plain-text table."""
    ln = info["length"]
    rows: list[tuple[str, str]] = [
        ("dataset", info["root"]),
        ("env", f"{info['env']}" + (f" / {info['scenario']}" if info["scenario"] else "")),
        ("policy", str(info["policy"])),
        ("frame size (H, W)", f"{info['size'][0]} x {info['size'][1]}"),
        ("fps / frame skip", f"{info['fps']:g} / {info['frame_skip']}"),
        ("episodes", str(info["episodes"])),
        ("frames", str(info["frames"])),
        ("length min/mean/max", f"{ln['min']} / {ln['mean']:.1f} / {ln['max']}"),
        ("on disk", f"{info['bytes'] / 1e6:.2f} MB"),
        ("poses", f"{info['has_pose']} ({info['pose_episodes']} episodes)"),
        ("depth", f"{info['has_depth']} ({info['depth_episodes']} episodes)"),
        ("extras", ", ".join(info["extras"]) or "-"),
    ]
    for key in ("move", "view"):
        a = info["actions"][key]
        rows.append((f"{key} ids 0..9", " ".join(str(c) for c in a["counts"])
                     + f"  (uncertain {100 * a['uncertain_share']:.1f}%)"))
    pairs = zip(info["interact_vocab"], info["actions"]["interact"]["counts"], strict=True)
    rows.append(("interact", ", ".join(f"{n}={c}" for n, c in pairs)))
    if info["pose_extent"]:
        for name, (lo, hi) in info["pose_extent"].items():
            rows.append((f"pose {name}", f"{lo:.1f} .. {hi:.1f}"))
    rv = info["revisits"]
    if rv:
        p = rv["params"]
        gap = "-" if rv["mean_revisit_gap"] is None else f"{rv['mean_revisit_gap']:.0f}"
        angle = "any" if p["angle_deg"] is None else f"{p['angle_deg']:g}"
        rows.append(("revisit frames", f"{100 * rv['revisit_fraction']:.1f}% "
                     f"({rv['episodes_with_revisits']} episodes, mean gap {gap} frames; "
                     f"gap>{p['min_gap']}, dist<={p['dist']:g}, yaw diff<={angle})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
