"""The world model as a ``gymnasium.Env``: agents act inside the generated world, memory included.

``infworld.make_env("doom-tiny")`` (or ``gymnasium.make("infworld/DoomTiny-v0")``) drives the
streaming engine :class:`infworld.world.WorldModel` directly (``reset(frames)``, then one
``step(actions)`` per action), with the helpers the play page shares (infworld/driving.py) and no
dependency on the play server:

* observation: the newest generated frame, ``Box(0, 255, (H, W, 3), uint8)``;
* action: ``MultiDiscrete([9, 9, N])`` = (move, view, interact) in the unified action schema of
  Infinite-World (arXiv 2602.02393, Sec. 3.3; docs/actions.md): move = (forward + 1) * 3 +
  (right + 1), view = (yaw + 1) * 3 + (pitch + 1), interact = an id of the model's vocabulary;
* reward 0 and never ``terminated`` (a world model has no goal of its own; wrap it to add one);
  ``truncated`` after ``max_episode_steps`` actions;
* ``reset(seed=...)`` picks a shipped starting context (serve/starts.py) with the env's RNG (or
  ``options={"start": i}``) and reseeds the engine's noise from it, so a seeded episode replays
  exactly.

The real games keep the same contract: ``infworld.make_env("doom-tiny", real=True)`` is ViZDoom at
the model's frame size with the same spaces, from the same starts when they record their game
state; ``gymnasium.make("infworld/ViZDoom-v0")`` / ``"infworld/Crafter-v0"`` the plain games
(infworld/envs/gym_real.py). This is the DIAMOND idea (the world model keeps the game's reset/step
contract) with a memory strategy inside: the engine's state (KV cache + memory) is bounded whatever
the episode length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from infworld.driving import PoseTrack, accepted_actions, check_id, check_playable, load_world, memory_status
from infworld.envs.gym_real import (
    RealGameEnv,
    check_env_settings,
    check_gym_action,
    real_env_for_model,
    register_real_envs,
)
from infworld.errors import DataError
from infworld.serve.defaults import alias_memory_cfg, resolve_alias
from infworld.serve.starts import Starts, load_or_make_starts
from infworld.world import WorldModel

ENV_ID = "infworld/DoomTiny-v0"


class WorldModelEnv(gymnasium.Env):
    """A world model behind ``reset`` / ``step`` (module docstring).

    ``model``: an alias ("doom-tiny"), a model name or folder, or a loaded :class:`WorldModel`, which
    the env then drives (resets and steps): give each env its own.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, model: str | WorldModel = "doom-tiny", memory: str | None = None, *,
                 starts: Starts | str | Path | None = None, memory_cfg: dict[str, Any] | None = None,
                 max_episode_steps: int = 1000, render_mode: str | None = None, steps: int | None = None,
                 sampler: str | None = None, device: str = "cpu"):
        check_env_settings(self.metadata, render_mode, max_episode_steps)
        model_dir = None
        if isinstance(model, WorldModel):
            world = model
            check_playable(world)
        else:
            from infworld.models.loading import resolve_model_dir

            memory_cfg = alias_memory_cfg(model, memory, memory_cfg)
            name, memory = resolve_alias(model, memory)
            world = load_world(name, memory, memory_cfg=memory_cfg, device=device, steps=steps, name=sampler)
            model_dir = resolve_model_dir(name)
        if starts is None:
            starts = load_or_make_starts(model_dir, world.frame_size, interact_vocab=world.interact_vocab)
        elif not isinstance(starts, Starts):
            starts = Starts.load(starts)
        starts.check_model(world.frame_size, world.dit.cfg.actions.sizes(),
                           interact_vocab=world.interact_vocab)
        self.world = world
        self.starts = starts
        # pose-based memories not built with poses="dead_reckon" get dead-reckoned poses from here
        self.poses = PoseTrack() if world.memory.needs_poses else None
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        h, w = world.frame_size
        ok = accepted_actions(world)
        self.observation_space = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.action_space = spaces.MultiDiscrete([ok["move"], ok["view"], ok["interact"]])
        self.metadata = {**self.metadata, "render_fps": float(starts.meta.get("fps") or 15)}
        self._frame: np.ndarray | None = None
        self._start = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("start")
        if start is None:
            start = int(self.np_random.integers(len(self.starts)))
        start = check_id("start", start, len(self.starts) - 1)
        engine_seed = int(self.np_random.integers(2**31 - 1))
        frames, actions, poses = self.starts.context_of(start)  # (1, ctx, H, W, 3), (1, ctx - 1), (1, ctx, 5)
        if self.poses is not None:
            poses = self.poses.context(poses[0], {k: a[0] for k, a in actions.items()})[None]
        else:
            poses = None
        self.world.generator.manual_seed(engine_seed)
        with torch.no_grad():
            self.world.reset(frames, actions, poses=poses)
        self._frame = frames[0, -1]  # (H, W, 3)
        self._start = start
        self._t = 0
        return self._frame.copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._frame is None:
            raise DataError("call reset() before step()", field="action")
        move, view, interact = (int(x) for x in check_gym_action(self.action_space, action))
        acts = {"move": np.array([[move]]), "view": np.array([[view]]), "interact": np.array([[interact]])}
        poses = self.poses.step([move], [view])[None] if self.poses is not None else None  # (1, 1, 5)
        self._frame = self.world.step(acts, poses=poses)[0, -1]  # (B=1, n=1, H, W, 3) -> (H, W, 3)
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        return self._frame.copy(), 0.0, False, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._frame is not None:
            return self._frame.copy()
        return None

    def _info(self) -> dict[str, Any]:
        # Deterministic fields only (no timings), so seeded episodes compare equal.
        return {"frame": self.world.index - 1, "start": self._start, **memory_status(self.world)}


def make_env(name: str = "doom-tiny", *, real: bool = False, **kwargs: Any) -> WorldModelEnv | RealGameEnv:
    """A :class:`WorldModelEnv` for model ``name`` (an alias such as "doom-tiny", a model name or
    folder); ``kwargs`` go to the constructor (memory, starts, max_episode_steps, render_mode...).

    ``real=True``: the real game that model was trained on instead, with the same observation and
    action spaces and the same starts (:func:`infworld.envs.gym_real.real_env_for_model`; kwargs:
    starts, max_episode_steps, render_mode, on_unsupported)."""
    if real:
        return real_env_for_model(name, **kwargs)
    return WorldModelEnv(name, **kwargs)


def register_envs() -> None:
    """Register ``infworld/DoomTiny-v0`` (the world model), ``infworld/ViZDoom-v0`` and
    ``infworld/Crafter-v0`` (the real games, 64x64) with gymnasium (idempotent)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="infworld.gym_env:WorldModelEnv",
                           kwargs={"model": "doom-tiny"}, max_episode_steps=1000)
    register_real_envs()


# Importing this module registers the ids, so gymnasium.make("infworld.gym_env:infworld/DoomTiny-v0")
# works without a prior call.
register_envs()
