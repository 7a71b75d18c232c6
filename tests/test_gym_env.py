"""The world model as a gymnasium.Env: env_checker, shapes, truncation, seeded determinism, built on
the streaming engine (not the play server), dead-reckoned poses for pose-based memories."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from test_play_server import build_play_model

from infworld.errors import ConfigError, DataError

gymnasium = pytest.importorskip("gymnasium")
from gymnasium.utils.env_checker import check_env  # noqa: E402

from infworld.driving import load_world  # noqa: E402
from infworld.gym_env import ENV_ID, WorldModelEnv, make_env, register_envs  # noqa: E402
from infworld.memory.deadreckon import DeadReckoner  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, starts, _ = build_play_model(tmp_path_factory.mktemp("gym"))
    return {"model": model, "starts": starts}


def env_for(tiny, memory="window", memory_cfg=None, **kw) -> WorldModelEnv:
    """An env around its own engine (an env drives the WorldModel it is given)."""
    world = load_world(str(tiny["model"]), memory, memory_cfg=memory_cfg)
    return WorldModelEnv(world, starts=tiny["starts"], **kw)


def test_passes_the_gymnasium_env_checker(tiny):
    env = env_for(tiny, render_mode="rgb_array", max_episode_steps=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not having a spec.*")  # tested via gymnasium.make below
        check_env(env, skip_render_check=False)


def test_spaces_shapes_and_truncation(tiny):
    env = env_for(tiny, render_mode="rgb_array", max_episode_steps=3)
    assert env.observation_space.shape == (32, 32, 3) and env.observation_space.dtype == np.uint8
    assert list(env.action_space.nvec) == [9, 9, 2]  # move, view, interact (vocab none/use)
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["frame"] == tiny["starts"].context - 1 and info["memory"] == "window"
    flags = []
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(np.array([7, 4, 1]))
        assert obs.shape == (32, 32, 3) and reward == 0.0 and terminated is False
        flags.append(truncated)
    assert flags == [False, False, True]
    assert np.array_equal(env.render(), obs)
    assert info["frame"] == tiny["starts"].context + 2
    for bad in ([9, 4, 0], [4, 4, 2], [4, 4], "jump"):
        with pytest.raises(DataError, match="action"):
            env.step(bad)


def rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    frames = [obs]
    for a in actions:
        frames.append(env.step(a)[0])
    return np.stack(frames), info["start"]


def test_reset_with_a_seed_is_deterministic(tiny):
    env = env_for(tiny)
    actions = [np.array([7, 4, 0]), np.array([4, 7, 1]), np.array([1, 1, 0])]
    a, start_a = rollout(env, 5, actions)
    b, start_b = rollout(env, 5, actions)
    assert start_a == start_b and np.array_equal(a, b)
    c, _ = rollout(env_for(tiny), 5, actions)  # a fresh env, same seed: same episode
    assert np.array_equal(a, c)
    d, _ = rollout(env, 6, actions)  # another seed: another noise draw (and maybe another start)
    assert not np.array_equal(a[1:], d[1:])
    obs, info = env.reset(seed=1, options={"start": 2})
    assert info["start"] == 2 and np.array_equal(obs, tiny["starts"].frames[2, -1])


def test_make_env_and_the_registered_id(tiny):
    env = make_env(str(tiny["model"]), starts=tiny["starts"], max_episode_steps=2)
    assert env.reset(seed=0)[0].shape == (32, 32, 3)
    register_envs()
    register_envs()  # idempotent
    assert ENV_ID in gymnasium.registry
    env = gymnasium.make(ENV_ID, model=str(tiny["model"]), starts=tiny["starts"])
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3)
    assert env.step(env.action_space.sample())[0].shape == (32, 32, 3)
    env.close()
    env = gymnasium.make(f"infworld.gym_env:{ENV_ID}", model=str(tiny["model"]), starts=tiny["starts"])
    assert env.unwrapped.max_episode_steps == 1000 and env.spec.max_episode_steps == 1000


def test_the_env_drives_the_engine_without_the_play_server():
    code = ("import sys, infworld.gym_env; "
            "print(sorted(m for m in sys.modules if m.startswith('infworld.serve.s')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['infworld.serve.starts']"  # starting frames only: no session, no server


def test_pose_memories_get_dead_reckoned_poses(tiny):
    """A memory that insists on poses gets them from the one DeadReckoner, step by step."""
    env = env_for(tiny, "vrag", memory_cfg={"poses": "given"})
    assert env.poses is not None
    env.reset(seed=0, options={"start": 1})
    start = env.poses.pose.copy()
    moves, views = [7, 7, 3, 4], [4, 7, 7, 1]
    for m, v in zip(moves, views, strict=True):
        _, _, _, _, info = env.step(np.array([m, v, 0]))
    np.testing.assert_allclose(env.poses.pose, DeadReckoner().track(start, moves, views)[-1], atol=1e-3)
    assert info["memory"] == "vrag" and info["frame"] == tiny["starts"].context - 1 + len(moves)


def test_the_real_twin_of_a_model_must_share_its_action_space(tiny):
    """make_env(real=True) refuses a game whose interact ids are not the model's (none/use vs ViZDoom's
    none/use/attack): the two envs would not take the same actions."""
    pytest.importorskip("vizdoom")
    from test_play_server import doom_starts

    with pytest.raises(ConfigError, match="would not share an action space"):
        make_env(str(tiny["model"]), real=True, starts=doom_starts())


def test_alias_brings_the_benchmarked_memory_settings():
    """doom-tiny plays vrag with the budget the benchmark ranked first; a caller's settings win, and
    another memory than the alias's gets none of the alias's settings."""
    from infworld.serve.defaults import ALIAS_MEMORY_CFG, alias_memory_cfg

    best = ALIAS_MEMORY_CFG["doom-tiny"]["budget"]
    assert alias_memory_cfg("doom-tiny") == {"budget": best}
    assert alias_memory_cfg("doom-tiny", "vrag", {"budget": 4}) == {"budget": 4}
    assert alias_memory_cfg("doom-tiny", "window") is None
    assert alias_memory_cfg("doom-tiny-world", "vrag", {"pool": 32}) == {"pool": 32}
    assert make_env("doom-tiny", max_episode_steps=2).world.memory.budget == best
    assert make_env("doom-tiny", memory_cfg={"budget": 4}, max_episode_steps=2).world.memory.budget == 4
