"""Infinite-World: interactive, action-conditioned video world models with long-horizon memory."""

__version__ = "0.1.0"


def make_env(name: str = "doom-tiny", **kwargs):
    """The world model as a gymnasium.Env (:class:`infworld.gym_env.WorldModelEnv`), e.g.
    ``infworld.make_env("doom-tiny")``. Imported lazily so ``infworld --help`` stays fast."""
    from infworld.gym_env import make_env as _make_env

    return _make_env(name, **kwargs)


def register_envs() -> None:
    """Register the gymnasium id ``infworld/DoomTiny-v0`` (``gymnasium.make("infworld/DoomTiny-v0")``)."""
    from infworld.gym_env import register_envs as _register_envs

    _register_envs()
