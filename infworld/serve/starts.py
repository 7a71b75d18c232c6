"""Starting contexts for play sessions and the gymnasium env: a small ``starts.npz`` beside the model.

A world model cannot start from nothing: :meth:`infworld.world.WorldModel.reset` needs K >= 1 real
frames (and the K - 1 actions between them). A play page or an agent has no dataset at hand, so a
model ships a few such contexts in ``<model dir>/starts.npz``:

* ``frames``   (K, ctx, H, W, 3) uint8, K starting contexts of ``ctx`` frames each;
* ``move``, ``view``, ``interact`` (K, ctx - 1) int64, the transitions between those frames;
* ``poses``    (K, ctx, 5) float32 (x, y, z, yaw, pitch), NaN where unknown;
* ``names``    (K,) str, shown in the page's chooser;
* ``meta_json`` a JSON object: env, scenario, source, interact_vocab, has_pitch, the motion
  scales ``move_scale`` (pose units per forward step) and ``turn_deg`` (degrees per turn step)
  that let pose-based memories dead-reckon a pose from the actions during play, and the game
  settings of the recording (``frame_skip``, ``monsters``);
* optional ``replay_seed`` (K,) int64 and ``replay_move`` / ``replay_view`` / ``replay_interact``
  (K, L) int16, -1 padded: how to bring the *real* game to start k: reset it with that seed, then
  play those actions (every action of the recorded episode up to the start's last frame). The
  collector's games are deterministic given the seed and the commands (tests/test_collect.py), so
  the replay reaches the very frame the model starts from; a seed of -1 means no replay (the
  episode did not record its ``env_seed``). The real-game reference of the play page and
  :class:`infworld.envs.gym_real.RealGameEnv` use it.

They are cut from a dataset in our format (:func:`starts_from_dataset`) or from a short run of the
collector (:func:`starts_from_collector`); ``infworld play --make-starts DATA --model NAME`` writes them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infworld.data.action_schema import check_action_ids, check_action_space, decode_move, decode_view
from infworld.data.episode import (
    Episode,
    atomic_write_bytes,
    list_episodes,
    read_episode,
    read_meta,
    read_npz,
)
from infworld.errors import DataError

STARTS_FILE = "starts.npz"
ACTION_FIELDS = ("move", "view", "interact")


@dataclass
class Starts:
    """K starting contexts (module docstring gives the arrays and their shapes)."""

    frames: np.ndarray  # (K, ctx, H, W, 3) uint8
    actions: dict[str, np.ndarray]  # field -> (K, ctx - 1) int64
    poses: np.ndarray  # (K, ctx, 5) float32, NaN = unknown
    names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, np.ndarray] | None = None  # "seed" (K,), "move"/"view"/"interact" (K, L); -1 = none

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 5 or f.shape[-1] != 3:
            raise DataError(f"expected frames (K, ctx, H, W, 3) uint8, got {getattr(f, 'shape', None)} "
                            f"{getattr(f, 'dtype', None)}", field="frames")
        k, ctx = f.shape[:2]
        if k < 1 or ctx < 1:
            raise DataError(f"expected at least one start of at least one frame, got {k} x {ctx}",
                            field="frames")
        for name in ACTION_FIELDS:
            a = self.actions.get(name)
            if a is None or a.shape != (k, ctx - 1):
                raise DataError(f"expected ({k}, {ctx - 1}) ids, got "
                                f"{None if a is None else a.shape}", field=name)
            self.actions[name] = a.astype(np.int64)
        if self.poses.shape != (k, ctx, 5):
            raise DataError(f"expected ({k}, {ctx}, 5), got {self.poses.shape}", field="poses")
        self.poses = self.poses.astype(np.float32)
        if len(self.names) != k:
            raise DataError(f"expected {k} names, got {len(self.names)}", field="names")
        if self.replay is not None:
            self.replay = _check_replay(self.replay, k)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def context(self) -> int:
        """Frames per starting context."""
        return int(self.frames.shape[1])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    def check_model(self, frame_size: tuple[int, int], action_sizes: dict[str, int],
                    path: str | None = None, interact_vocab: list[str] | None = None) -> None:
        """Raise DataError unless these starts fit a model of ``frame_size`` and action vocabularies
        (``interact_vocab``: the model's interaction names, e.g. no Crafter starts for a Doom model)."""
        check_action_space(interact_vocab, self.meta.get("interact_vocab"), self.meta.get("env"), path=path)
        if tuple(frame_size) != self.frame_size:
            raise DataError(f"starting frames are {self.frame_size} but the model generates "
                            f"{tuple(frame_size)}", path=path, field="frames")
        for name in ACTION_FIELDS:
            check_action_ids(self.actions[name], action_sizes.get(name, 0), name, path=path,
                             whose="the model's")

    def context_of(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """Start ``i`` as engine inputs: frames (1, ctx, H, W, 3), actions (1, ctx - 1), poses (1, ctx, 5)."""
        if not 0 <= i < len(self):
            raise DataError(f"start {i} out of range: there are {len(self)} starts (0..{len(self) - 1})",
                            field="start")
        return (self.frames[i][None], {k: a[i][None] for k, a in self.actions.items()}, self.poses[i][None])

    def replay_of(self, i: int) -> tuple[int, dict[str, np.ndarray]] | None:
        """(game seed, actions (n,) per field) that bring the real game to start ``i``'s last frame,
        or None when the start has no recorded game state."""
        self.context_of(i)  # range check
        if self.replay is None or int(self.replay["seed"][i]) < 0:
            return None
        valid = self.replay["move"][i] >= 0
        return int(self.replay["seed"][i]), {k: self.replay[k][i][valid] for k in ACTION_FIELDS}

    @property
    def has_replay(self) -> bool:
        """Whether any start can be replayed in the real game."""
        return self.replay is not None and bool((self.replay["seed"] >= 0).any())

    def save(self, path: str | Path) -> Path:
        """Write atomically as a compressed npz."""
        arrays = {"frames": self.frames, "poses": self.poses, "names": np.array(self.names),
                  "meta_json": np.array(json.dumps(self.meta))}
        arrays.update({k: a.astype(np.int16) for k, a in self.actions.items()})
        if self.replay is not None:
            arrays["replay_seed"] = self.replay["seed"]
            arrays.update({f"replay_{k}": self.replay[k].astype(np.int16) for k in ACTION_FIELDS})
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Starts:
        """Read a starts file; a missing, corrupt or malformed one raises DataError naming it."""
        path = str(path)
        data = read_npz(path, what="starts file")  # damage anywhere in the file: one DataError naming it
        for key in ("frames", "poses", "names", *ACTION_FIELDS):
            if key not in data:
                raise DataError("missing array", path=path, field=key)
        try:
            meta = json.loads(str(data["meta_json"])) if "meta_json" in data else {}
        except json.JSONDecodeError as exc:
            raise DataError(f"bad JSON: {exc}", path=path, field="meta_json") from exc
        replay = None
        if "replay_seed" in data:
            replay = {"seed": data["replay_seed"], **{k: data.get(f"replay_{k}") for k in ACTION_FIELDS}}
        try:
            return cls(data["frames"], {k: data[k] for k in ACTION_FIELDS}, data["poses"],
                       [str(n) for n in data["names"]], meta, replay)
        except DataError as exc:
            raise DataError(str(exc), path=path) from exc


def _check_replay(replay: dict[str, Any], k: int) -> dict[str, np.ndarray]:
    """The replay arrays as int64, or DataError naming the one of the wrong shape."""
    seed = np.asarray(replay.get("seed"))
    if seed.shape != (k,) or seed.dtype.kind not in "iu":
        raise DataError(f"expected ({k},) integer seeds, got {seed.shape} {seed.dtype}", field="replay_seed")
    out = {"seed": seed.astype(np.int64)}
    for name in ACTION_FIELDS:
        a = replay.get(name)
        if a is None or np.ndim(a) != 2 or np.shape(a)[0] != k:
            raise DataError(f"expected ({k}, L) ids, got {None if a is None else np.shape(a)}",
                            field=f"replay_{name}")
        out[name] = np.asarray(a).astype(np.int64)
    return out


def motion_scales(episodes: list[Episode]) -> tuple[float, float]:
    """(move_scale, turn_deg): median pose change of one pure forward step and of one pure turn step.

    Estimated from the data itself (no per-environment table): planar distance over transitions
    whose move is straight forward and view is none, |yaw change| over pure turns. (1.0, 0.0) when
    the data has no poses or no such steps.
    """
    dist, turn = [], []
    for ep in episodes:
        if ep.pose is None or not np.isfinite(ep.pose).all():
            continue
        d = np.diff(ep.pose, axis=0)  # (T-1, 5)
        fwd, right, unc_m = decode_move(ep.move)
        yaw, pitch, unc_v = decode_view(ep.view)
        still_view = (yaw == 0) & (pitch == 0) & ~unc_v
        straight = (fwd == 1) & (right == 0) & ~unc_m & still_view
        dist.extend(np.hypot(d[straight, 0], d[straight, 1]).tolist())
        pure_turn = (yaw != 0) & (pitch == 0) & ~unc_v & (fwd == 0) & (right == 0) & ~unc_m
        dyaw = (d[pure_turn, 3] + 180.0) % 360.0 - 180.0
        turn.extend(np.abs(dyaw).tolist())
    move_scale = float(np.median(dist)) if dist else 1.0
    turn_deg = float(np.median(turn)) if turn else 0.0
    return (move_scale if move_scale > 0 else 1.0), turn_deg


def _has_pitch(episodes: list[Episode]) -> bool:
    return any(bool(np.any(decode_view(ep.view)[1] != 0)) for ep in episodes)


def cut_starts(episodes: list[Episode], count: int, context: int, label: str = "ep") -> Starts:
    """``count`` contexts of ``context`` frames, spread over the episodes round-robin and evenly in time.

    Start ``k`` comes from episode ``k mod E``; the j-th start taken from one episode sits at the
    middle of its j-th equal part, so the starts show different places. Deterministic.
    """
    if count < 1 or context < 1:
        raise DataError(f"expected count >= 1 and context >= 1, got {count} and {context}")
    usable = [(i, ep) for i, ep in enumerate(episodes) if len(ep) >= context]
    if not usable:
        raise DataError(f"no episode has the {context} frames a starting context needs")
    per_ep = [0] * len(usable)
    for k in range(count):
        per_ep[k % len(usable)] += 1
    frames, poses, names, seeds = [], [], [], []
    acts: dict[str, list[np.ndarray]] = {k: [] for k in ACTION_FIELDS}
    prefix: dict[str, list[np.ndarray]] = {k: [] for k in ACTION_FIELDS}  # actions up to the start's end
    taken = [0] * len(usable)
    for k in range(count):
        e = k % len(usable)
        idx, ep = usable[e]
        j, m = taken[e], per_ep[e]
        taken[e] += 1
        t = int((j + 0.5) / m * (len(ep) - context + 1))  # middle of the j-th of m equal parts
        t = min(max(t, 0), len(ep) - context)
        frames.append(ep.frames[t : t + context])
        for name in ACTION_FIELDS:
            acts[name].append(getattr(ep, name)[t : t + context - 1])
        pose = ep.pose[t : t + context] if ep.pose is not None else np.full((context, 5), np.nan)
        poses.append(pose.astype(np.float32))
        names.append(f"{label} {idx} @ {t}")
        seeds.append(int(ep.info.get("env_seed", -1)))
        for name in ACTION_FIELDS:
            prefix[name].append(np.asarray(getattr(ep, name)[: t + context - 1], np.int64))
    replay = None
    if any(s >= 0 for s in seeds):
        longest = max(len(a) for a in prefix["move"])
        replay = {"seed": np.array(seeds, np.int64)}
        for name in ACTION_FIELDS:
            padded = np.full((count, longest), -1, np.int64)
            for k, a in enumerate(prefix[name]):
                padded[k, : len(a)] = a if seeds[k] >= 0 else -1
            replay[name] = padded
    return Starts(np.stack(frames), {k: np.stack(v) for k, v in acts.items()}, np.stack(poses), names,
                  replay=replay)


def starts_from_dataset(root: str | Path, count: int = 8, context: int = 4) -> Starts:
    """Cut starts from a dataset in our episode format (docs/episode_format.md)."""
    meta = read_meta(root)
    paths = list_episodes(root)
    if not paths:
        raise DataError("the dataset has no episodes", path=str(root))
    episodes = [read_episode(p, meta=meta) for p in paths]
    starts = cut_starts(episodes, count, context, label=Path(root).name)
    move_scale, turn_deg = motion_scales(episodes)
    starts.meta = {"env": meta.env, "scenario": meta.scenario, "source": f"dataset {Path(root).name}",
                   "interact_vocab": list(meta.interact_vocab), "has_pitch": _has_pitch(episodes),
                   "move_scale": move_scale, "turn_deg": turn_deg, "fps": meta.fps / max(1, meta.frame_skip),
                   "frame_skip": int(meta.frame_skip),
                   "monsters": (meta.extra.get(meta.env) or {}).get("monsters") if meta.extra else None}
    return starts


def starts_from_collector(env: str = "vizdoom", scenario: str | None = None, size: tuple[int, int] = (64, 64),
                          count: int = 8, context: int = 4, policy: str = "explore", seed: int = 0,
                          episodes: int = 2, steps: int = 200) -> Starts:
    """Run the collector briefly (``episodes`` x ``steps`` actions, nothing written) and cut starts."""
    from infworld.envs.collect import run_episode
    from infworld.envs.registry import make_env

    game = make_env(env, scenario, size=size, max_steps=steps)
    try:
        eps = [run_episode(game, policy, steps, seed, i) for i in range(episodes)]
        spec = game.spec
        monsters = getattr(getattr(game, "config", None), "monsters", None)
    finally:
        game.close()
    starts = cut_starts(eps, count, context, label=f"{env} run")
    starts.meta = {"env": env, "scenario": spec.scenario, "source": f"collector ({policy}, seed {seed})",
                   "interact_vocab": list(spec.interact_vocab), "has_pitch": bool(spec.has_pitch),
                   "move_scale": float(spec.move_scale), "turn_deg": float(spec.turn_deg),
                   "fps": spec.fps / max(1, spec.frame_skip), "frame_skip": int(spec.frame_skip),
                   "monsters": monsters}
    return starts


def game_of(interact_vocab: list[str] | None) -> str:
    """The game whose collector makes starts for a model with these interaction names."""
    from infworld.envs.registry import game_of_vocab

    return game_of_vocab(interact_vocab) or "vizdoom"


def find_starts(model_dir: str | Path | None) -> Path | None:
    """``<model dir>/starts.npz`` when it exists."""
    if model_dir is None:
        return None
    path = Path(model_dir) / STARTS_FILE
    return path if path.is_file() else None


def load_or_make_starts(model_dir: str | Path | None, frame_size: tuple[int, int],
                        count: int = 8, context: int = 4, interact_vocab: list[str] | None = None) -> Starts:
    """The model's shipped starts, else a short collector run of its game (ViZDoom, or Crafter for a
    model with Crafter's actions) at the model's frame size."""
    path = find_starts(model_dir)
    if path is not None:
        return Starts.load(path)
    return starts_from_collector(game_of(interact_vocab), size=frame_size, count=count, context=context)
