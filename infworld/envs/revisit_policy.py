"""The ``revisit`` policy: revisit-dense trajectories for memory training and evaluation.

Infinite-World (arXiv 2602.02393, Sec. 3.4) finetunes on trajectories that come back to places
already seen; this policy makes them from any :class:`~infworld.envs.base.Env` as a seeded mix of
segments (out-and-back, loops, full turns, returns to earlier poses). See
:mod:`infworld.envs.policy_base` for the shared machinery and the other policies.
"""

from __future__ import annotations

import numpy as np

from infworld.data.pose_motion import wrap_deg
from infworld.envs.base import NOOP, Command, EnvSpec, Observation
from infworld.envs.policy_base import HEADING_CMDS, SEGMENTS, ExplorePolicy, PolicyConfig


class RevisitPolicy(ExplorePolicy):
    """Revisit-dense mix: explore legs followed by pose-steered returns, loops and full turns."""

    name = "revisit"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None):
        super().__init__(spec, seed, config)
        self._plan: list[dict] = []
        self.segments: list[str] = []  # names of the segments started, for inspection and tests

    def _act(self, obs: Observation) -> Command:
        for _ in range(8):  # a stage may finish at once; then the next one acts this step
            if not self._plan:
                self._plan = self._new_segment()
            cmd = self._run(self._plan[0], obs)
            if cmd is not None:
                return cmd
            self._plan.pop(0)
        return self._explore_step(obs)

    def _new_segment(self) -> list[dict]:
        w = np.asarray(self.cfg.segment_weights, dtype=np.float64)
        kind = SEGMENTS[int(self.rng.choice(len(w), p=w / w.sum()))]
        now = len(self.history) - 1
        if kind == "return" and now <= self.cfg.min_return_gap:
            kind = "out_and_back"  # nothing old enough to return to yet
        self.segments.append(kind)
        leg = int(self.rng.integers(self.cfg.segment_min, self.cfg.segment_max + 1))
        turn = int(self.rng.choice([-1, 1]))
        if kind == "explore":
            return [{"kind": "explore", "left": leg}]
        if kind == "out_and_back":  # out, back, and sometimes out again along the same path
            back = {"kind": "return", "to": now}
            again = [{"kind": "replay", "of": back}] if self.rng.random() < self.cfg.replay_prob else []
            return [{"kind": "explore", "left": leg}, back, *again]
        if kind == "return":
            return [{"kind": "return", "to": int(self.rng.integers(0, now - self.cfg.min_return_gap + 1))}]
        if self.spec.grid:  # loop = a square of side k, spin = a square of side 1, then home
            side = int(self.rng.integers(2, 7)) if kind == "loop" else 1
            order = [0, 90, 180, 270][::turn]
            legs = [h for h in order for _ in range(side)]
            return [{"kind": "square", "legs": legs}, {"kind": "return", "to": now}]
        stage = {"kind": "circle" if kind == "loop" else "spin", "dir": turn, "turned": 0.0, "steps": 0}
        return [stage, {"kind": "return", "to": now}]

    def _run(self, st: dict, obs: Observation) -> Command | None:
        """One step of stage ``st``, or None when it is finished."""
        kind = st["kind"]
        if kind == "explore":
            st["left"] -= 1
            return self._explore_step(obs) if st["left"] >= 0 else None
        if kind == "square":
            if self._stalled():  # skip the rest of a blocked side
                while st["legs"] and st["legs"][0] == st.get("last"):
                    st["legs"].pop(0)
            if not st["legs"]:
                return None
            st["last"] = st["legs"].pop(0)
            return HEADING_CMDS[st["last"]]
        if kind in ("circle", "spin"):
            if len(self.history) > 1:
                st["turned"] += abs(float(wrap_deg(self.history[-1][3] - self.history[-2][3])))
            st["steps"] += 1
            too_long = st["steps"] > 3 * 360.0 / max(self.spec.turn_deg, 1.0)
            if st["turned"] >= 360.0 or too_long or (kind == "circle" and self._stalled()):
                return None
            return Command(forward=int(kind == "circle"), yaw=st["dir"])
        return self._follow(st, obs)

    def _follow(self, st: dict, obs: Observation) -> Command | None:
        """Retrace the recorded path back to pose ``st["to"]``, then turn to its heading and pitch."""
        if "path" not in st:
            if st["kind"] == "return":  # from now back to pose "to"
                st["from"] = len(self.history) - 1
                idx = range(st["from"], st["to"] - 1, -1)
            else:  # replay: walk a return's path again the way it was first walked
                idx = range(st["of"]["to"], st["of"].get("from", st["of"]["to"]) + 1)
            pts = np.array([self.history[i] for i in idx])[:, [0, 1, 3]]  # (N, 3) x, y, yaw
            spacing = 0.99 if self.spec.grid else 0.75 * self.spec.move_scale
            keep = [pts[0]]
            for p in pts[1:]:
                if np.linalg.norm(p[:2] - keep[-1][:2]) >= spacing:
                    keep.append(p)
            keep.append(pts[-1])
            replay = st["kind"] == "replay"
            rewind = not self.spec.grid and (replay or self.rng.random() < self.cfg.rewind_prob)
            st.update(path=np.array(keep), goal=self.history[idx[-1]].copy(), fails=0, wp_fails=0, side=0,
                      align=0, rewind=rewind)
        path = st["path"]
        radius = 0.5 if self.spec.grid else 0.8 * self.spec.move_scale
        if len(path):
            # Waypoints reached (looking a few ahead, so small wiggles are cut but the path is still
            # walked as it was: every retraced frame repeats an old view, which is the point).
            near = np.nonzero(np.linalg.norm(path[:4, :2] - obs.pose[:2], axis=1) < radius)[0]
            if len(near):
                path = st["path"] = path[near[-1] + 1:]
        if len(path):
            if st["side"]:  # finish a sidestep: |side| steps left, sign = direction
                direction = int(np.sign(st["side"]))
                st["side"] -= direction
                return Command(right=direction)
            if self._stalled():
                st["wp_fails"] += 1
                st["fails"] += 1
                if st["fails"] > 12:
                    return None  # give up this return
                if st["wp_fails"] > 3:
                    st["path"], st["wp_fails"] = path[1:], 0
                elif st["wp_fails"] == 1 and self._block_interact:
                    return Command(interact=self._block_interact)  # a door may have closed behind us
                elif not self.spec.grid:
                    direction = int(self.rng.choice([-1, 1]))  # sidestep around a corner
                    st["side"] = direction
                    return Command(right=direction)
                else:
                    return self._steer(obs, path[0], swap=True)
            if not len(st["path"]):
                return NOOP  # the last waypoint was just dropped; align next step
            target = st["path"][0]  # (x, y, yaw)
            if st["rewind"]:
                return self._steer_facing(obs, target[:2], target[2])
            return self._steer(obs, target)
        if self.spec.grid or st["align"] > 2 * 360.0 / max(self.spec.turn_deg, 1.0):
            return None
        st["align"] += 1
        turn = self._turn_to(obs, float(st["goal"][3]))
        dpitch = float(st["goal"][4] - obs.pose[4])
        pitch = int(np.sign(dpitch)) if abs(dpitch) > 5.0 else 0
        if turn is None and pitch == 0:
            return None
        return (turn or NOOP).replace(pitch=pitch)
