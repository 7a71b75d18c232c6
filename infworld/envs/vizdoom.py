"""ViZDoom as a data source: headless first-person frames, depth, ground-truth pose.

The game renders a 160x120 RGB24 screen and a depth buffer of the same size; both are resized to
the dataset size with :func:`infworld.data.frames.resize_frames` (area interpolation when
shrinking), so every collector and importer resizes the same way.

Conventions (checked by tests/test_envs.py):

* pose = (POSITION_X, POSITION_Y, POSITION_Z, ANGLE, -PITCH). Doom's ANGLE is in degrees in
  [0, 360), counter-clockwise from +x, which is already the dataset convention. ViZDoom's PITCH is
  negative when looking up, so it is negated to get "+ = looking up" (range about -56..+32).
* ``yaw`` +1 presses TURN_RIGHT, which *decreases* ANGLE (clockwise seen from above).
* An episode ends early only when the game itself ends (my_way_home's goal, a scenario's own exit
  or death); the collector then stops the episode there (it does not restart mid-episode, which
  would teleport the player between two frames). The episode timeout is set from
  ``max_steps`` so it never cuts a collection short, and god mode keeps health from mattering.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from infworld.data.episode import DatasetMeta
from infworld.data.frames import resize_frames
from infworld.envs.base import Command, Env, EnvSpec, Observation, StepResult
from infworld.errors import EnvError

DOOM_INTERACT_VOCAB = ("none", "use", "attack")
# Raw buttons, in the order of the recorded ``buttons`` columns (DatasetMeta.button_names).
DOOM_BUTTONS = ("MOVE_FORWARD", "MOVE_BACKWARD", "MOVE_LEFT", "MOVE_RIGHT", "TURN_LEFT", "TURN_RIGHT",
                "LOOK_UP", "LOOK_DOWN", "USE", "ATTACK")
_GAME_VARS = ("POSITION_X", "POSITION_Y", "POSITION_Z", "ANGLE", "PITCH", "HEALTH")
# The native screen; 160x120 is the smallest 4:3 mode and plenty for 64x64 datasets.
_SCREEN = "RES_160X120"
DOOM_TICRATE = 35.0
_SETTLE_TICS = 35  # rendered still tics at each reset (see VizDoomEnv.reset)

# Freedoom IWADs ship with vizdoom; the map is picked with "freedoom2:MAP03". ViZDoom hangs at
# init on a map that does not exist, so map names are checked against each IWAD's range first.
_IWADS: dict[str, tuple[str, str, str]] = {
    "freedoom1": ("freedoom1.cfg", "E1M1", r"E[1-4]M[1-9]"),
    "freedoom2": ("freedoom2.cfg", "MAP01", r"MAP(0[1-9]|[12][0-9]|3[0-2])"),
}
# Single-player scenarios bundled as .cfg + .wad in vizdoom.scenarios_path (their own map).
_BUNDLED = ("my_way_home", "basic", "simpler_basic", "rocket_basic", "deadly_corridor",
            "defend_the_center", "defend_the_line", "health_gathering", "health_gathering_supreme",
            "predict_position", "take_cover", "deathmatch")
DOOM_SCENARIOS = _BUNDLED[:1] + tuple(_IWADS) + _BUNDLED[1:]


def parse_scenario(scenario: str) -> tuple[str, str | None]:
    """Split ``"freedoom2:MAP03"`` into (cfg name, map); raise EnvError for unknown names or maps."""
    name, _, mapname = scenario.partition(":")
    if name in _IWADS:
        _, default_map, pattern = _IWADS[name]
        mapname = (mapname or default_map).upper()
        if not re.fullmatch(pattern, mapname):
            raise EnvError(f"unknown map {mapname!r} for vizdoom scenario {name!r} "
                           f"(expected a name matching {pattern}, e.g. {default_map})")
        return name, mapname
    if name in _BUNDLED:
        if mapname:
            raise EnvError(f"vizdoom scenario {name!r} has a single map; drop ':{mapname}'")
        return name, None
    raise EnvError(f"unknown vizdoom scenario {scenario!r}; known: {', '.join(DOOM_SCENARIOS)} "
                   f"(freedoom1/freedoom2 take a map, e.g. freedoom2:MAP03)")


@dataclass
class VizDoomConfig:
    """ViZDoom environment settings (CLI flags of ``infworld collect`` override these)."""

    scenario: str = "my_way_home"
    size: tuple[int, int] = (64, 64)  # (H, W) of recorded frames and depth
    frame_skip: int = 4  # game tics per step (35 tics/s, so 8.75 steps/s of game time)
    monsters: bool = False  # False adds -nomonsters
    god: bool = True  # invulnerable, so hazards (nukage, barrels, monsters) never end an episode
    max_steps: int = 100_000  # longest episode to support; sets the game's episode timeout

    def validate(self) -> None:
        parse_scenario(self.scenario)
        if len(self.size) != 2 or min(self.size) < 8:
            raise EnvError(f"vizdoom size must be (H, W) with both >= 8, got {self.size!r}")
        if not 1 <= self.frame_skip <= 35:
            raise EnvError(f"vizdoom frame_skip must be in 1..35 tics, got {self.frame_skip}")
        if self.max_steps < 1:
            raise EnvError(f"vizdoom max_steps must be >= 1, got {self.max_steps}")


class VizDoomEnv(Env):
    """A headless ViZDoom game behind the unified :class:`Env` interface."""

    def __init__(self, config: VizDoomConfig | None = None):
        self.config = config = config or VizDoomConfig()
        config.validate()
        try:
            import vizdoom as vzd
        except ImportError as exc:  # pragma: no cover - vizdoom is an optional dependency
            raise EnvError("vizdoom is not installed (pip install 'infworld[envs]')") from exc
        self._vzd = vzd
        cfg_name, mapname = parse_scenario(config.scenario)
        self.spec = EnvSpec(
            name="vizdoom", scenario=config.scenario, size=(int(config.size[0]), int(config.size[1])),
            interact_vocab=DOOM_INTERACT_VOCAB, button_names=DOOM_BUTTONS, has_depth=True, has_pitch=True,
            grid=False, frame_skip=config.frame_skip, fps=DOOM_TICRATE,
            # Walking speed is ~8.3 map units and turning ~3.5 degrees per tic once up to speed.
            move_scale=8.3 * config.frame_skip, turn_deg=3.5 * config.frame_skip,
            interact_weights=(0.0, 0.85, 0.15),  # "use" opens doors; a few shots for variety
            depth_scale=7.0, hfov_deg=90.0,  # measured: depth 41 at 300 map units; ViZDoom's default FOV
        )
        # The vizdoom binary writes ./_vizdoom.ini and ./_vizdoom/ into its working directory; give
        # it a private temp dir so nothing lands in the user's folder.
        self._workdir = tempfile.mkdtemp(prefix="infworld_vizdoom_")
        game = vzd.DoomGame()
        try:
            game.load_config(os.path.join(vzd.scenarios_path, f"{cfg_name}.cfg"))
            game.set_doom_config_path(os.path.join(self._workdir, "_vizdoom.ini"))
            if mapname is not None:
                game.set_doom_map(mapname)
            game.set_window_visible(False)
            game.set_mode(vzd.Mode.PLAYER)
            game.set_screen_resolution(getattr(vzd.ScreenResolution, _SCREEN))
            game.set_screen_format(vzd.ScreenFormat.RGB24)
            game.set_depth_buffer_enabled(True)
            for off in ("labels_buffer", "automap_buffer", "audio_buffer", "objects_info", "sectors_info"):
                getattr(game, f"set_{off}_enabled")(False)
            game.set_render_hud(False)
            game.set_render_crosshair(False)
            game.set_render_messages(False)
            game.set_available_buttons([getattr(vzd.Button, b) for b in DOOM_BUTTONS])
            game.set_available_game_variables([getattr(vzd.GameVariable, v) for v in _GAME_VARS])
            # Timeout in tics: long enough for max_steps after the scenario's start delay.
            start = int(game.get_episode_start_time())
            game.set_episode_timeout(start + _SETTLE_TICS + (config.max_steps + 2) * config.frame_skip)
            args = "+freelook 1 +sv_cheats 1" + ("" if config.monsters else " -nomonsters")
            game.add_game_args(args)
            cwd = os.getcwd()
            os.chdir(self._workdir)  # only while the game process starts: it inherits this cwd
            try:
                game.init()
            finally:
                os.chdir(cwd)
        except Exception as exc:
            shutil.rmtree(self._workdir, ignore_errors=True)
            raise EnvError(f"vizdoom scenario {config.scenario!r} failed to start: {exc}") from exc
        self._game = game
        self._closed = False

    # -----------------------------------------------------------------------------------------

    def reset(self, seed: int) -> Observation:
        game = self._game
        game.set_seed(int(seed) % (2**31 - 1))
        game.new_episode()
        if self.config.god:
            game.send_game_command("god")
        # The engine smooths the weapon-bob amplitude in a static variable that survives new_episode
        # and is updated once per rendered frame, so the first frames of an episode would depend on
        # how the previous one ended. Standing still for a second of rendered tics settles it, making
        # every episode a function of its seed alone (tests/test_collect.py checks workers=1 vs 2).
        noop = [0.0] * len(DOOM_BUTTONS)
        for _ in range(_SETTLE_TICS):
            game.make_action(noop, 1)
        state = game.get_state()
        if state is None:
            raise EnvError(f"vizdoom scenario {self.config.scenario!r} ended before its first frame")
        return self._observe(state)

    def step(self, command: Command) -> StepResult:
        command.validate(len(DOOM_INTERACT_VOCAB))
        buttons = self.command_to_buttons(command)
        self._game.make_action(buttons.tolist(), self.config.frame_skip)
        done = self._game.is_episode_finished() or self._game.is_player_dead()
        state = None if self._game.is_episode_finished() else self._game.get_state()
        obs = None if state is None else self._observe(state)
        return StepResult(obs=obs, command=command, buttons=buttons, done=bool(done))

    @staticmethod
    def command_to_buttons(command: Command) -> np.ndarray:
        """The (10,) float32 button vector for ``command`` (order: DOOM_BUTTONS)."""
        b = np.zeros(len(DOOM_BUTTONS), dtype=np.float32)
        if command.forward:
            b[0 if command.forward > 0 else 1] = 1.0
        if command.right:
            b[3 if command.right > 0 else 2] = 1.0
        if command.yaw:  # yaw +1 = turn right = clockwise from above
            b[5 if command.yaw > 0 else 4] = 1.0
        if command.pitch:  # pitch +1 = look up
            b[6 if command.pitch > 0 else 7] = 1.0
        if command.interact:
            b[7 + command.interact] = 1.0  # 1 -> USE, 2 -> ATTACK
        return b

    def _observe(self, state: Any) -> Observation:
        gv = np.asarray(state.game_variables, dtype=np.float64)
        # (x, y, z, yaw CCW from +x, pitch + = up); ViZDoom's PITCH is negative looking up.
        pose = np.array([gv[0], gv[1], gv[2], gv[3] % 360.0, 0.0 - gv[4]], dtype=np.float32)
        frame = resize_frames(np.ascontiguousarray(state.screen_buffer), self.spec.size)  # (H, W, 3)
        depth = resize_frames(state.depth_buffer[..., None], self.spec.size)[..., 0]  # (H, W)
        return Observation(frame=frame, pose=pose, depth=depth,
                           extras={"health": np.float32(gv[5]).reshape(())})

    def dataset_meta(self, policy: str | None = None, extra: dict[str, Any] | None = None) -> DatasetMeta:
        info = {
            "vizdoom": {"screen": _SCREEN, "monsters": self.config.monsters, "god": self.config.god,
                        "depth": "ViZDoom depth buffer (about 7 map units per step of 1), area-resized"},
            "extras": {"health": "(T,) float32 HEALTH game variable"},
        }
        info.update(extra or {})
        return DatasetMeta(
            env="vizdoom", size=self.spec.size, interact_vocab=list(DOOM_INTERACT_VOCAB),
            scenario=self.config.scenario, policy=policy, frame_skip=self.config.frame_skip,
            fps=self.spec.fps, button_names=list(DOOM_BUTTONS), has_pose=True, has_depth=True,
            pose_units="Doom map units; yaw = ANGLE in degrees CCW from +x, pitch in degrees, + = up",
            extra=info,
        )

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._game.close()
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __del__(self) -> None:  # a forgotten env must not leave a vizdoom process behind
        try:
            self.close()
        except Exception:
            pass
