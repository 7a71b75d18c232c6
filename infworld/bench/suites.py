"""Versioned benchmark suites: fixed trajectories, generated once, cached as a dataset in our format.

A suite is a list of :class:`~infworld.bench.trajectories.TrajectorySpec` (kind, seed, length) in
one environment. The first use records them (deterministic: same vizdoom, same frames) into
``CACHE/<suite>-v<version>/`` as an ordinary dataset (``meta.json``, ``episodes/ep_*.npz``, see
docs/episode_format.md) plus ``suite.json`` (names, kinds, seeds, frames and the revisit events of
each trajectory), written last, so a cache is complete exactly when ``suite.json`` is there; an
interrupted generation resumes with the episodes already written. A change to a suite's contents
needs a new version number (results name the version).

* ``doom-mini``: three short trajectories (one turn, one out-and-back, a 96-frame replay), about
  200 frames: for tests and CI.
* ``doom-v1``: four each of out-and-back, loop and full turn (<= 60 frames each, so that the
  full-context oracle with its default budget, 48 frames beyond a 16-frame window, can run them)
  and one explore replay of 1025 frames (compounding error and long-gap revisits); about 1,700
  frames.
* ``doom-v2``: long revisits, for memory: 2 look-backs (walk, turn round to look where we came
  from, stare, turn back), 2 long loops (two laps of an explored 35- or 50-step route) and 4 long
  out-and-backs (70- to 120-step legs, back, and out once more with the old views); <= 400 frames
  each (an oracle holding 400 frames of history runs them all), about 2,300 frames. Its revisit
  results are also given per gap bucket (``gap_buckets``: 16-64, 64-150 and 150-350 frames between
  the first visit and the return), the question being how far back a memory reaches.

:func:`load_data_suite` turns any dataset in our format (``--data DIR``) into a suite: revisit events
come from its poses, or, without poses, are left to the runner (frame similarity in the model's
latent space, :func:`latent_revisits`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.bench.buckets import check_edges
from infworld.bench.trajectories import RevisitConfig, TrajectorySpec, find_events, make_trajectory
from infworld.data.episode import (
    Episode,
    atomic_write_json,
    episode_path,
    list_episodes,
    read_episode,
    read_meta,
    write_episode,
    write_meta,
)
from infworld.data.revisits import default_revisit_dist
from infworld.errors import ConfigError, DataError

SUITE_FILE = "suite.json"
CACHE_ENV = "INFWORLD_CACHE"  # root of infworld caches (default ~/.cache/infworld)


@dataclass(frozen=True)
class SuiteSpec:
    """A versioned suite. ``context``: real frames that seed every rollout; ``action_horizon``:
    frames of the random-action rollouts; ``speed_frames``: frames of the timed run;
    ``dist_horizons``: upper edges of the horizon buckets of the distribution protocol;
    ``gap_buckets``: edges of the revisit gap buckets (frames t - s, see buckets.py), () = none."""

    name: str
    version: int
    trajectories: tuple[TrajectorySpec, ...]
    env: str = "vizdoom"
    scenario: str = "my_way_home"
    size: tuple[int, int] = (64, 64)
    frame_skip: int = 4
    revisit: RevisitConfig = field(default_factory=RevisitConfig)
    context: int = 8
    action_horizon: int = 32
    speed_frames: int = 200
    dist_horizons: tuple[int, ...] = (16, 64, 256, 1024)
    description: str = ""
    gap_buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_edges(self.gap_buckets)


def _doom(kind: str, n: int, seed: int, legs: int, frames: int = 60) -> tuple[TrajectorySpec, ...]:
    return tuple(TrajectorySpec(f"{kind.replace('_', '-')}-{i}", kind, seed + i, frames, legs=legs)
                 for i in range(n))


SUITES: dict[str, SuiteSpec] = {
    "doom-mini": SuiteSpec(
        "doom-mini", 1,
        (TrajectorySpec("turn-0", "turn", 100, 48, legs=2),
         TrajectorySpec("out-and-back-0", "out_and_back", 101, 56, legs=6),
         TrajectorySpec("replay-0", "replay", 102, 96)),
        context=4, action_horizon=8, speed_frames=16, dist_horizons=(8, 32, 96),
        description="3 short ViZDoom my_way_home trajectories (~200 frames): tests and CI"),
    "doom-v1": SuiteSpec(
        "doom-v1", 1,
        _doom("out_and_back", 4, 0, 8) + _doom("loop", 4, 10, 3) + _doom("turn", 4, 20, 4)
        + (TrajectorySpec("replay-0", "replay", 30, 1025),),
        description="ViZDoom my_way_home: 4 out-and-back, 4 loops, 4 full turns (<= 60 frames each) "
                    "and a 1025-frame explore replay"),
    "doom-v2": SuiteSpec(
        "doom-v2", 1,
        (TrajectorySpec("look-back-0", "look_back", 300, 400, legs=6, turns=4),
         TrajectorySpec("look-back-1", "look_back", 302, 400, legs=6, turns=4),
         TrajectorySpec("long-loop-0", "long_loop", 200, 400, legs=35, turns=2.0),
         TrajectorySpec("long-loop-1", "long_loop", 201, 400, legs=50, turns=2.0),
         TrajectorySpec("long-out-and-back-0", "long_out_and_back", 101, 400, legs=70),
         TrajectorySpec("long-out-and-back-1", "long_out_and_back", 103, 400, legs=100),
         TrajectorySpec("long-out-and-back-2", "long_out_and_back", 100, 400, legs=120),
         TrajectorySpec("long-out-and-back-3", "long_out_and_back", 104, 400, legs=120)),
        dist_horizons=(16, 64, 150, 400), gap_buckets=(16, 64, 150, 350),
        description="ViZDoom my_way_home, long revisits: 2 look-backs, 2 long loops (2 laps of a 35- and "
                    "a 50-step route), 4 long out-and-backs (70-120-step legs); <= 400 frames each, "
                    "revisit gaps bucketed 16-64, 64-150, 150-350 frames"),
}


def suite_names() -> list[str]:
    return sorted(SUITES)


def get_suite(name: str) -> SuiteSpec:
    if name not in SUITES:
        raise ConfigError(f"unknown suite {name!r}; known suites: {suite_names()} (or --data DIR for your "
                          "own episodes)")
    return SUITES[name]


def default_cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "infworld") / "bench"


@dataclass
class Trajectory:
    """One loaded trajectory. ``events`` (E, 2) rows [t, s]: frame t revisits frame s; None = not
    known yet (pose-free data: the runner finds them from frames)."""

    name: str
    kind: str
    seed: int
    episode: Episode
    events: np.ndarray | None

    @property
    def frames(self) -> int:
        return len(self.episode)


@dataclass
class Suite:
    """A loaded suite: its trajectories and the settings the protocols use."""

    name: str
    version: int
    trajectories: list[Trajectory]
    root: Path
    context: int = 8
    action_horizon: int = 32
    speed_frames: int = 200
    dist_horizons: tuple[int, ...] = (16, 64, 256, 1024)
    fps: float = 8.75  # of the source data, for the clips
    gap_buckets: tuple[int, ...] = ()

    def describe(self) -> dict[str, Any]:
        """The ``suite`` object of results.json."""
        out: dict[str, Any] = {
            "name": self.name, "version": self.version,
            "trajectories": [{"name": t.name, "kind": t.kind, "frames": t.frames, "seed": t.seed}
                             for t in self.trajectories]}
        if self.gap_buckets:
            out["gap_buckets"] = list(self.gap_buckets)
        return out


def _spec_json(spec: SuiteSpec) -> dict[str, Any]:
    """The spec as JSON, the cache's key. ``gap_buckets`` (added with doom-v2) is left out when empty,
    so the caches of the suites defined before it stay valid."""
    desc = json.loads(json.dumps(asdict(spec)))
    if not desc.get("gap_buckets"):
        desc.pop("gap_buckets", None)
    return desc


def build_suite(spec: SuiteSpec | str, cache_dir: str | Path | None = None, progress: bool = False) -> Suite:
    """Load suite ``spec`` from ``cache_dir`` (default ``CACHE/bench``), generating what is missing.

    The folder used is ``cache_dir/<name>-v<version>``. A cache written for a different definition of
    the same name and version is regenerated.
    """
    spec = get_suite(spec) if isinstance(spec, str) else spec
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    root = root / f"{spec.name}-v{spec.version}"
    desc = _spec_json(spec)
    index_path = root / SUITE_FILE
    index = None
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())
        except (OSError, json.JSONDecodeError):
            index = None
        if not isinstance(index, dict) or index.get("spec") != desc:
            index = None
            index_path.unlink()
            for p in list_episodes(root):
                p.unlink()  # stale cache of another definition: regenerate
    if index is None:
        index = _generate(spec, root, desc, progress)
    meta = read_meta(root)
    trajs = []
    for i, entry in enumerate(index["trajectories"]):
        ep = read_episode(episode_path(root, i), meta=meta)
        trajs.append(Trajectory(entry["name"], entry["kind"], int(entry["seed"]), ep,
                                np.asarray(entry["events"], dtype=np.int64).reshape(-1, 2)))
    return Suite(spec.name, spec.version, trajs, root, context=spec.context,
                 action_horizon=spec.action_horizon, speed_frames=spec.speed_frames,
                 dist_horizons=tuple(spec.dist_horizons),
                 fps=meta.fps / max(1, meta.frame_skip), gap_buckets=tuple(spec.gap_buckets))


def _generate(spec: SuiteSpec, root: Path, desc: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Record every trajectory not yet in ``root`` and write suite.json last."""
    from infworld.envs.registry import make_env

    longest = max(t.max_frames for t in spec.trajectories)
    entries = []
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the suite cache ({exc.strerror or exc})", path=str(root)) from exc
    with make_env(spec.env, spec.scenario, size=spec.size, frame_skip=spec.frame_skip,
                  max_steps=longest + 10) as env:
        meta = env.dataset_meta(policy="bench-suite", extra={"suite": desc})
        write_meta(root, meta)
        for i, t in enumerate(spec.trajectories):
            path = episode_path(root, i)
            if path.exists():
                ep = read_episode(path, meta=meta)
                events = find_events(ep.pose, spec.revisit)
            else:
                if progress:
                    print(f"bench: recording suite {spec.name} trajectory {t.name} ({i + 1}/"
                          f"{len(spec.trajectories)})", file=sys.stderr)
                ep, events = make_trajectory(env, t, spec.revisit)
                write_episode(path, ep, meta=meta)
            entries.append({"name": t.name, "kind": t.kind, "seed": int(ep.info.get("seed", t.seed)),
                            "frames": len(ep), "events": events.tolist()})
    index = {"suite": spec.name, "version": spec.version, "spec": desc, "trajectories": entries}
    atomic_write_json(root / SUITE_FILE, index)
    return index


def load_data_suite(root: str | Path, max_episodes: int = 8, max_frames: int = 1025, context: int = 8,
                    revisit: RevisitConfig | None = None) -> Suite:
    """A suite over a user's dataset: its first ``max_episodes`` episodes, each cut to ``max_frames``.
    Events come from poses where the dataset has them (radius from the environment name)."""
    if max_episodes < 1 or max_frames < 2:
        raise ConfigError(f"data suite: max_episodes >= 1 and max_frames >= 2 expected, got {max_episodes}, "
                          f"{max_frames}")
    meta = read_meta(root)
    paths = list_episodes(root)[:max_episodes]
    if not paths:
        raise DataError("the dataset has no episodes", path=str(root))
    cfg = revisit or RevisitConfig(dist=default_revisit_dist(meta.env),
                                   angle_deg=None if meta.env.startswith("crafter") else 30.0)
    trajs = []
    for i, p in enumerate(paths):
        ep = read_episode(p, meta=meta)
        if len(ep) > max_frames:
            ep = _cut(ep, max_frames)
        if len(ep) <= context:
            continue  # nothing to generate after the context
        events = find_events(ep.pose, cfg) if ep.pose is not None and meta.has_pose else None
        trajs.append(Trajectory(p.stem, "data", i, ep, events))
    if not trajs:
        raise DataError(f"no episode is longer than the context ({context} frames)", path=str(root))
    name = f"data:{Path(root).resolve().name}"
    return Suite(name, 0, trajs, Path(root), context=context, action_horizon=32, speed_frames=200,
                 dist_horizons=(16, 64, 256, 1024), fps=meta.fps / max(1, meta.frame_skip))


def _cut(ep: Episode, n: int) -> Episode:
    """The first ``n`` frames of ``ep`` (and their n - 1 actions)."""
    def head(a, k):
        return None if a is None else a[:k]
    return Episode(ep.frames[:n], ep.move[: n - 1], ep.view[: n - 1], ep.interact[: n - 1],
                   pose=head(ep.pose, n), depth=head(ep.depth, n), buttons=head(ep.buttons, n - 1),
                   extras={k: v[:n] for k, v in ep.extras.items()}, info=ep.info)


def latent_revisits(latents: np.ndarray, min_gap: int = 16, quantile: float = 0.5) -> np.ndarray:
    """Revisit events (E, 2) [t, s] from frame features (T, D) alone (data without poses).

    Frame t revisits frame s (``t - s > min_gap``) when its nearest such s is at most as far, in
    mean squared feature distance, as the ``quantile`` of the distances between consecutive frames:
    a view from long ago that is as alike as the next frame usually is. Scale free, so it works for
    any tokenizer; the pairs are the model's own judgement of "the same place", not ground truth.
    """
    z = np.asarray(latents, dtype=np.float64).reshape(len(latents), -1)
    t_len = len(z)
    if t_len <= min_gap + 1:
        return np.zeros((0, 2), np.int64)
    sq = (z**2).sum(1)
    d = (sq[:, None] + sq[None, :] - 2.0 * z @ z.T) / z.shape[1]  # (T, T) mean squared distance
    thresh = np.quantile(np.diag(d, k=1), quantile)
    rows = []
    for t in range(min_gap + 1, t_len):
        cand = d[t, : t - min_gap]
        s = int(cand.argmin())
        if cand[s] <= thresh:
            rows.append((t, s))
    return np.asarray(rows, np.int64).reshape(-1, 2)
