"""Dataset summary for ``infworld data info``: sizes, lengths, action distribution, pose extent, revisits.

Only the small arrays (actions, poses) are decompressed; frame counts come from the .npy headers
inside each episode's .npz, so ``info`` stays fast on datasets of many large episodes. Action
statistics are accumulated episode by episode (:class:`ActionTally`), so memory stays flat.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import numpy as np

from infworld.data.action_schema import NUM_MOVE, NUM_VIEW, UNCERTAIN, check_action_ids
from infworld.data.episode import (
    DAMAGED_NPZ_ERRORS,
    EXTRA_PREFIX,
    POSE_FIELDS,
    damaged_npz,
    list_episodes,
    read_meta,
    read_npz,
)
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
    except FileNotFoundError:
        raise DataError("episode file not found", path=path) from None
    except DAMAGED_NPZ_ERRORS as exc:
        raise damaged_npz(path, exc) from exc
    if "frames" not in out:
        raise DataError("missing array", path=path, field="frames")
    return out


def episode_length(path: str | os.PathLike) -> int:
    """Number of frames T of an episode file, from its header only."""
    return npz_headers(path)["frames"][0][0]


def load_arrays(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Decompress only the named arrays (those present) of one episode, e.g. poses without frames."""
    return read_npz(path, names)


# Names of move / view ids, indexed by id (see action_schema: move = (forward+1)*3 + (right+1),
# view = (yaw+1)*3 + (pitch+1); yaw +1 turns right, pitch +1 looks up).
MOVE_NAMES: tuple[str, ...] = ("back-left", "back", "back-right", "left", "none", "right",
                               "forward-left", "forward", "forward-right", "uncertain")
VIEW_NAMES: tuple[str, ...] = ("turn-left+look-down", "turn-left", "turn-left+look-up", "look-down",
                               "none", "look-up", "turn-right+look-down", "turn-right", "turn-right+look-up",
                               "uncertain")
ACTION_FIELDS = ("move", "view", "interact")


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy ``-sum_i p_i log2 p_i``, in bits, of the distribution given by counts (0 if empty)."""
    counts = np.asarray(counts, dtype=np.float64).ravel()
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(max(0.0, -(p * np.log2(p)).sum()))  # max: -0.0 for a single id


class ActionTally:
    """Streaming statistics of a dataset's action ids, fed one episode at a time.

    Keeps only counts: per-field histograms, the joint (move, view) histogram (10 x 10), and how many
    consecutive steps inside an episode repeat the previous id, so memory does not grow with the data.
    """

    def __init__(self, num_interact: int) -> None:
        self.sizes = {"move": NUM_MOVE, "view": NUM_VIEW, "interact": int(num_interact)}
        self.counts = {k: np.zeros(n, dtype=np.int64) for k, n in self.sizes.items()}
        self.joint = np.zeros((NUM_MOVE, NUM_VIEW), dtype=np.int64)  # (move id, view id)
        self.repeats = dict.fromkeys((*ACTION_FIELDS, "move_view"), 0)
        self.pairs = 0  # consecutive (t - 1, t) action pairs inside episodes: the repeat-rate denominator

    def add(self, arrays: dict[str, np.ndarray], path: str | None = None) -> None:
        """Count one episode's ``move``, ``view``, ``interact`` id arrays (T - 1,); ``path`` is for errors."""
        ids: dict[str, np.ndarray] = {}
        for key, n in self.sizes.items():
            if key not in arrays:
                raise DataError("missing array", path=path, field=key)
            a = check_action_ids(np.asarray(arrays[key]).ravel(), n, key, path=path)
            if ids and len(a) != len(ids["move"]):
                raise DataError(f"{len(a)} ids but {len(ids['move'])} move ids", path=path, field=key)
            ids[key] = a
        same = {}
        for key, a in ids.items():
            self.counts[key] += np.bincount(a, minlength=self.sizes[key])
            same[key] = a[1:] == a[:-1]
            self.repeats[key] += int(same[key].sum())
        move, view = ids["move"], ids["view"]
        pair_ids = move * NUM_VIEW + view
        self.joint += np.bincount(pair_ids, minlength=NUM_MOVE * NUM_VIEW).reshape(NUM_MOVE, NUM_VIEW)
        self.repeats["move_view"] += int((same["move"] & same["view"]).sum())
        self.pairs += max(len(move) - 1, 0)

    def summary(self, interact_vocab: list[str]) -> dict[str, Any]:
        """JSON-able distribution; the keys are documented in :func:`action_distribution`."""
        steps = int(self.counts["move"].sum())

        def rate(n: int) -> float | None:
            return n / self.pairs if self.pairs else None

        out: dict[str, Any] = {"steps": steps, "pairs": self.pairs}
        names = {"move": list(MOVE_NAMES), "view": list(VIEW_NAMES), "interact": list(interact_vocab)}
        for key in ACTION_FIELDS:
            counts = self.counts[key]
            field: dict[str, Any] = {
                "names": names[key],
                "counts": [int(c) for c in counts],
                "shares": [float(c / steps) if steps else 0.0 for c in counts],
                "entropy_bits": entropy_bits(counts),
                "max_entropy_bits": float(np.log2(len(counts))) if len(counts) else 0.0,
                "repeat_rate": rate(self.repeats[key]),
            }
            if key != "interact":
                field["uncertain_share"] = float(counts[UNCERTAIN] / steps) if steps else 0.0
            out[key] = field
        joint = entropy_bits(self.joint)
        out["move_view"] = {
            "entropy_bits": joint,
            "max_entropy_bits": float(np.log2(NUM_MOVE * NUM_VIEW)),
            # I(move; view) = H(move) + H(view) - H(move, view): 0 when move and view are chosen independently
            "mutual_information_bits": max(0.0, out["move"]["entropy_bits"] + out["view"]["entropy_bits"]
                                           - joint),
            "repeat_rate": rate(self.repeats["move_view"]),
        }
        return out


def action_distribution(root: str | os.PathLike) -> dict[str, Any]:
    """Action distribution of the dataset at ``root``, streamed over its episodes (actions only are read).

    Returns ``{"steps", "pairs", "move", "view", "interact", "move_view"}``: ``steps`` is the number of
    actions counted and ``pairs`` the number of consecutive action pairs inside episodes. Each of
    ``move``, ``view`` and ``interact`` is a dict with ``names`` (per id: e.g. "forward", "back-left",
    "turn-right", "look-up", "uncertain"; interact: the dataset's ``interact_vocab``), ``counts`` and
    ``shares`` (per id), ``entropy_bits`` (Shannon entropy of the shares, all ids including uncertain),
    ``max_entropy_bits`` (log2 of the number of ids), ``repeat_rate`` (share of pairs whose id equals the
    previous one; None without pairs), and for move / view ``uncertain_share``. ``move_view`` has the
    joint ``entropy_bits``, ``max_entropy_bits`` (log2 100), ``mutual_information_bits`` and the
    ``repeat_rate`` of both ids at once.
    """
    meta = read_meta(root)
    tally = ActionTally(len(meta.interact_vocab))
    for path in list_episodes(root):
        tally.add(load_arrays(path, ACTION_FIELDS), path=str(path))
    return tally.summary(meta.interact_vocab)


def dataset_info(
    root: str | os.PathLike,
    revisit_min_gap: int = 50,
    revisit_dist: float | None = None,
    revisit_angle_deg: float | None = 30.0,
) -> dict[str, Any]:
    """Summarise a dataset as a JSON-able dict.

    Keys: env, scenario, policy, size [H, W], fps, frame_skip, episodes, frames, length
    {min, mean, max}, bytes (on disk), actions {move, view, interact: {counts, uncertain_share}},
    action_distribution (names, shares, entropy, repeat rates: see :func:`action_distribution`),
    interact_vocab, has_pose, has_depth, extras, pose_extent {field: [min, max]} (None without poses),
    revisits (from :func:`revisit_stats`, None without poses). ``revisit_dist=None`` picks the
    environment's default (:func:`default_revisit_dist`).
    """
    meta = read_meta(root)
    paths = list_episodes(root)
    lengths: list[int] = []
    tally = ActionTally(len(meta.interact_vocab))
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
        small = load_arrays(path, (*ACTION_FIELDS, "pose"))
        tally.add(small, path=str(path))
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
            "move": hist(tally.counts["move"], UNCERTAIN),
            "view": hist(tally.counts["view"], UNCERTAIN),
            "interact": hist(tally.counts["interact"], None),
        },
        "action_distribution": tally.summary(meta.interact_vocab),
        "interact_vocab": list(meta.interact_vocab),
        "has_pose": meta.has_pose,
        "pose_episodes": len(poses),
        "has_depth": meta.has_depth,
        "depth_episodes": depth_episodes,
        "extras": sorted(extras),
        "pose_extent": pose_extent,
        "revisits": revisits,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def action_rows(dist: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(label, text) rows for one field of :func:`action_distribution` output (``key``: move, view,
    interact, or move_view for the joint) in the ``data info`` table; labels fit its 19-char column."""
    d = dist[key]
    if key == "move_view":
        return [("move+view joint", f"{d['entropy_bits']:.2f} of {d['max_entropy_bits']:.2f} bits (mutual "
                 f"information {d['mutual_information_bits']:.2f}); {_pct(d['repeat_rate'])} of steps "
                 "repeat both")]
    order = sorted(range(len(d["shares"])), key=lambda i: (-d["shares"][i], i))
    seen = ", ".join(f"{d['names'][i]} {_pct(d['shares'][i])}" for i in order if d["counts"][i])
    # ids never taken (uncertain is not an action: its share is on the "ids 0..9" row)
    skip = UNCERTAIN if key != "interact" else -1
    never = [d["names"][i] for i, c in enumerate(d["counts"]) if not c and i != skip]
    return [(f"{key} shares", (seen or "-") + (f"  (never: {', '.join(never)})" if never else "")),
            (f"{key} entropy", f"{d['entropy_bits']:.2f} of {d['max_entropy_bits']:.2f} bits; "
             f"{_pct(d['repeat_rate'])} of steps repeat the previous one")]


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
    dist = info.get("action_distribution")
    if dist:
        rows.append(("action steps", f"{dist['steps']} ({dist['pairs']} consecutive pairs in episodes)"))
    for key in ("move", "view"):
        a = info["actions"][key]
        rows.append((f"{key} ids 0..9", " ".join(str(c) for c in a["counts"])
                     + f"  (uncertain {100 * a['uncertain_share']:.1f}%)"))
        rows += action_rows(dist, key) if dist else []
    pairs = zip(info["interact_vocab"], info["actions"]["interact"]["counts"], strict=True)
    rows.append(("interact", ", ".join(f"{n}={c}" for n, c in pairs)))
    rows += action_rows(dist, "interact") + action_rows(dist, "move_view") if dist else []
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
