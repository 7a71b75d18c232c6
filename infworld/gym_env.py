"""The world model as a ``gymnasium.Env``: agents act inside the generated world, memory included.

``infworld.make_env("doom-tiny")`` (or ``gymnasium.make("infworld/DoomTiny-v0")`` after
:func:`register_envs`) wraps the same streaming engine the play page uses (serve/session.py):

* observation: the newest generated frame, ``Box(0, 255, (H, W, 3), uint8)``;
* action: ``MultiDiscrete([9, 9, N])`` = (move, view, interact) in the unified action schema of
  Infinite-World (arXiv 2602.02393, Sec. 3.3; docs/actions.md): move = (forward + 1) * 3 +
  (right + 1), view = (yaw + 1) * 3 + (pitch + 1), interact = an id of the model's vocabulary;
* reward 0 and never ``terminated`` (a world model has no goal of its own; wrap it to add one);
  ``truncated`` after ``max_episode_steps`` actions;
* ``reset(seed=...)`` picks a shipped starting context (serve/starts.py) with the env's RNG (or
  ``options={"start": i}``) and reseeds the engine's noise from it, so a seeded episode replays
  exactly.

This is the DIAMOND idea (the world model keeps the game's reset/step contract) with a memory
strategy inside: the engine's state (KV cache + memory) is bounded whatever the episode length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from infworld.errors import DataError
from infworld.serve.defaults import resolve_alias
from infworld.serve.session import NUM_TRISTATE, EngineFactory, Session, SessionConfig
from infworld.serve.starts import Starts, load_or_make_starts

ENV_ID = "infworld/DoomTiny-v0"


class WorldModelEnv(gymnasium.Env):
    """A world model behind ``reset`` / ``step`` (module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, model: str | EngineFactory = "doom-tiny", memory: str | None = None, *,
                 starts: Starts | str | Path | None = None, memory_cfg: dict[str, Any] | None = None,
                 max_episode_steps: int = 1000, render_mode: str | None = None, steps: int | None = None,
                 sampler: str | None = None, device: str = "cpu"):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise DataError(f"render_mode: expected one of {self.metadata['render_modes']} or None, "
                            f"got {render_mode!r}", field="render_mode")
        if max_episode_steps < 1:
            raise DataError(f"max_episode_steps: expected >= 1, got {max_episode_steps}",
                            field="max_episode_steps")
        if isinstance(model, EngineFactory):
            factory = model
        else:
            name, memory = resolve_alias(model, memory)
            factory = EngineFactory.load(name, memory, memory_cfg=memory_cfg, device=device, steps=steps,
                                         name=sampler)
        if starts is None:
            starts = load_or_make_starts(factory.model_dir, factory.frame_size)
        elif not isinstance(starts, Starts):
            starts = Starts.load(starts)
        self.session = Session(factory, starts, SessionConfig(max_log_frames=0, frames_per_action=1))
        self.starts = starts
        self.render_mode = render_mode
        self.max_episode_steps = int(max_episode_steps)
        h, w = factory.frame_size
        sizes = factory.action_sizes
        self.observation_space = spaces.Box(0, 255, (h, w, 3), dtype=np.uint8)
        self.action_space = spaces.MultiDiscrete([min(NUM_TRISTATE, sizes["move"]),
                                                  min(NUM_TRISTATE, sizes["view"]), sizes["interact"]])
        self.metadata = {**self.metadata, "render_fps": float(starts.meta.get("fps") or 15)}
        self._frame: np.ndarray | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        start = (options or {}).get("start")
        if start is None:
            start = int(self.np_random.integers(len(self.starts)))
        engine_seed = int(self.np_random.integers(2**31 - 1))
        self._frame = self.session.reset(start, seed=engine_seed)[0]  # (H, W, 3)
        self._t = 0
        return self._frame.copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._frame is None:
            raise DataError("call reset() before step()", field="action")
        a = np.asarray(action)
        if a.shape != (3,) or not self.action_space.contains(a.astype(self.action_space.dtype)):
            raise DataError(f"expected (move, view, interact) in {self.action_space}, got {action!r}",
                            field="action")
        frames = self.session.step(int(a[0]), int(a[1]), int(a[2]))  # (1, H, W, 3)
        self._frame = frames[-1]
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        return self._frame.copy(), 0.0, False, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array" and self._frame is not None:
            return self._frame.copy()
        return None

    def _info(self) -> dict[str, Any]:
        # Deterministic fields only (no timings), so seeded episodes compare equal.
        s = self.session
        held = s.status()
        return {"frame": s.frame_index, "start": s.start, "memory": held["memory"], "held": held["held"],
                "capacity": held["capacity"], "budget": held["budget"], "sources": held["sources"]}


def make_env(name: str = "doom-tiny", **kwargs: Any) -> WorldModelEnv:
    """A :class:`WorldModelEnv` for model ``name`` (an alias such as "doom-tiny", a model name or
    folder); ``kwargs`` go to the constructor (memory, starts, max_episode_steps, render_mode...)."""
    return WorldModelEnv(name, **kwargs)


def register_envs() -> None:
    """Register ``infworld/DoomTiny-v0`` with gymnasium (idempotent)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point="infworld.gym_env:WorldModelEnv",
                           kwargs={"model": "doom-tiny"}, max_episode_steps=1000)


# Importing this module registers the id, so gymnasium.make("infworld.gym_env:infworld/DoomTiny-v0")
# works without a prior call.
register_envs()
