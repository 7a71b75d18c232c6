"""Environments by name: ``make_env("vizdoom", scenario="freedoom2:MAP03")``.

The game modules are imported only when an environment is built, so listing names and checking a
scenario stays cheap (and works without vizdoom or crafter installed).
"""

from __future__ import annotations

from typing import Any

from infworld.envs.base import Env
from infworld.errors import EnvError

ENVS = ("vizdoom", "crafter")
DEFAULT_SCENARIOS = {"vizdoom": "my_way_home", "crafter": "default"}


def scenarios(env: str) -> tuple[str, ...]:
    """Scenario names of ``env`` (freedoom1/freedoom2 also accept ``:MAP``, e.g. ``freedoom2:MAP03``)."""
    check_env(env)
    if env == "vizdoom":
        from infworld.envs.vizdoom import DOOM_SCENARIOS

        return DOOM_SCENARIOS
    from infworld.envs.crafter import CRAFTER_SCENARIOS

    return tuple(CRAFTER_SCENARIOS)


def game_interact_vocab(env: str | None) -> list[str] | None:
    """The interaction vocabulary a built-in game always has (Crafter's), None otherwise (ViZDoom's
    follows the scenario's buttons)."""
    if env == "crafter":
        from infworld.envs.crafter import CRAFTER_INTERACT_VOCAB

        return list(CRAFTER_INTERACT_VOCAB)
    return None


def game_of_vocab(vocab: Any) -> str | None:
    """The built-in game whose fixed vocabulary ``vocab`` is (``"crafter"``), else None."""
    return "crafter" if vocab is not None and list(vocab) == game_interact_vocab("crafter") else None


def check_env(env: str) -> None:
    if env not in ENVS:
        raise EnvError(f"unknown env {env!r}; valid envs: {', '.join(ENVS)}")


def check_scenario(env: str, scenario: str) -> None:
    """Raise EnvError (listing the known names) unless ``scenario`` exists for ``env``."""
    check_env(env)
    if env == "vizdoom":
        from infworld.envs.vizdoom import parse_scenario

        parse_scenario(scenario)
    elif scenario not in scenarios(env):
        raise EnvError(f"unknown {env} scenario {scenario!r}; known: {', '.join(scenarios(env))}")


def make_env(env: str, scenario: str | None = None, size: tuple[int, int] = (64, 64),
             frame_skip: int | None = None, monsters: bool | None = None, max_steps: int = 100_000) -> Env:
    """Build environment ``env``. ``None`` arguments take the environment's defaults.

    ``max_steps`` is the longest episode the environment must support without a timeout.
    """
    scenario = scenario or DEFAULT_SCENARIOS.get(env, "")
    check_scenario(env, scenario)
    size = (int(size[0]), int(size[1]))
    if env == "vizdoom":
        from infworld.envs.vizdoom import VizDoomConfig, VizDoomEnv

        cfg = VizDoomConfig(scenario=scenario, size=size, max_steps=max_steps)
        if frame_skip is not None:
            cfg.frame_skip = int(frame_skip)
        if monsters is not None:
            cfg.monsters = bool(monsters)
        return VizDoomEnv(cfg)
    from infworld.envs.crafter import CrafterConfig, CrafterEnv

    if frame_skip not in (None, 1):
        raise EnvError(f"crafter has no frame skip (one step = one game update); got frame_skip={frame_skip}")
    ccfg = CrafterConfig(scenario=scenario, size=size)
    if monsters is not None:
        ccfg.monsters = bool(monsters)
    return CrafterEnv(ccfg)
