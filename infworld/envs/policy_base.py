"""The policy machinery every exploration policy shares: its config, the :class:`Policy` base class
(interaction, look excursions, wall and stall detection, steering on the pose), and the two simple
policies the others build on, ``random`` and ``explore``. :mod:`infworld.envs.policies` describes
the policies and builds them by name; ``revisit`` and ``diverse`` extend :class:`ExplorePolicy`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from infworld.data.pose_motion import wrap_deg
from infworld.envs.base import NOOP, Command, EnvSpec, Observation
from infworld.errors import EnvError

# Grid headings (degrees CCW from +x, like the Crafter pose yaw) -> the command that walks that way.
HEADING_CMDS = {0: Command(right=1), 90: Command(forward=1), 180: Command(right=-1),
                 270: Command(forward=-1)}
SEGMENTS = ("explore", "out_and_back", "loop", "spin", "return")


@dataclass
class PolicyConfig:
    """Knobs shared by the policies. Distances are in units of ``EnvSpec.move_scale`` (one step)."""

    min_hold: int = 3  # random: a sticky command is kept for min_hold..max_hold steps
    max_hold: int = 15
    interact_prob: float = 0.03  # chance per step of one interaction
    look_prob: float = 0.02  # chance per step of a short look up or down (envs with pitch)
    wall_steps: float = 2.0  # free distance ahead (in steps) below which the way counts as blocked
    stall_steps: int = 3  # steps of moving with < stall_frac * move_scale progress = blocked
    stall_frac: float = 0.3
    cell_steps: float = 3.0  # explore: visit-count cell size, in steps (grid envs use one cell)
    novelty_every: int = 12  # explore: steps between least-visited-direction checks
    segment_min: int = 30  # revisit: length range of explore legs
    segment_max: int = 90
    min_return_gap: int = 100  # revisit: "return" goes back to a pose at least this many steps old
    rewind_prob: float = 0.85  # revisit: share of returns that keep the old headings (views repeat)
    replay_prob: float = 0.8  # revisit: share of out-and-backs that walk the leg out once more
    segment_weights: tuple[float, ...] = (0.05, 0.3, 0.15, 0.1, 0.4)  # order of SEGMENTS
    explore_share: float = 0.3  # diverse: share of segments that explore instead of random commands
    diverse_hold: int = 4  # diverse: a random command is kept for 1..diverse_hold steps

    def validate(self) -> None:
        if not 1 <= self.min_hold <= self.max_hold:
            raise EnvError(f"policy min_hold/max_hold must satisfy 1 <= min <= max, got "
                           f"{self.min_hold}/{self.max_hold}")
        if not 1 <= self.segment_min <= self.segment_max:
            raise EnvError(f"policy segment_min/segment_max must satisfy 1 <= min <= max, got "
                           f"{self.segment_min}/{self.segment_max}")
        if self.diverse_hold < 1:
            raise EnvError(f"policy diverse_hold must be >= 1, got {self.diverse_hold}")
        for name in ("interact_prob", "look_prob", "rewind_prob", "replay_prob", "explore_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise EnvError(f"policy {name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.segment_weights) != len(SEGMENTS) or min(self.segment_weights) < 0 \
                or sum(self.segment_weights) <= 0:
            raise EnvError(f"policy segment_weights must be {len(SEGMENTS)} non-negative weights for "
                           f"{SEGMENTS}, got {self.segment_weights}")


class Policy(ABC):
    """Maps each observation to a command; the same seed and observations give the same commands."""

    name = "policy"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None):
        self.spec = spec
        self.cfg = config or PolicyConfig()
        self.cfg.validate()
        self.rng = np.random.default_rng(seed)
        self.history: list[np.ndarray] = []  # every pose seen, (5,) float64 each
        self._moving = 0  # consecutive steps that asked to move
        self._look = 0  # remaining steps of a look excursion (sign = direction)
        vocab = spec.interact_vocab
        # What to press when blocked: opens doors in Doom, collects/drinks in Crafter.
        self._block_interact = next((vocab.index(n) for n in ("use", "do") if n in vocab), 0)

    def act(self, obs: Observation) -> Command:
        self.history.append(np.asarray(obs.pose, dtype=np.float64))
        cmd = self._act(obs)
        n_interact = len(self.spec.interact_vocab) - 1
        if cmd.interact == 0 and n_interact > 0 and self.rng.random() < self.cfg.interact_prob:
            cmd = cmd.replace(interact=int(self.rng.choice(n_interact, p=self.spec.weights())) + 1)
        if self.spec.has_pitch and cmd.pitch == 0:
            cmd = cmd.replace(pitch=self._pitch(obs))
        moving = (cmd.forward or cmd.right) and not (self.spec.grid and cmd.interact)
        self._moving = self._moving + 1 if moving else 0
        return cmd

    @abstractmethod
    def _act(self, obs: Observation) -> Command:
        """The policy's command before interaction and pitch handling."""

    # --- shared helpers ----------------------------------------------------------------------

    def _pitch(self, obs: Observation) -> int:
        """Short look excursions; otherwise bring the view back to level."""
        if self._look == 0 and self.rng.random() < self.cfg.look_prob:
            self._look = int(self.rng.choice([-1, 1]) * self.rng.integers(1, 4))
        if self._look:
            step = int(np.sign(self._look))
            self._look -= step
            return step
        pitch = float(obs.pose[4])
        return -int(np.sign(pitch)) if abs(pitch) > 5.0 else 0

    def _stalled(self) -> bool:
        """True when the last moves made (almost) no progress: a wall, a tree, a closed door."""
        n = 1 if self.spec.grid else self.cfg.stall_steps
        if self._moving < n or len(self.history) <= n:
            return False
        moved = np.linalg.norm(self.history[-1][:2] - self.history[-1 - n][:2])
        return bool(moved < (0.5 if self.spec.grid else self.cfg.stall_frac * self.spec.move_scale * n))

    def _profile(self, obs: Observation) -> tuple[np.ndarray, np.ndarray] | None:
        """Free distance (world units) per frame column and each column's heading relative to the
        camera (degrees, + = left), from the depth rows around the horizon; None without depth."""
        if obs.depth is None or self.spec.depth_scale <= 0 or abs(float(obs.pose[4])) > 12.0:
            return None  # no depth, or looking at the floor/ceiling
        h, w = obs.depth.shape
        band = obs.depth[2 * h // 5: 3 * h // 5].astype(np.float32)  # (H/5, W)
        free = np.percentile(band, 20, axis=0) * self.spec.depth_scale  # (W,)
        x = (np.arange(w) + 0.5) / w * 2.0 - 1.0  # -1 = left edge, +1 = right edge
        rel = -np.degrees(np.arctan(x * math.tan(math.radians(self.spec.hfov_deg / 2))))  # (W,)
        return rel, free

    def _blocked_ahead(self, obs: Observation) -> bool:
        prof = self._profile(obs)
        if prof is None:
            return False
        rel, free = prof
        return bool(free[np.abs(rel) < 15.0].min() < self.cfg.wall_steps * self.spec.move_scale)

    def _open_side(self, obs: Observation) -> int:
        """Yaw command toward the more open side (-1 = turn left), random without depth."""
        prof = self._profile(obs)
        if prof is None:
            return int(self.rng.choice([-1, 1]))
        rel, free = prof
        return -1 if free[rel > 0].mean() > free[rel < 0].mean() else 1

    def _steer(self, obs: Observation, target: np.ndarray, swap: bool = False) -> Command:
        """A command toward world point ``target`` (x, y) by steering on the pose."""
        dx, dy = float(target[0] - obs.pose[0]), float(target[1] - obs.pose[1])
        if self.spec.grid:  # fixed camera: +x is screen right (right +1), +y is screen up (forward +1)
            use_x = (abs(dx) >= abs(dy)) != swap if dx and dy else bool(dx)
            return Command(right=int(np.sign(dx))) if use_x else Command(forward=int(np.sign(dy)))
        err = float(wrap_deg(math.degrees(math.atan2(dy, dx)) - obs.pose[3]))
        yaw = -int(np.sign(err)) if abs(err) > self.spec.turn_deg / 2 else 0  # err > 0: target is left
        return Command(forward=int(abs(err) < 50.0), yaw=yaw)

    def _steer_facing(self, obs: Observation, target: np.ndarray, yaw_deg: float) -> Command:
        """Walk toward ``target`` in whichever of the 8 forward/strafe directions fits best while
        turning toward heading ``yaw_deg``: retracing a path this way repeats its views."""
        cmd = self._turn_to(obs, yaw_deg) or NOOP
        dx, dy = float(target[0] - obs.pose[0]), float(target[1] - obs.pose[1])
        rel = float(wrap_deg(math.degrees(math.atan2(dy, dx)) - obs.pose[3]))  # + = to the left
        k = int(round(rel / 45.0)) % 8  # 0 ahead, 2 left, 4 behind, 6 right
        forward = (1, 1, 0, -1, -1, -1, 0, 1)[k]
        right = (0, -1, -1, -1, 0, 1, 1, 1)[k]
        return cmd.replace(forward=forward, right=right)

    def _turn_to(self, obs: Observation, yaw_deg: float) -> Command | None:
        """A turn toward heading ``yaw_deg``, or None once within half a turn step."""
        err = float(wrap_deg(yaw_deg - obs.pose[3]))
        return None if abs(err) <= self.spec.turn_deg / 2 else Command(yaw=-int(np.sign(err)))


class RandomPolicy(Policy):
    """Sticky random commands: momentum comes from keeping each one for a random duration."""

    name = "random"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None):
        super().__init__(spec, seed, config)
        self._cmd, self._hold = NOOP, 0

    def _act(self, obs: Observation) -> Command:
        if self._hold <= 0:
            self._hold = int(self.rng.integers(self.cfg.min_hold, self.cfg.max_hold + 1))
            if self.spec.grid:
                self._cmd = [NOOP, *HEADING_CMDS.values()][int(self.rng.choice(5, p=[0.2] * 5))]
            else:
                tri = np.array([-1, 0, 1])
                self._cmd = Command(forward=int(self.rng.choice(tri, p=[0.15, 0.3, 0.55])),
                                    right=int(self.rng.choice(tri, p=[0.15, 0.7, 0.15])),
                                    yaw=int(self.rng.choice(tri, p=[0.25, 0.5, 0.25])))
        self._hold -= 1
        return self._cmd


class ExplorePolicy(Policy):
    """Forward with wall avoidance and a pull toward the least-visited cells."""

    name = "explore"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None):
        super().__init__(spec, seed, config)
        self.visits: dict[tuple[int, int], int] = defaultdict(int)
        self._cell = 1.0 if spec.grid else self.cfg.cell_steps * spec.move_scale
        self._turn_steps, self._turn_dir, self._turning = 0, 1, 0
        self._target_yaw: float | None = None
        self._heading = int(self.rng.choice(list(HEADING_CMDS)))  # grid envs
        self._burst = 0  # grid: remaining "interact with what is ahead" steps
        self._walls: set[tuple[int, int]] = set()  # grid: cells we bumped into
        self._t = 0

    def _act(self, obs: Observation) -> Command:
        return self._explore_step(obs)

    def _key(self, xy: np.ndarray) -> tuple[int, int]:
        return int(math.floor(xy[0] / self._cell)), int(math.floor(xy[1] / self._cell))

    def _explore_step(self, obs: Observation) -> Command:
        self._t += 1
        here = self._key(obs.pose[:2])
        self.visits[here] += 1
        self._walls.discard(here)  # it was cleared (a tree collected) after all
        return self._explore_grid(obs) if self.spec.grid else self._explore_fp(obs)

    def _explore_fp(self, obs: Observation) -> Command:
        stalled = self._stalled()
        blocked = stalled or self._blocked_ahead(obs)
        max_turn = 360.0 / max(self.spec.turn_deg, 1.0)
        # Keep turning away from a wall for a few steps, then until the way ahead is open.
        if self._turning and (self._turn_steps > 0 or blocked) and self._turning < max_turn:
            self._turn_steps -= 1
            self._turning += 1
            return Command(yaw=self._turn_dir)
        self._turning = 0
        if blocked:
            self._turn_dir, self._target_yaw = self._open_side(obs), None
            self._turn_steps, self._turning = int(self.rng.integers(1, 4)), 1
            if self._block_interact and self.rng.random() < 0.5:
                return Command(interact=self._block_interact)  # a wall within reach may be a door
            return Command(yaw=self._turn_dir)
        if self._target_yaw is None or self._t % self.cfg.novelty_every == 0:
            self._target_yaw = float(obs.pose[3]) + self._best_heading(obs)
        return (self._turn_to(obs, self._target_yaw) or NOOP).replace(forward=1)  # steer while walking

    def _best_heading(self, obs: Observation) -> float:
        """Relative heading toward open, little-visited ground: visible columns scored by the visit
        count where they lead and by how free they are; behind (unseen) is allowed at a cost."""
        step = self.spec.move_scale
        prof = self._profile(obs)
        if prof is None:
            rel, reach = np.array([-90.0, -45.0, 0.0, 45.0, 90.0]), np.full(5, 4.0 * step)
        else:
            cols = np.linspace(0, len(prof[0]) - 1, 9).round().astype(int)
            rel, reach = prof[0][cols], np.minimum(prof[1][cols], 6.0 * step)
        rel = np.concatenate([rel, [135.0, 180.0, -135.0]])
        reach = np.concatenate([reach, np.full(3, 3.0 * step)])
        # Low is good: few visits where it leads, far to the next wall, little turning, random ties.
        scores = [self._visits_toward(obs, r, 0.7 * d) - 0.3 * d / step + abs(r) / 180.0
                  + 0.5 * self.rng.random() for r, d in zip(rel, reach, strict=True)]
        return float(rel[int(np.argmin(scores))])

    def _visits_toward(self, obs: Observation, rel: float, dist: float) -> int:
        """Visit count of the cell ``dist`` away in direction ``yaw + rel``."""
        a = math.radians(float(obs.pose[3]) + rel)
        d = np.array([math.cos(a), math.sin(a)]) * dist
        xy = obs.pose[:2] + d
        return self.visits.get(self._key(np.round(xy) if self.spec.grid else xy), 0)

    def _explore_grid(self, obs: Observation) -> Command:
        if self._burst > 0:
            self._burst -= 1
            return Command(interact=self._block_interact)
        if self._stalled():
            a = math.radians(self._heading)
            ahead = self._key(obs.pose[:2] + np.array([round(math.cos(a)), round(math.sin(a))]))
            if ahead not in self._walls and self._block_interact and self.rng.random() < 0.5:
                # Facing a tree, water or stone for the first time: use it (a tree becomes wood).
                self._burst = int(self.rng.integers(0, 2))
                self._walls.add(ahead)
                return Command(interact=self._block_interact)
            self._walls.add(ahead)
            self._heading = self._pick_heading(obs, exclude=self._heading)
        elif self.rng.random() < 0.1:
            self._heading = self._pick_heading(obs)
        return HEADING_CMDS[self._heading]

    def _pick_heading(self, obs: Observation, exclude: int | None = None) -> int:
        """The grid heading toward the least-visited ground (visits up to 4 cells ahead, nearer ones
        weigh more; a cell known to block counts as heavily visited; ties broken at random)."""
        headings = [h for h in HEADING_CMDS if h != exclude]
        scores = []
        for h in headings:
            rel = float(wrap_deg(h - obs.pose[3]))
            a = math.radians(h)
            first = self._key(obs.pose[:2] + np.array([round(math.cos(a)), round(math.sin(a))]))
            score = sum(self._visits_toward(obs, rel, k) / k for k in (1.0, 2.0, 3.0, 4.0))
            scores.append(score + 10.0 * (first in self._walls) + 0.5 * self.rng.random())
        return headings[int(np.argmin(scores))]
