"""Scripted benchmark trajectories in a real environment: out-and-back, loop, full turn, replay, and
long out-and-backs, long loops and look-backs.

The memory protocols need trajectories that come back to where they have been, at a known frame
gap, so that "does the model remember?" can be asked at exact moments (VRAG, arXiv 2505.21996,
Sec. 5: revisit consistency; WorldMem and Infinite-World evaluate on loops and turns). Each kind is
a :class:`ScriptedPolicy`: a list of stages steered on the ground-truth pose, recorded exactly like
the collectors record (``infworld.envs.collect.run_episode``: the command applied at each step is
the action, so the actions are the ones the world models are trained on):

* ``out_and_back``: an explore leg of ``legs`` steps, a 180-degree turn, walk back along the leg,
  turn to the starting heading, then walk the leg once more (its frames revisit the first pass);
* ``loop``: a square of side ``legs`` steps toward the open side, 1.5 laps (the second half lap
  revisits the first);
* ``turn``: ``legs`` explore steps, ``turns`` full turns in place (the last half turn revisits the
  first), then ``legs`` explore steps;
* ``replay``: an ``explore``-policy episode (as in the training data, from another seed) of
  ``max_frames`` frames, for compounding error over long horizons.

The long kinds (doom-v2) stretch the gap between a visit and the return to hundreds of frames:

* ``long_out_and_back``: an explore leg of ``legs`` steps, a 180-degree turn, walk back along it,
  turn to the starting heading at its start (frame 0 again), then walk the leg once more keeping
  its old headings (closed loop, not an open-loop replay, which drifts over a long leg): gaps of
  about 2 ``legs`` + 30 frames, plus the explore leg's own shorter returns;
* ``long_loop``: laps of an explored route of ``legs`` steps (out, back, out, back for
  ``turns`` = 2 laps): the second lap revisits the first, out leg and back leg, a lap apart;
* ``look_back``: ``turns`` cycles of ``legs`` explore steps, a 180-degree turn to look where we
  came from, a stare of 0, 8, 16 or 24 frames, and the turn back: short gaps (16 to ~64 frames).

They must run their whole script within ``max_frames`` (a goto stuck on a wall re-draws the seed).

Revisit events (frame ``t`` shows the place and heading of an earlier frame ``s``) are found on the
recorded poses with :func:`infworld.data.revisits.find_revisits`. :func:`random_actions` and
:func:`dead_reckon` make the random-action counterpart of a trajectory (action protocol).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infworld.data.action_schema import UNCERTAIN
from infworld.data.episode import Episode
from infworld.data.pose_motion import wrap_deg
from infworld.data.revisits import find_revisits
from infworld.envs.base import NOOP, Command, Env, EnvSpec, Observation
from infworld.envs.collect import episode_seeds, run_episode
from infworld.envs.policies import ExplorePolicy, PolicyConfig
from infworld.errors import ConfigError, EnvError
from infworld.memory.deadreckon import DeadReckoner, measure_step_sizes

KINDS = ("replay", "out_and_back", "loop", "turn", "long_out_and_back", "long_loop", "look_back")
LONG_KINDS = ("long_out_and_back", "long_loop", "look_back")  # must finish within max_frames


@dataclass(frozen=True)
class TrajectorySpec:
    """One fixed trajectory of a suite. ``legs`` is in environment steps (see the module docstring);
    ``max_frames`` caps the recording (``replay`` must reach it exactly)."""

    name: str
    kind: str
    seed: int
    max_frames: int
    legs: int = 8
    turns: float = 1.5

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"trajectory {self.name!r}: unknown kind {self.kind!r}; valid: {KINDS}")
        if self.max_frames < 2 or self.legs < 1 or self.turns <= 0:
            raise ConfigError(f"trajectory {self.name!r}: max_frames >= 2, legs >= 1 and turns > 0 expected")


@dataclass(frozen=True)
class RevisitConfig:
    """When frame t counts as a revisit of frame s (find_revisits): ``t - s > min_gap``, planar
    distance <= ``dist`` pose units, heading within ``angle_deg`` (None: place only)."""

    min_gap: int = 16
    dist: float = 48.0
    angle_deg: float | None = 20.0
    min_events: int = 2  # scripted trajectories with fewer events are re-drawn with another seed


def find_events(pose: np.ndarray, cfg: RevisitConfig) -> np.ndarray:
    """Revisit events (E, 2) int64 rows ``[t, s]`` (frame t comes back to frame s) from poses (T, 5)."""
    mask, source = find_revisits(pose, min_gap=cfg.min_gap, dist=cfg.dist, angle_deg=cfg.angle_deg)
    t = np.nonzero(mask)[0]
    return np.stack([t, source[t]], axis=1).astype(np.int64) if len(t) else np.zeros((0, 2), np.int64)


class ScriptedPolicy(ExplorePolicy):
    """Runs a list of stages, each steered on the pose (see :func:`stages_for`); ``finished`` once
    they are all done. No random interactions or look excursions: views stay level and repeatable."""

    name = "scripted"

    def __init__(self, spec: EnvSpec, seed: int, stages: list[dict]):
        super().__init__(spec, seed, PolicyConfig(interact_prob=0.0, look_prob=0.0))
        self.stages = [dict(s) for s in stages]
        self.marks: dict[str, list[np.ndarray]] = {}  # poses recorded by "explore" stages, by name
        self.commands: dict[str, list[Command]] = {}  # and the commands they gave
        self.finished = False

    def _act(self, obs: Observation) -> Command:
        for _ in range(8):  # a stage may finish at once; the next one then acts this step
            if not self.stages:
                self.finished = True
                return NOOP
            cmd = self._run(self.stages[0], obs)
            if cmd is not None:
                return cmd
            self.stages.pop(0)
        return NOOP

    def _run(self, st: dict, obs: Observation) -> Command | None:
        """One step of stage ``st``, or None when it is finished."""
        kind = st["kind"]
        pose = np.asarray(obs.pose, dtype=np.float64)
        if kind == "explore":
            st["left"] -= 1
            if st["left"] < 0:
                return None
            cmd = self._explore_step(obs)
            if st.get("record"):
                self.marks.setdefault(st["record"], []).append(pose)
                self.commands.setdefault(st["record"], []).append(cmd)
            return cmd
        if kind == "wait":  # stand still: ViZDoom keeps sliding for a few tics after a walk
            st["left"] -= 1
            return NOOP if st["left"] >= 0 else None
        if kind == "replay":  # the recorded commands again, open loop, from the same standing start
            cmds = self.commands.get(st["mark"], [])
            st["i"] = st.get("i", -1) + 1
            return cmds[st["i"]] if st["i"] < len(cmds) else None
        if kind == "turn":  # turn by st["deg"] degrees (accumulated), direction st["dir"] (+1 = right)
            if "last" in st:
                st["turned"] = st.get("turned", 0.0) + abs(float(wrap_deg(pose[3] - st["last"])))
            st["last"] = float(pose[3])
            done = st.get("turned", 0.0) >= st["deg"] - self.spec.turn_deg / 2
            return None if done else Command(yaw=st["dir"])
        if kind == "face":  # turn to the heading of the first recorded pose of a mark
            return self._turn_to(obs, float(self.marks[st["mark"]][0][3]))
        if kind == "goto":
            return self._goto(st, obs, pose)
        if kind == "square":  # corners from here, toward the open side; becomes a goto stage
            side = st["legs"] * self.spec.move_scale
            turn = -self._open_side(obs)  # +1 = counter-clockwise (left)
            corners, p, h = [pose[:2].copy()], pose[:2].copy(), math.radians(pose[3])
            for _ in range(3):
                p = p + side * np.array([math.cos(h), math.sin(h)])
                corners.append(p)
                h += turn * math.pi / 2
            points = corners[1:] + corners[:1] + corners[1:3]  # 1.5 laps back through the start
            st.update(kind="goto", points=points)
            return self._goto(st, obs, pose)
        raise EnvError(f"scripted policy: unknown stage {kind!r}")

    def _goto(self, st: dict, obs: Observation, pose: np.ndarray) -> Command | None:
        """Steer through st["points"] (or a recorded mark, optionally reversed); a waypoint that
        cannot be reached (stalled against a wall) is skipped."""
        if "points" not in st:
            path = list(self.marks.get(st["mark"], []))  # recorded poses (5,)
            st["points"] = path[::-1] if st.get("reverse") else path[:1] if st.get("start") else path
        st.setdefault("i", 0)
        radius = 0.6 * self.spec.move_scale
        while st["i"] < len(st["points"]) and np.linalg.norm(pose[:2] - st["points"][st["i"]][:2]) < radius:
            st["i"] += 1
        st["steps"] = st.get("steps", 0) + 1
        if st["i"] >= len(st["points"]):
            if not st.get("start") or st["steps"] > 40:
                return None
            # Arrive, do not pass through: brake until the slide has stopped, steer back if it overshot.
            h = self.history
            speed = np.linalg.norm(h[-1][:2] - h[-2][:2]) if len(h) > 1 else 0.0
            if speed < 0.1 * self.spec.move_scale:
                return None
            if np.linalg.norm(pose[:2] - st["points"][-1][:2]) < radius:
                return NOOP
            st["i"] = len(st["points"]) - 1
        if self._stalled() or st["steps"] > 12 * len(st["points"]):
            st["i"] += 1  # blocked: give up this waypoint
            return NOOP.replace(interact=self._block_interact)
        target = st["points"][st["i"]]
        if st.get("facing"):  # walk the old path with its old headings: its views repeat
            return self._steer_facing(obs, target[:2], float(target[3]))
        return self._steer(obs, target[:2])


def _back(mark: str) -> list[dict]:
    """Half a lap home: turn round, walk a recorded leg in reverse (forward, so its reverse views)."""
    return [{"kind": "wait", "left": 2}, {"kind": "turn", "deg": 180.0, "dir": 1},
            {"kind": "goto", "mark": mark, "reverse": True}]


def _out(mark: str) -> list[dict]:
    """Half a lap out: arrive at the leg's start, turn to its first heading, walk it again with its
    old headings, so its views repeat (closed loop: a long leg does not drift as an open-loop
    replay of its commands would)."""
    return [{"kind": "goto", "mark": mark, "start": True, "facing": True}, {"kind": "face", "mark": mark},
            {"kind": "wait", "left": 2}, {"kind": "goto", "mark": mark, "facing": True}]


def _look_back(cycle: int, legs: int) -> list[dict]:
    """Cycle ``cycle`` of ``look_back``: walk on, turn round to look where we came from, stare for
    0, 8, 16 or 24 frames (cycling, to spread the gaps), turn back the way we turned."""
    d = 1 if cycle % 2 == 0 else -1
    return [{"kind": "explore", "left": legs}, {"kind": "wait", "left": 2},
            {"kind": "turn", "deg": 180.0, "dir": d}, {"kind": "wait", "left": 8 * (cycle % 4)},
            {"kind": "turn", "deg": 180.0, "dir": -d}]


def stages_for(spec: TrajectorySpec) -> list[dict]:
    """The stage list of a scripted kind (see the module docstring)."""
    n = spec.legs
    if spec.kind in ("long_out_and_back", "long_loop"):
        halves = 3 if spec.kind == "long_out_and_back" else max(3, round(2 * spec.turns))
        stages = [{"kind": "explore", "left": n, "record": "out"}]
        for h in range(1, halves):
            stages += _back("out") if h % 2 else _out("out")
        return stages
    if spec.kind == "look_back":
        return [st for c in range(max(1, round(spec.turns))) for st in _look_back(c, n)]
    if spec.kind == "out_and_back":
        return [{"kind": "explore", "left": n, "record": "out"},
                {"kind": "turn", "deg": 180.0, "dir": 1},
                {"kind": "goto", "mark": "out", "reverse": True},
                {"kind": "goto", "mark": "out", "start": True, "facing": True},
                {"kind": "face", "mark": "out"}, {"kind": "wait", "left": 2},
                {"kind": "replay", "mark": "out"}]
    if spec.kind == "loop":
        return [{"kind": "explore", "left": 1}, {"kind": "square", "legs": n}]
    if spec.kind == "turn":
        return [{"kind": "explore", "left": n}, {"kind": "turn", "deg": 360.0 * spec.turns, "dir": 1},
                {"kind": "explore", "left": n}]
    raise ConfigError(f"trajectory kind {spec.kind!r} is not scripted")


def record(env: Env, policy: ScriptedPolicy, steps: int, env_seed: int) -> Episode:
    """Play ``policy`` for up to ``steps`` actions (fewer once it is finished or the game ends),
    recording frames, applied commands and poses as ``run_episode`` does (no depth)."""
    obs = env.reset(env_seed)
    frames, poses = [obs.frame], [obs.pose]
    move, view, interact = [], [], []
    for _ in range(steps):
        cmd = policy.act(obs)
        if policy.finished:
            break
        res = env.step(cmd)
        if res.obs is None:
            break
        move.append(res.command.move_id)
        view.append(res.command.view_id)
        interact.append(res.command.interact)
        obs = res.obs
        frames.append(obs.frame)
        poses.append(obs.pose)
        if res.done:
            break
    return Episode(frames=np.stack(frames), move=np.asarray(move, np.int64), view=np.asarray(view, np.int64),
                   interact=np.asarray(interact, np.int64), pose=np.stack(poses).astype(np.float32))


def make_trajectory(env: Env, spec: TrajectorySpec, revisit: RevisitConfig, tries: int = 8
                    ) -> tuple[Episode, np.ndarray]:
    """Record trajectory ``spec`` in ``env``: (episode, events (E, 2)). Deterministic: attempt ``i``
    uses seed ``spec.seed + 1000 i``; the first attempt that is long enough (``replay``: exactly
    ``max_frames``; the long kinds: the whole script within ``max_frames``) and has at least
    ``revisit.min_events`` events (scripted kinds; long out-and-backs and loops: events with a gap
    above ``legs``, i.e. from the passes after the first) is kept."""
    spec.check()
    for attempt in range(tries):
        seed = spec.seed + 1000 * attempt
        if spec.kind == "replay":
            ep = run_episode(env, "explore", spec.max_frames - 1, seed, 0)
            ok = len(ep) == spec.max_frames
            ep.depth = ep.buttons = None  # not used by the benchmark; keeps the cache small
        else:
            env_seed, policy_seed = episode_seeds(seed, 0)
            policy = ScriptedPolicy(env.spec, policy_seed, stages_for(spec))
            ep = record(env, policy, spec.max_frames - 1, env_seed)
            ok = len(ep) >= min(spec.max_frames, 2 * revisit.min_gap)
            if spec.kind in LONG_KINDS:  # the whole script ran (a stuck goto would cut the last pass)
                ok = policy.finished
        events = find_events(ep.pose, revisit)
        counted = events
        if spec.kind in ("long_out_and_back", "long_loop"):  # the return passes, not just the leg's own
            counted = events[events[:, 0] - events[:, 1] > spec.legs]
        if ok and (spec.kind == "replay" or len(counted) >= revisit.min_events):
            ep.extras = {}
            ep.info = {"trajectory": spec.name, "kind": spec.kind, "seed": seed, "attempt": attempt,
                       "legs": spec.legs, "turns": spec.turns, "scenario": env.spec.scenario}
            return ep, events
    raise EnvError(f"trajectory {spec.name!r} ({spec.kind}): no seed among {tries} tries gave a full-length "
                   f"recording with >= {revisit.min_events} revisit events; change its seed or legs")


def random_actions(actions: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """``count`` seeded random actions per field: ids drawn among the certain ids the trajectory uses,
    each held for 2..8 frames (momentum, as in the rollout CLI); interact stays 0."""
    rng = np.random.default_rng(seed)
    out = {n: np.zeros(count, np.int64) for n in actions}
    for name in ("move", "view"):
        ids = np.unique(actions[name][actions[name] != UNCERTAIN]) if name in actions else []
        if len(ids) == 0:
            continue
        i = 0
        while i < count:
            hold = int(rng.integers(2, 9))
            out[name][i: i + hold] = rng.choice(ids)
            i += hold
    return out


def dead_reckon(poses: np.ndarray, actions: dict[str, np.ndarray], start: int, new: dict[str, np.ndarray]
                ) -> np.ndarray:
    """Poses (n + 1, 5) for actions ``new`` taken from ``poses[start]`` (the first row), so pose-based
    memories see poses that follow the random actions instead of the true ones.

    Integrated by the project's one :class:`~infworld.memory.deadreckon.DeadReckoner`, with step
    sizes measured on this trajectory's own poses and actions
    (:func:`~infworld.memory.deadreckon.measure_step_sizes`; the ViZDoom defaults fill in a motion
    the trajectory never makes), so any dataset's units work.
    """
    cfg = measure_step_sizes([(poses, actions["move"], actions["view"])])
    track = DeadReckoner(cfg).track(poses[start], new["move"], new["view"])  # (n, 5)
    return np.concatenate([poses[start : start + 1].astype(np.float32), track])
