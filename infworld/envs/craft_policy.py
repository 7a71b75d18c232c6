"""The ``craft`` policy: Crafter trajectories that change the world and come back to look at it.

WorldScape's first claim is one model for locomotion *and* manipulation; a world model earns the
name when the table the agent placed is still there after it walks away and comes back. Exploration
policies (policy_base.py) mostly walk, so their data rarely shows a change, let alone a return to
it. This policy plays Crafter's early tech tree on the ground-truth semantic map and mixes it with
random and exploring stretches for coverage. It is a seeded sequence of *errands*:

* ``wood``: walk (breadth-first path over grass, sand and path) next to the nearest tree, face it
  and ``do`` until wood has grown (in this Crafter a collected tree leaves grass);
* ``table`` / ``place_stone`` / ``plant``: place a table (2 wood), a stone, a sapling in front;
* ``tools``: next to a table, make a wood or stone pickaxe or sword;
* ``stone``: with a pickaxe, mine the nearest stone or coal (the cell becomes path);
* ``sapling``: ``do`` on grass until a sapling drops;
* ``away_and_back``: walk away from the latest changed cell until it is out of view and 20 to
  ``away_max`` steps have passed, then walk back next to it and stay a few steps;
* ``random``: a few random commands of every kind (moves and all interactions);
* ``explore``: a stretch of the ``explore`` policy.

Which errand comes next is drawn with weights that depend on the inventory (no table without wood).
Changes are not taken from the errands but found on the semantic map (:func:`changed_cells`), so
they are the same for any policy and for recorded data (see :mod:`infworld.bench.crafter_suite`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from infworld.envs.base import NOOP, Command, EnvSpec, Observation
from infworld.envs.crafter import CRAFTER_INVENTORY_KEYS
from infworld.envs.policy_base import ExplorePolicy, PolicyConfig
from infworld.errors import EnvError

# Crafter's semantic ids (materials in data.yaml order, then the object types of its SemanticView);
# tests check them against the running game.
SEMANTIC = {"water": 1, "grass": 2, "stone": 3, "path": 4, "sand": 5, "tree": 6, "lava": 7, "coal": 8,
            "iron": 9, "diamond": 10, "table": 11, "furnace": 12, "player": 13, "cow": 14,
            "zombie": 15, "skeleton": 16, "arrow": 17, "plant": 18}
WALKABLE = frozenset((SEMANTIC["grass"], SEMANTIC["sand"], SEMANTIC["path"]))
MOVING = frozenset(SEMANTIC[k] for k in ("player", "cow", "zombie", "skeleton", "arrow"))
# (dcol, drow) on the screen -> the command that walks (or, when blocked, turns) that way.
DIRS = {(1, 0): Command(right=1), (-1, 0): Command(right=-1), (0, -1): Command(forward=1),
        (0, 1): Command(forward=-1)}
VIEW_HALF = (4, 3)  # crafter's 9 x 7 local view: cells with |dcol| <= 4 and |drow| <= 3 are shown
ERRANDS = ("wood", "table", "tools", "stone", "place_stone", "plant", "sapling", "away_and_back",
           "random", "explore")


@dataclass
class CraftConfig:
    """Errand weights (order of ``ERRANDS``, before the inventory decides what is possible) and
    lengths, in steps."""

    weights: tuple[float, ...] = (3.0, 2.0, 2.0, 2.0, 1.5, 1.0, 0.5, 2.5, 1.0, 1.0)
    errand_budget: int = 80  # an errand that has not finished by then is given up
    away_min: int = 20
    away_max: int = 150
    stay_max: int = 8
    search_radius: int = 20  # cells; breadth-first search stops beyond

    def validate(self) -> None:
        if len(self.weights) != len(ERRANDS) or min(self.weights) < 0 or sum(self.weights) <= 0:
            raise EnvError(f"craft policy weights must be {len(ERRANDS)} non-negative numbers for "
                           f"{ERRANDS}, got {self.weights}")
        if not 1 <= self.away_min <= self.away_max:
            raise EnvError(f"craft policy away_min/away_max must satisfy 1 <= min <= max, got "
                           f"{self.away_min}/{self.away_max}")


def facing(pose: np.ndarray) -> tuple[int, int]:
    """(dcol, drow) the player faces, from the pose yaw (0 right, 90 up, 180 left, 270 down)."""
    return ((1, 0), (0, -1), (-1, 0), (0, 1))[int(round(float(pose[3]) / 90.0)) % 4]


def player_cell(pose: np.ndarray, area_h: int) -> tuple[int, int]:
    """(col, row) of the player on the semantic map from the pose (x, y up the screen)."""
    return int(round(float(pose[0]))), area_h - 1 - int(round(float(pose[1])))


def in_view(cell: tuple[int, int], player: tuple[int, int]) -> bool:
    """Whether the 9 x 7 local view centred on ``player`` shows ``cell`` (both (col, row))."""
    return abs(cell[0] - player[0]) <= VIEW_HALF[0] and abs(cell[1] - player[1]) <= VIEW_HALF[1]


def changed_cells(before: np.ndarray, after: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Cells whose material changed between two semantic maps (area_h, area_w): (col, row, old, new).

    Moving things (player, cows, monsters, arrows) are not changes; a placed plant is."""
    diff = np.argwhere(before != after)  # (N, 2) rows of [row, col]
    out = []
    for row, col in diff:
        old, new = int(before[row, col]), int(after[row, col])
        if old not in MOVING and new not in MOVING:
            out.append((int(col), int(row), old, new))
    return out


class CraftPolicy(ExplorePolicy):
    """Plays Crafter's early tech tree on the semantic map, walks away from its changes and back."""

    name = "craft"

    def __init__(self, spec: EnvSpec, seed: int, config: PolicyConfig | None = None,
                 craft: CraftConfig | None = None):
        if spec.name != "crafter":
            raise EnvError(f"the craft policy plays Crafter; got env {spec.name!r}")
        super().__init__(spec, seed, config or PolicyConfig(interact_prob=0.0))
        self.craft = craft or CraftConfig()
        self.craft.validate()
        self._ids = {name: spec.interact_vocab.index(name) for name in spec.interact_vocab}
        self._errand: dict | None = None
        self._prev_sem: np.ndarray | None = None
        self.changes: list[tuple[int, int, int, int, int]] = []  # (t, col, row, old, new)
        self.errands: list[str] = []  # errands started, for inspection and tests
        self._step_t = 0

    # --- observation bookkeeping -------------------------------------------------------------

    def _act(self, obs: Observation) -> Command:
        sem = obs.extras.get("semantic") if obs.extras else None
        if sem is None:
            raise EnvError("the craft policy needs the 'semantic' extra of the Crafter env")
        sem = np.asarray(sem)
        if self._prev_sem is not None:
            self.changes += [(self._step_t, *c) for c in changed_cells(self._prev_sem, sem)]
        self._prev_sem, self._step_t = sem.copy(), self._step_t + 1
        inv = dict(zip(CRAFTER_INVENTORY_KEYS, np.asarray(obs.extras["inventory"]).tolist(), strict=True))
        for _ in range(4):  # an errand may end at once; the next one then acts this step
            if self._errand is None or self._errand["budget"] <= 0:
                self._errand = self._new_errand(inv, sem, obs)
            self._errand["budget"] -= 1
            cmd = self._run(self._errand, obs, sem, inv)
            if cmd is not None:
                return cmd
            self._errand = None
        return self._explore_step(obs)

    def _new_errand(self, inv: dict[str, int], sem: np.ndarray, obs: Observation) -> dict:
        w = np.asarray(self.craft.weights, dtype=np.float64).copy()
        ok = {
            "wood": inv["wood"] < 9, "table": inv["wood"] >= 2,
            "tools": inv["wood"] >= 1 and self._near(sem, obs, SEMANTIC["table"]),
            "stone": inv["wood_pickaxe"] + inv["stone_pickaxe"] > 0,
            "place_stone": inv["stone"] >= 1, "plant": inv["sapling"] >= 1, "sapling": True,
            "away_and_back": bool(self.changes), "random": True, "explore": True,
        }
        w *= np.array([ok[e] for e in ERRANDS], dtype=np.float64)
        # Follow the tech tree: a table when none is near, then a pickaxe, then stone.
        near_table = self._near(sem, obs, SEMANTIC["table"])
        boost = {"table": 4.0 * (not near_table), "tools": 3.0 * (inv["wood_pickaxe"] == 0),
                 "stone": 2.0 * (inv["stone"] < 2)}
        for name, b in boost.items():
            w[ERRANDS.index(name)] *= 1.0 + b
        kind = ERRANDS[int(self.rng.choice(len(w), p=w / w.sum()))]
        self.errands.append(kind)
        errand = {"kind": kind, "budget": self.craft.errand_budget, "start": dict(inv)}
        if kind == "random":
            errand["budget"] = int(self.rng.integers(4, 16))
        elif kind == "explore":
            errand["budget"] = int(self.rng.integers(8, 40))
        elif kind == "away_and_back":
            _, col, row, _, _ = self.changes[-1]
            away = int(self.rng.integers(self.craft.away_min, self.craft.away_max + 1))
            errand.update(cell=(col, row), away=away, stay=int(self.rng.integers(1, self.craft.stay_max + 1)),
                          budget=away + 3 * self.craft.errand_budget)
        return errand

    def _near(self, sem: np.ndarray, obs: Observation, material: int, radius: int = 12) -> bool:
        col, row = player_cell(obs.pose, sem.shape[0])
        return bool((sem[max(row - radius, 0): row + radius + 1, max(col - radius, 0): col + radius + 1]
                     == material).any())

    # --- errands -----------------------------------------------------------------------------

    def _run(self, e: dict, obs: Observation, sem: np.ndarray, inv: dict[str, int]) -> Command | None:
        kind, start = e["kind"], e["start"]
        if kind == "wood":
            return None if inv["wood"] > start["wood"] + 1 else self._use_nearest(obs, sem, {"tree"})
        if kind == "stone":
            if inv["stone"] + inv["coal"] > start["stone"] + start["coal"]:
                return None
            return self._use_nearest(obs, sem, {"stone", "coal"})
        if kind == "sapling":
            return None if inv["sapling"] > start["sapling"] else self._use_nearest(obs, sem, {"grass"})
        if kind in ("table", "place_stone", "plant"):
            item = {"table": "table", "place_stone": "stone", "plant": "plant"}[kind]
            if e.get("placed"):
                return None
            return self._place(e, obs, sem, item)
        if kind == "tools":
            return self._make(e, obs, sem, inv)
        if kind == "away_and_back":
            return self._away_and_back(e, obs, sem)
        if kind == "random":
            return self._random_command()
        return self._explore_step(obs)

    def _random_command(self) -> Command:
        k = int(self.rng.integers(0, 5 + len(self.spec.interact_vocab) - 1))
        if k < 4:
            return list(DIRS.values())[k]
        return NOOP if k == 4 else Command(interact=k - 4)

    def _use_nearest(self, obs: Observation, sem: np.ndarray, names: set[str]) -> Command | None:
        """Walk next to the nearest cell of ``names``, face it and ``do``; None if there is none."""
        targets = {SEMANTIC[n] for n in names}
        step = self._path_to_adjacent(obs, sem, targets)
        if step is None:
            return None
        move, face = step
        if move is not None:
            return DIRS[move]
        if facing(obs.pose) != face:
            # Walking into a non-walkable cell turns the player to face it; grass is walkable, so
            # facing grass means one step there and the next cell is what gets the "do".
            return DIRS[face]
        return Command(interact=self._ids["do"])

    def _place(self, e: dict, obs: Observation, sem: np.ndarray, item: str) -> Command | None:
        """Place ``item`` on the cell in front when the game allows it there, else take a step."""
        where = {"table": WALKABLE, "stone": WALKABLE | {SEMANTIC["water"]}, "plant": {SEMANTIC["grass"]}}
        col, row = player_cell(obs.pose, sem.shape[0])
        fc, fr = facing(obs.pose)
        ahead = (col + fc, row + fr)
        if 0 <= ahead[1] < sem.shape[0] and 0 <= ahead[0] < sem.shape[1] \
                and int(sem[ahead[1], ahead[0]]) in where[item]:
            e["placed"] = True
            return Command(interact=self._ids[f"place_{item}"])
        free = [d for d in DIRS if self._walkable(sem, (col + d[0], row + d[1]))]
        return DIRS[free[int(self.rng.integers(len(free)))]] if free else None

    def _make(self, e: dict, obs: Observation, sem: np.ndarray, inv: dict[str, int]) -> Command | None:
        if e.get("made"):
            return None
        step = self._path_to_adjacent(obs, sem, {SEMANTIC["table"]})
        if step is None:
            return None
        if step[0] is not None:
            return DIRS[step[0]]
        options = ["make_wood_pickaxe", "make_wood_sword"]
        if inv["stone"] >= 1:
            options += ["make_stone_pickaxe", "make_stone_sword"]
        e["made"] = True
        return Command(interact=self._ids[options[int(self.rng.integers(len(options)))]])

    def _away_and_back(self, e: dict, obs: Observation, sem: np.ndarray) -> Command | None:
        here = player_cell(obs.pose, sem.shape[0])
        if e["away"] > 0 or in_view(e["cell"], here) and not e.get("returning"):
            e["away"] -= 1
            return self._explore_step(obs)
        e["returning"] = True
        if in_view(e["cell"], here) and abs(e["cell"][0] - here[0]) + abs(e["cell"][1] - here[1]) <= 2:
            e["stay"] -= 1
            return NOOP if e["stay"] >= 0 else None
        move = self._path_to(obs, sem, e["cell"])
        return DIRS[move] if move is not None else None

    # --- paths on the grid -------------------------------------------------------------------

    @staticmethod
    def _walkable(sem: np.ndarray, cell: tuple[int, int]) -> bool:
        col, row = cell
        return 0 <= row < sem.shape[0] and 0 <= col < sem.shape[1] and int(sem[row, col]) in WALKABLE

    def _bfs(self, obs: Observation, sem: np.ndarray, done) -> tuple[tuple[int, int] | None, tuple] | None:  # noqa: ANN001
        """Breadth-first search from the player over walkable cells up to ``search_radius``; returns
        (first move or None when the start is the goal, the goal cell's payload) or None."""
        start = player_cell(obs.pose, sem.shape[0])
        first: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
        queue = deque([start])
        r = self.craft.search_radius
        order = list(DIRS)
        self.rng.shuffle(order)  # no preferred direction among equally short paths
        while queue:
            cell = queue.popleft()
            hit = done(cell)
            if hit is not None:
                return first[cell], hit
            for d in order:
                nxt = (cell[0] + d[0], cell[1] + d[1])
                if nxt in first or abs(nxt[0] - start[0]) > r or abs(nxt[1] - start[1]) > r:
                    continue
                if self._walkable(sem, nxt):
                    first[nxt] = first[cell] if first[cell] is not None else d
                    queue.append(nxt)
        return None

    def _path_to_adjacent(self, obs: Observation, sem: np.ndarray, targets: set[int]
                          ) -> tuple[tuple[int, int] | None, tuple[int, int]] | None:
        """(first move, direction to face at the end) toward the nearest cell with an id in
        ``targets`` next to a reachable cell."""
        h, w = sem.shape

        def done(cell: tuple[int, int]) -> tuple[int, int] | None:
            for d in DIRS:
                c, r = cell[0] + d[0], cell[1] + d[1]
                if 0 <= r < h and 0 <= c < w and int(sem[r, c]) in targets:
                    return d
            return None

        found = self._bfs(obs, sem, done)
        return None if found is None else (found[0], found[1])

    def _path_to(self, obs: Observation, sem: np.ndarray, goal: tuple[int, int]) -> tuple[int, int] | None:
        """First move toward a cell within 2 steps of ``goal``, None if unreachable or there."""
        def done(cell: tuple[int, int]) -> tuple[int, int] | None:
            return cell if abs(cell[0] - goal[0]) + abs(cell[1] - goal[1]) <= 2 else None

        found = self._bfs(obs, sem, done)
        return None if found is None else found[0]
