"""The real games as gymnasium envs with the world model's contract (the DIAMOND idea, both ways).

``gymnasium.make("infworld/ViZDoom-v0")``, ``gymnasium.make("infworld/Crafter-v0")`` (ids registered
by ``infworld.register_envs()`` and by importing this module or :mod:`infworld.gym_env`), or
``infworld.make_env("doom-tiny", real=True)`` for the game a world model was trained on, at its
frame size, from its starting frames. The contract is the one of
:class:`infworld.gym_env.WorldModelEnv`, so an agent switches between the real and the imagined
world without a change:

* observation: the game's frame at the dataset size, ``Box(0, 255, (H, W, 3), uint8)``, resized
  exactly as the collector records it (so 64x64 real frames look like the model's training data);
* action: ``MultiDiscrete([9, 9, N])`` = (move, view, interact), N = the game's interact vocabulary
  (docs/actions.md). Ids become the env's :class:`~infworld.envs.base.Command` with
  :func:`command_from_ids`, the inverse of the ids the collector records (``Command.move_id`` /
  ``view_id``: one mapping, tested both ways);
* reward 0 (the world model has none; wrap either to add a task); ``terminated`` when the game
  itself ends (my_way_home's goal, death), ``truncated`` after ``max_episode_steps``;
* ``info``: ``pose`` (5,) (x, y, z, yaw, pitch) from the game, ``applied`` (the ids the game really
  applied), ``extras`` (health; Crafter's inventory, semantic map, daylight), ``start``, ``from``
  and ``game_seed`` (below), ``step``.

**Starts.** With ``starts`` (a model's starts.npz) whose starts record their game state
(``replay_*`` arrays, serve/starts.py), ``reset`` picks a start exactly as the world-model env does
(the same seed picks the same start) and replays the recorded episode up to that start's last frame,
so real and imagined episodes begin from the same frame (``info["from"] == "start"``,
``info["exact"]`` says whether the frame matched bit for bit). Otherwise the game begins at the
scenario's own start with a game seed drawn from the env's RNG (``info["from"] == "scenario
start"``); ``options={"game_seed": s}`` begins the scenario start with game seed ``s``.

**Crafter** has a fixed top-down camera and does one thing per step, so some ids of the space have no
Crafter action: a view other than 4 ("none"), a diagonal move, a move together with an interact.
By default (``on_unsupported="raise"``) these raise :class:`~infworld.errors.EnvError` naming the
id; ``on_unsupported="reduce"`` instead applies what the collector applies (interact, else forward,
else right; view ignored) and ``info["applied"]`` says what happened. Every id of the ViZDoom space
is supported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from infworld.data.action_schema import UNCERTAIN, decode_move, decode_view
from infworld.envs.base import Command, EnvSpec
from infworld.envs.registry import make_env as make_game
from infworld.errors import ConfigError, DataError, EnvError
from infworld.serve.starts import Starts

REAL_ENV_IDS = {"vizdoom": "infworld/ViZDoom-v0", "crafter": "infworld/Crafter-v0"}
UNSUPPORTED_MODES = ("raise", "reduce")


def command_from_ids(move: int, view: int, interact: int) -> Command:
    """The :class:`Command` of one unified id triple: the inverse of ``Command.move_id`` /
    ``view_id`` (action_schema.encode_move / encode_view), so what the collector records for this
    command is these very ids. 9 ("uncertain") is a training label, not a command: DataError."""
    for name, value in (("move", move), ("view", view)):
        if int(value) == UNCERTAIN:
            raise DataError(f"{UNCERTAIN} = uncertain is a training label, not a command", field=name)
    fwd, right, _ = decode_move(int(move))
    yaw, pitch, _ = decode_view(int(view))
    return Command(forward=int(fwd), right=int(right), yaw=int(yaw), pitch=int(pitch), interact=int(interact))


def check_gym_action(space: spaces.MultiDiscrete, action: Any) -> np.ndarray:
    """``action`` as a (3,) id array of ``space`` (both envs check alike), else DataError."""
    a = np.asarray(action)
    if a.shape != (3,) or a.dtype.kind not in "iu" or not space.contains(a.astype(space.dtype)):
        raise DataError(f"expected (move, view, interact) in {space}, got {action!r}", field="action")
    return a.astype(np.int64)


def unsupported(spec: EnvSpec, cmd: Command) -> str | None:
    """Why the game of ``spec`` cannot do ``cmd`` as asked, or None when it can."""
    if spec.grid:  # Crafter: fixed camera, one thing per step (envs/crafter.py)
        if cmd.yaw or cmd.pitch:
            return f"{spec.name} has a fixed camera: view must be 4 (none), got {cmd.view_id}"
        if cmd.forward and cmd.right:
            return f"{spec.name} moves along one axis per step: diagonal move {cmd.move_id} has no action"
        if cmd.interact and (cmd.forward or cmd.right):
            return (f"{spec.name} does one thing per step: move {cmd.move_id} with interact "
                    f"{cmd.interact} has no action")
    elif cmd.pitch and not spec.has_pitch:
        return f"{spec.name} cannot look up or down: view {cmd.view_id} has a pitch"
    return None


def game_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """(env, scenario, frame_skip, monsters) of the game a starts file was recorded in (its meta).

    Starts written before ``frame_skip`` was stored give it through their frame rate (ViZDoom runs
    35 tics/s, one step lasts ``frame_skip`` tics)."""
    from infworld.envs.vizdoom import DOOM_TICRATE

    env = meta.get("env") or "vizdoom"
    frame_skip = meta.get("frame_skip")
    if frame_skip is None and env == "vizdoom" and meta.get("fps"):
        frame_skip = max(1, round(DOOM_TICRATE / float(meta["fps"])))
    return {"env": env, "scenario": meta.get("scenario"), "frame_skip": frame_skip,
            "monsters": meta.get("monsters")}


def check_env_settings(metadata: dict[str, Any], render_mode: str | None, max_episode_steps: int) -> None:
    """The settings every infworld gym env shares (real game or world model); DataError naming the field."""
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise DataError(f"render_mode: expected one of {metadata['render_modes']} or None, "
                        f"got {render_mode!r}", field="render_mode")
    if max_episode_steps < 1:
        raise DataError(f"max_episode_steps: expected >= 1, got {max_episode_steps}",
                        field="max_episode_steps")


class RealGameEnv(gymnasium.Env):
    """A real game (ViZDoom, Crafter) behind the world-model env's contract (module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8.75}

    def __init__(self, env: str = "vizdoom", scenario: str | None = None, size: tuple[int, int] = (64, 64), *,
                 frame_skip: int | None = None, monsters: bool | None = None,
                 starts: Starts | str | Path | None = None, max_episode_steps: int = 1000,
                 render_mode: str | None = None, on_unsupported: str = "raise"):
        check_env_settings(self.metadata, render_mode, max_episode_steps)
        if on_unsupported not in UNSUPPORTED_MODES:
            raise ConfigError(f"on_unsupported: expected one of {UNSUPPORTED_MODES}, got {on_unsupported!r}")
        if starts is not None and not isinstance(starts, Starts):
            starts = Starts.load(starts)
        self.starts = starts
        size = (int(size[0]), int(size[1]))
        longest = 0
        if starts is not None:
            if starts.frame_size != size:
                raise ConfigError(f"starts are {starts.frame_size} frames but the env renders {size}")
            recorded = game_settings(starts.meta)
            if recorded["env"] == env:
                scenario = scenario or recorded["scenario"]
            if starts.has_replay and (recorded["env"] != env or recorded["scenario"] not in (None, scenario)):
                raise ConfigError(f"the starts were recorded in {recorded['env']} {recorded['scenario']!r}, "
                                  f"not {env} {scenario!r}: their replays would not reach their frames")
            if starts.replay is not None:
                longest = int(starts.replay["move"].shape[1])
        # the game's own timeout must outlast a replay plus a whole episode
        self.game = make_game(env, scenario, size=size, frame_skip=frame_skip, monsters=monsters,
                              max_steps=max_episode_steps + longest + 1)
        spec = self.game.spec
        self.spec_game = spec
        self.on_unsupported = on_unsupported
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        self.observation_space = spaces.Box(0, 255, (*size, 3), dtype=np.uint8)
        self.action_space = spaces.MultiDiscrete([9, 9, len(spec.interact_vocab)])
        self.metadata = {**self.metadata, "render_fps": float(spec.fps) / max(1, spec.frame_skip)}
        self._frame: np.ndarray | None = None  # (H, W, 3) the newest frame
        self._pose = np.full(5, np.nan, np.float32)
        self._extras: dict[str, np.ndarray] = {}
        self._applied: list[int] | None = None  # ids the game applied in the last step
        self._done = False
        self._t = 0
        self._origin: dict[str, Any] = {}  # start, from, game_seed (, exact) of this episode

    @property
    def interact_vocab(self) -> tuple[str, ...]:
        return tuple(self.spec_game.interact_vocab)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        options = options or {}
        start = options.get("start")
        replays = self.starts is not None and self.starts.has_replay
        fixed_seed = options.get("game_seed")
        if start is None and replays and fixed_seed is None:
            start = int(self.np_random.integers(len(self.starts)))  # the draw WorldModelEnv makes
        game_seed = int(self.np_random.integers(2**31 - 1)) if fixed_seed is None else int(fixed_seed)
        plan = None
        if start is not None:
            if self.starts is None:
                raise DataError("this env has no starts; reset without options['start']", field="start")
            plan = self.starts.replay_of(int(start))
            if plan is None and "start" in options:
                raise EnvError(f"start {start} has no recorded game state (no replay in the starts file); "
                               "reset without options['start'] to begin at the scenario start")
        if plan is None:
            obs = self.game.reset(game_seed)
            self._origin = {"start": None, "from": "scenario start", "game_seed": game_seed}
        else:
            obs = self._replay(int(start), *plan)
        self._frame, self._pose, self._extras = obs.frame, obs.pose, obs.extras
        self._applied = None
        self._done = False
        self._t = 0
        return self._frame.copy(), self._info()

    def _replay(self, start: int, game_seed: int, actions: dict[str, np.ndarray]):
        """Reset with the recorded seed and play the recorded actions up to start ``start``'s last frame."""
        obs = self.game.reset(game_seed)
        for t in range(len(actions["move"])):
            cmd = command_from_ids(actions["move"][t], actions["view"][t], actions["interact"][t])
            res = self.game.step(cmd)
            if res.obs is None or res.done:  # an episode cannot begin where the game ends
                raise EnvError(f"start {start}: the game ended at step {t + 1} of its replay of "
                               f"{len(actions['move'])}; the starts file does not match this game")
            obs = res.obs
        exact = bool(np.array_equal(obs.frame, self.starts.frames[start, -1]))
        self._origin = {"start": start, "from": "start", "game_seed": game_seed, "exact": exact}
        return obs

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._frame is None:
            raise DataError("call reset() before step()", field="action")
        if self._done:
            raise EnvError("the game has ended (terminated); call reset()")
        a = check_gym_action(self.action_space, action)
        cmd = command_from_ids(int(a[0]), int(a[1]), int(a[2]))
        why = unsupported(self.spec_game, cmd)
        if why is not None and self.on_unsupported == "raise":
            raise EnvError(f"action {[int(x) for x in a]}: {why} (on_unsupported='reduce' applies the "
                           "collector's reduction instead)")
        res = self.game.step(cmd)
        self._t += 1
        self._applied = [res.command.move_id, res.command.view_id, int(res.command.interact)]
        terminated = bool(res.done or res.obs is None)
        if res.obs is not None:  # ViZDoom shows no frame after the end: keep the last one
            self._frame, self._pose, self._extras = res.obs.frame, res.obs.pose, res.obs.extras
        self._done = terminated
        truncated = self._t >= self.max_episode_steps
        return self._frame.copy(), 0.0, terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._frame is not None:
            return self._frame.copy()
        return None

    def close(self) -> None:
        self.game.close()

    def _info(self) -> dict[str, Any]:
        extras = {k: np.array(v) for k, v in self._extras.items()}
        return {"pose": np.array(self._pose, np.float32), "step": self._t, "applied": self._applied,
                "extras": extras, **self._origin}


def real_env_for_model(name: str = "doom-tiny", **kwargs: Any) -> RealGameEnv:
    """The real game world model ``name`` (alias, name or folder) was trained on, with its spaces.

    Game, scenario, frame skip and monsters come from the model's starts.npz (its recording's
    meta); the frame size from the model's config. The action space must equal the model env's:
    ConfigError when the model's interact vocabulary is not the game's. ``kwargs`` go to
    :class:`RealGameEnv` (max_episode_steps, render_mode, on_unsupported, starts...).
    """
    from infworld.models.loading import read_model_config, resolve_model_dir
    from infworld.serve.defaults import resolve_alias
    from infworld.serve.starts import find_starts

    model, _ = resolve_alias(name)
    model_dir = resolve_model_dir(model)
    mc = read_model_config(model_dir)["model_config"]
    size = tuple(int(s) for s in mc.get("frame_size", (64, 64)))
    starts = kwargs.pop("starts", None)
    if starts is None and find_starts(model_dir) is not None:
        starts = Starts.load(find_starts(model_dir))
    elif starts is not None and not isinstance(starts, Starts):
        starts = Starts.load(starts)
    meta = starts.meta if starts is not None else {}
    game = game_settings(meta)
    env = RealGameEnv(game["env"], game["scenario"], size, frame_skip=game["frame_skip"],
                      monsters=game["monsters"], starts=starts, **kwargs)
    vocab = list(mc.get("interact_vocab") or meta.get("interact_vocab") or [])
    actions = (mc.get(mc.get("backbone", "dit")) or {}).get("actions") or {}  # the DiT's / Wan's config
    num = int(actions.get("num_interact", len(vocab)))
    if vocab and (vocab != list(env.interact_vocab) or num != len(vocab)):
        env.close()
        raise ConfigError(f"model {name!r} acts with interact ids {vocab} ({num} ids) but {game['env']} has "
                          f"{list(env.interact_vocab)}: the two envs would not share an action space")
    return env


def register_real_envs() -> None:
    """Register ``infworld/ViZDoom-v0`` and ``infworld/Crafter-v0`` (64x64; idempotent)."""
    for game, env_id in REAL_ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point="infworld.envs.gym_real:RealGameEnv",
                               kwargs={"env": game}, max_episode_steps=1000)


# Importing this module registers the ids (gymnasium.make("infworld.envs.gym_real:infworld/Crafter-v0")).
register_real_envs()
