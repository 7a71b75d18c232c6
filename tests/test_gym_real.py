"""The real games (ViZDoom, Crafter) as gymnasium envs with the world-model env's contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("vizdoom")
from gymnasium.utils.env_checker import check_env  # noqa: E402

import infworld  # noqa: E402
from infworld.envs.base import Command  # noqa: E402
from infworld.envs.gym_real import REAL_ENV_IDS, RealGameEnv, command_from_ids  # noqa: E402
from infworld.errors import ConfigError, DataError, EnvError  # noqa: E402
from infworld.serve.starts import Starts, starts_from_collector  # noqa: E402


def test_ids_map_to_commands_exactly_as_the_collector_records_them():
    """One mapping: the command of ids (m, v, i) is recorded by the collector as (m, v, i) again."""
    for m in range(9):
        for v in range(9):
            cmd = command_from_ids(m, v, 2)
            assert (cmd.move_id, cmd.view_id, cmd.interact) == (m, v, 2)
    assert command_from_ids(7, 1, 0) == Command(forward=1, yaw=-1)  # forward, turning left
    for field, ids in (("move", (9, 4, 0)), ("view", (4, 9, 0))):
        with pytest.raises(DataError, match=f"{field}.*uncertain"):
            command_from_ids(*ids)


def test_vizdoom_gym_env_steps_headless():
    infworld.register_envs()
    env = gymnasium.make(REAL_ENV_IDS["vizdoom"], max_episode_steps=3, render_mode="rgb_array")
    assert env.observation_space == gymnasium.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert list(env.action_space.nvec) == [9, 9, 3]  # none / use / attack
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    assert info["pose"].shape == (5,) and info["from"] == "scenario start" and info["start"] is None
    flags, poses = [], [info["pose"]]
    for a in ([7, 4, 0], [4, 7, 0], [7, 3, 1]):  # forward; turn right; forward + look down + use
        obs, reward, terminated, truncated, info = env.step(np.array(a))
        assert obs.shape == (64, 64, 3) and reward == 0.0 and terminated is False
        assert info["applied"] == a  # ViZDoom does every command of the space as asked
        flags.append(truncated)
        poses.append(info["pose"])
    assert flags == [False, False, True]
    assert np.array_equal(env.render(), obs) and "health" in info["extras"]
    assert poses[1][0] != poses[0][0] or poses[1][1] != poses[0][1]  # walked
    assert poses[2][3] != poses[1][3]  # turned
    first, _ = env.reset(seed=3)  # a seeded reset replays exactly
    again = [env.step(np.array([7, 4, 0]))[0] for _ in range(2)]
    env.reset(seed=3)
    assert all(np.array_equal(a, env.step(np.array([7, 4, 0]))[0]) for a in again)
    for bad in ([9, 4, 0], [4, 4, 3], [4, 4], "jump", [4.0, 4.0, 0.0]):
        with pytest.raises(DataError, match="action"):
            env.step(bad)
    env.close()
    raw = RealGameEnv("vizdoom", size=(32, 48), max_episode_steps=5)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not having a spec.*")
        check_env(raw)
    assert raw.reset(seed=0)[0].shape == (32, 48, 3)
    raw.close()


@pytest.fixture(scope="module")
def doom_tiny():
    """The shipped world model as a gymnasium env."""
    return infworld.make_env("doom-tiny", max_episode_steps=4)


def test_world_model_and_real_doom_share_their_spaces(doom_tiny):
    real = infworld.make_env("doom-tiny", real=True)
    made = gymnasium.make("infworld.gym_env:" + REAL_ENV_IDS["vizdoom"])
    for other in (real, made):
        assert other.action_space == doom_tiny.action_space
        assert other.observation_space == doom_tiny.observation_space
    obs, _ = real.reset(seed=0)
    doom_tiny.reset(seed=0)
    assert doom_tiny.observation_space.contains(obs)
    a = doom_tiny.action_space.sample()
    assert real.step(a)[0].shape == doom_tiny.step(a)[0].shape
    real.close()
    made.close()


def test_starts_that_record_their_game_state_replay_to_the_same_frame(doom_tiny, tmp_path):
    starts = starts_from_collector(size=(64, 64), count=3, context=4, episodes=1, steps=30, seed=2)
    assert starts.has_replay and starts.meta["frame_skip"] == 4 and starts.meta["monsters"] is False
    path = starts.save(tmp_path / "starts.npz")
    starts = Starts.load(path)  # the replay survives the file
    real = infworld.make_env("doom-tiny", real=True, starts=starts)
    model = infworld.make_env("doom-tiny", starts=starts, max_episode_steps=4)
    for k in range(len(starts)):
        obs, info = real.reset(options={"start": k})
        assert info["from"] == "start" and info["exact"] and np.array_equal(obs, starts.frames[k, -1])
    for seed in (0, 1):  # the same seed picks the same start in both worlds
        real_obs, real_info = real.reset(seed=seed)
        model_obs, model_info = model.reset(seed=seed)
        assert real_info["start"] == model_info["start"] and np.array_equal(real_obs, model_obs)
    obs, info = real.reset(options={"game_seed": 5})  # an explicit game seed: the scenario start
    assert info["from"] == "scenario start" and info["game_seed"] == 5
    real.close()
    bare = Starts(starts.frames, starts.actions, starts.poses, starts.names, starts.meta)  # no replay
    plain = RealGameEnv("vizdoom", starts=bare)
    assert plain.reset(seed=0)[1]["from"] == "scenario start"
    with pytest.raises(EnvError, match="no recorded game state"):
        plain.reset(options={"start": 0})
    plain.close()
    with pytest.raises(ConfigError, match="recorded in vizdoom"):
        RealGameEnv("crafter", starts=starts)
    with pytest.raises(DataError, match="replay_seed"):  # a replay of the wrong shape is named
        Starts(starts.frames, starts.actions, starts.poses, starts.names, replay={"seed": np.zeros(2, int)})


def test_crafter_gym_env_maps_what_exists_and_refuses_the_rest():
    pytest.importorskip("crafter")
    env = gymnasium.make(REAL_ENV_IDS["crafter"])
    assert list(env.action_space.nvec) == [9, 9, 13] and env.observation_space.shape == (64, 64, 3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and info["pose"].shape == (5,) and "inventory" in info["extras"]
    for a in ([7, 4, 0], [5, 4, 0], [4, 4, 1], [4, 4, 0]):  # up, right, "do", noop
        obs, _, _, _, info = env.step(np.array(a))
        assert obs.shape == (64, 64, 3) and info["applied"] == a
    for a, why in (([4, 7, 0], "fixed camera"), ([8, 4, 0], "diagonal"), ([7, 4, 1], "one thing per step")):
        with pytest.raises(EnvError, match=why):
            env.step(np.array(a))
    env.close()
    lenient = RealGameEnv("crafter", "small", on_unsupported="reduce", max_episode_steps=6)
    lenient.reset(seed=0)
    assert lenient.step(np.array([7, 4, 1]))[4]["applied"] == [4, 4, 1]  # interact wins, as collected
    assert lenient.step(np.array([8, 7, 0]))[4]["applied"] == [7, 4, 0]  # forward wins, view ignored
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not having a spec.*")
        check_env(lenient)
    lenient.close()
    with pytest.raises(ConfigError, match="on_unsupported"):
        RealGameEnv("crafter", on_unsupported="ignore")
