"""The real game beside the world model: the play page's side-by-side reference.

``infworld play --real-reference`` gives every session a :class:`RealReference`: the real game
(a :class:`~infworld.envs.gym_real.RealGameEnv`, the same gymnasium contract as the model's env)
stepped with the very ids the model gets, so the page shows what the game does next to what the
model imagines, frame for frame.

Both must begin in the same state. A start whose starts file records its game state (``replay_*``,
serve/starts.py: the recording's seed and actions) is replayed in the game up to its last frame, so
the two begin from the same frame (``status()["from"] == "start"``, ``exact`` when the frames match
bit for bit). A start without it (starts files written before replays were stored, or cut from
imported videos) cannot be reached: the game then begins at the scenario's own start with the
session's seed (``"from": "scenario start"``), and the page says so: the two views differ from the
first frame on, and only the responses to the keys compare.

When the game ends (my_way_home's goal is reached) the reference keeps its last frame
(``"ended": true``) until the next reset.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from infworld.envs.gym_real import RealGameEnv, game_settings
from infworld.envs.registry import ENVS
from infworld.errors import ConfigError
from infworld.serve.starts import Starts

REFERENCE_STEPS = 100_000  # the longest reference episode (the game's own timeout is set from it)


class RealReference:
    """One session's real game (module docstring)."""

    def __init__(self, game: RealGameEnv, starts: Starts, seed: int = 0):
        self.game = game
        self.starts = starts
        self.seed = int(seed)
        self.frame: np.ndarray | None = None
        self.ended = False
        self.info: dict[str, Any] = {}

    @classmethod
    def open(cls, starts: Starts, frame_size: tuple[int, int], num_interact: int,
             seed: int = 0) -> RealReference:
        """The game ``starts`` were recorded in (their meta: env, scenario, frame skip), at the model's
        ``frame_size``. ConfigError when there is no such game or when the model's interact ids
        (``num_interact``, named by the starts' ``interact_vocab``) are not the game's first ids."""
        settings = game_settings(starts.meta)
        if settings["env"] not in ENVS:
            raise ConfigError(f"--real-reference: the starts come from {settings['env']!r}, which is not a "
                              f"game infworld can run ({', '.join(ENVS)})")
        game = RealGameEnv(settings["env"], settings["scenario"], tuple(frame_size),
                           frame_skip=settings["frame_skip"], monsters=settings["monsters"], starts=starts,
                           max_episode_steps=REFERENCE_STEPS, on_unsupported="reduce")
        vocab = list(starts.meta.get("interact_vocab") or [])
        game_vocab = list(game.interact_vocab)
        if num_interact > len(game_vocab) or (vocab and vocab[:num_interact] != game_vocab[:num_interact]):
            game.close()
            raise ConfigError(f"--real-reference: the model's interact ids {vocab or num_interact} are not "
                              f"{settings['env']}'s {game_vocab}: the same key would do different things")
        return cls(game, starts, seed)

    def reset(self, start: int) -> np.ndarray:
        """The game at start ``start`` (replayed) or at the scenario start; its frame (H, W, 3)."""
        if self.starts.replay_of(start) is not None:
            options: dict[str, Any] = {"start": start}
        else:
            options = {"game_seed": self.seed}
        self.frame, info = self.game.reset(seed=self.seed, options=options)
        self.info = info
        self.ended = False
        return self.frame

    def step(self, moves: list[int], views: list[int], interacts: list[int]) -> np.ndarray:
        """One game step per action (ids already checked against the model's range); (n, H, W, 3)."""
        out = []
        for m, v, i in zip(moves, views, interacts, strict=True):
            if not self.ended:
                self.frame, _, terminated, _, self.info = self.game.step(np.array([m, v, i]))
                self.ended = bool(terminated)
            out.append(self.frame)
        return np.stack(out)

    def status(self) -> dict[str, Any]:
        """For the page: where the game began, whether it ended, its pose, what it applied."""
        pose = self.info.get("pose")
        return {"from": self.info.get("from"), "exact": self.info.get("exact"), "ended": self.ended,
                "game_seed": self.info.get("game_seed"), "step": self.info.get("step", 0),
                "pose": None if pose is None else [round(float(p), 2) for p in pose],
                "applied": self.info.get("applied")}

    def close(self) -> None:
        self.game.close()
