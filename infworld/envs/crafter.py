"""Crafter as a data source: an open world whose *state* the model must remember.

Crafter (Hafner, "Benchmarking the Spectrum of Agent Capabilities", ICLR 2022) is a top-down 2D
world with a fixed camera centred on the player. The agent collects and places things, so a world
model must remember what was changed, not only what was seen. Besides the RGB frame (rendered
natively at the dataset size) each frame records:

* ``inventory`` extra: (K,) uint8 counts in ``CRAFTER_INVENTORY_KEYS`` order (crafter's item order),
* ``semantic`` extra: (area_h, area_w) uint8 map of the *whole* world in screen orientation (row 0
  at the top), ids in ``DatasetMeta.extra["semantic_ids"]`` (materials, then creature types),
* ``daylight`` extra: () float32 in [0, 1] (night darkens the frame).

Unified mapping (the camera never turns, so directions are in the *screen* frame):
``move_up`` = forward +1, ``move_down`` = forward -1, ``move_left`` = right -1,
``move_right`` = right +1; ``view`` is always "none". One Crafter step does one thing, so when a
command asks for several the applied (and recorded) command keeps only one, in this priority:
interact, then forward, then right. Pose = (x, y, 0, yaw, 0) in a right-handed frame seen from
above (the screen): x = column (grows to the right), y = area_h - 1 - row (grows *up* the screen), so
the player's tile is ``semantic[t, area_h - 1 - y, x]``; yaw = the facing direction, degrees CCW
from +x (0 right, 90 up, 180 left, 270 down), so (cos yaw, sin yaw) points where the player faces,
as for ViZDoom.

To keep episodes as long as asked: ``keep_alive`` refills food, drink and energy before each step
(so nobody starves; "sleep" then does nothing), ``lava_guard`` turns a step into lava into a noop
(recorded as a noop), and ``monsters=False`` removes zombies and skeletons. If the player still
dies, the collector stops the episode at that frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from infworld.data.episode import DatasetMeta
from infworld.envs.base import NOOP, Command, Env, EnvSpec, Observation, StepResult
from infworld.errors import EnvError

# Crafter's 17 actions; ids 5.. are the interactions, so interact id i <-> crafter action i + 4.
CRAFTER_ACTIONS = ("noop", "move_left", "move_right", "move_up", "move_down", "do", "sleep",
                   "place_stone", "place_table", "place_furnace", "place_plant", "make_wood_pickaxe",
                   "make_stone_pickaxe", "make_iron_pickaxe", "make_wood_sword", "make_stone_sword",
                   "make_iron_sword")
CRAFTER_INTERACT_VOCAB = ("none",) + CRAFTER_ACTIONS[5:]
CRAFTER_INVENTORY_KEYS = ("health", "food", "drink", "energy", "sapling", "wood", "stone", "coal", "iron",
                          "diamond", "wood_pickaxe", "stone_pickaxe", "iron_pickaxe", "wood_sword",
                          "stone_sword", "iron_sword")
_MOVES = {(1, 0): "move_up", (-1, 0): "move_down", (0, -1): "move_left", (0, 1): "move_right"}
_FACING_DIRS = {"move_left": (-1, 0), "move_right": (1, 0), "move_up": (0, -1), "move_down": (0, 1)}
# How often exploration policies pick each interact: mostly "do" (collect, drink, hit), some
# placing so the world visibly changes, a little crafting; no sleep (it only darkens the screen).
_INTERACT_WEIGHTS = (0.0, 6.0, 0.0, 1.0, 2.0, 0.5, 1.0) + (0.25,) * 6
# Scenario name -> world area (width, height) in cells. "small" worlds make revisits denser.
CRAFTER_SCENARIOS = {"default": (64, 64), "small": (32, 32)}


@dataclass
class CrafterConfig:
    """Crafter environment settings (CLI flags of ``infworld collect`` override these)."""

    scenario: str = "default"
    size: tuple[int, int] = (64, 64)  # (H, W) of the rendered frame
    view: tuple[int, int] = (9, 9)  # cells shown around the player (crafter's default)
    monsters: bool = False
    keep_alive: bool = True
    lava_guard: bool = True

    def validate(self) -> None:
        if self.scenario not in CRAFTER_SCENARIOS:
            raise EnvError(f"unknown crafter scenario {self.scenario!r}; "
                           f"known: {', '.join(CRAFTER_SCENARIOS)}")
        if len(self.size) != 2 or min(self.size) < max(self.view):
            raise EnvError(f"crafter size must be (H, W) with both >= the view {tuple(self.view)}, "
                           f"got {self.size!r}")


_GAME_CLS: type | None = None


def _game_class() -> type:
    """crafter.Env plus a monster switch and explicit reseeding (built lazily: crafter is optional)."""
    global _GAME_CLS
    if _GAME_CLS is None:
        try:
            import crafter
            from crafter import objects
        except ImportError as exc:  # pragma: no cover - crafter is an optional dependency
            raise EnvError("crafter is not installed (pip install 'infworld[envs]')") from exc

        class _Game(crafter.Env):
            monsters = True
            _hostile = (objects.Zombie, objects.Skeleton)

            def reset_seeded(self, seed: int) -> np.ndarray:
                # crafter seeds world k of an Env with hash((seed, k)); pinning k = 1 makes the world
                # depend on the episode seed only, not on how many episodes this worker already ran.
                self._seed, self._episode = int(seed), 0
                obs = self.reset()
                if not self.monsters:
                    for obj in self._world.objects:
                        if isinstance(obj, self._hostile):
                            self._world.remove(obj)
                return obs

            def _balance_object(self, chunk, objs, cls, *args, **kwargs):  # noqa: ANN001
                if self.monsters or cls not in self._hostile:
                    # crafter passes a *set* of objects and despawns a random index into it; set
                    # order follows memory addresses, so sort by cell (one object per cell) to make
                    # the world a function of the seed alone.
                    ordered = sorted(objs, key=lambda o: (int(o.pos[0]), int(o.pos[1])))
                    super()._balance_object(chunk, ordered, cls, *args, **kwargs)

        _GAME_CLS = _Game
    return _GAME_CLS


class CrafterEnv(Env):
    """Crafter behind the unified :class:`Env` interface."""

    def __init__(self, config: CrafterConfig | None = None):
        self.config = config = config or CrafterConfig()
        config.validate()
        h, w = int(config.size[0]), int(config.size[1])
        self.area = CRAFTER_SCENARIOS[config.scenario]
        self.spec = EnvSpec(
            name="crafter", scenario=config.scenario, size=(h, w), interact_vocab=CRAFTER_INTERACT_VOCAB,
            button_names=CRAFTER_ACTIONS, has_depth=False, has_pitch=False, grid=True, frame_skip=1,
            fps=10.0, move_scale=1.0, turn_deg=0.0, interact_weights=_INTERACT_WEIGHTS,
        )
        game_cls = _game_class()
        # crafter takes size as (W, H) and returns frames transposed to (H, W, 3).
        self._game = game_cls(area=self.area, view=tuple(config.view), size=(w, h), reward=False,
                              length=None, seed=0)
        self._game.monsters = config.monsters
        from crafter import constants

        self._need_max = {k: int(constants.items[k]["max"]) for k in ("food", "drink", "energy")}

    def reset(self, seed: int) -> Observation:
        frame = self._game.reset_seeded(int(seed) % (2**31 - 1))
        return self._observe(frame)

    def step(self, command: Command) -> StepResult:
        command.validate(len(CRAFTER_INTERACT_VOCAB))
        game = self._game
        player = game._player
        # Pick the one thing this step does (interact > forward > right), as documented above.
        if command.interact:
            applied, action = Command(interact=command.interact), CRAFTER_INTERACT_VOCAB[command.interact]
        elif command.forward:
            applied, action = Command(forward=command.forward), _MOVES[(command.forward, 0)]
        elif command.right:
            applied, action = Command(right=command.right), _MOVES[(0, command.right)]
        else:
            applied, action = NOOP, "noop"
        info: dict[str, Any] = {}
        if self.config.lava_guard and action in _FACING_DIRS:
            target = player.pos + np.array(_FACING_DIRS[action])
            if game._world[target][0] == "lava":
                applied, action, info["lava_guard"] = NOOP, "noop", True
        if self.config.keep_alive:
            player.inventory.update(self._need_max)
        index = CRAFTER_ACTIONS.index(action)
        frame, _, done, _ = game.step(index)
        buttons = np.zeros(len(CRAFTER_ACTIONS), dtype=np.float32)
        buttons[index] = 1.0  # one-hot of the crafter action really sent
        return StepResult(obs=self._observe(frame), command=applied, buttons=buttons, done=bool(done),
                          info=info)

    def _observe(self, frame: np.ndarray) -> Observation:
        game = self._game
        player = game._player
        fx, fy = (int(v) for v in player.facing)
        # crafter's (x, row) grows down the screen; flip to y-up so pose and yaw are right-handed.
        yaw = math.degrees(math.atan2(-fy, fx)) % 360.0
        y = self.area[1] - 1 - int(player.pos[1])
        pose = np.array([player.pos[0], y, 0.0, yaw, 0.0], dtype=np.float32)
        inv = np.array([player.inventory[k] for k in CRAFTER_INVENTORY_KEYS], dtype=np.uint8)
        semantic = np.ascontiguousarray(game._sem_view().T.astype(np.uint8))  # (area_h, area_w), [y, x]
        daylight = np.float32(game._world.daylight).reshape(())
        extras = {"inventory": inv, "semantic": semantic, "daylight": daylight}
        return Observation(frame=np.ascontiguousarray(frame, dtype=np.uint8), pose=pose, extras=extras)

    def semantic_ids(self) -> dict[str, int]:
        """Semantic map id of every material and creature type."""
        game = self._game
        ids = {str(name): int(i) for name, i in game._world._mat_ids.items() if name is not None}
        ids.update({cls.__name__.lower(): int(i) for cls, i in game._sem_view._obj_ids.items()})
        return ids

    def dataset_meta(self, policy: str | None = None, extra: dict[str, Any] | None = None) -> DatasetMeta:
        info: dict[str, Any] = {
            "crafter": {"area": list(self.area), "view": list(self.config.view),
                        "monsters": self.config.monsters, "keep_alive": self.config.keep_alive,
                        "lava_guard": self.config.lava_guard},
            "inventory_keys": list(CRAFTER_INVENTORY_KEYS),
            "semantic_ids": self.semantic_ids(),
            "extras": {"inventory": "(T, K) uint8 in inventory_keys order",
                       "semantic": "(T, area_h, area_w) uint8 whole-world map, screen orientation "
                                   "(row = area_h - 1 - pose y, column = pose x), ids in semantic_ids",
                       "daylight": "(T,) float32 in [0, 1]"},
            "move_frame": "screen: forward = up, right = screen right; view always none",
        }
        info.update(extra or {})
        return DatasetMeta(
            env="crafter", size=self.spec.size, interact_vocab=list(CRAFTER_INTERACT_VOCAB),
            scenario=self.config.scenario, policy=policy, frame_skip=1, fps=self.spec.fps,
            button_names=list(CRAFTER_ACTIONS), has_pose=True, has_depth=False,
            pose_units="grid cells: x = column, y = area_h - 1 - row (up the screen); yaw = facing in "
                       "degrees CCW from +x (0 right, 90 up); z and pitch always 0",
            extra=info,
        )
