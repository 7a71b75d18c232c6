"""Environments (ViZDoom, Crafter) behind the unified interface, and the exploration policies."""

from __future__ import annotations

import numpy as np
import pytest

from infworld.data.action_schema import encode_move, encode_view
from infworld.data.pose_motion import wrap_deg
from infworld.envs.base import NOOP, Command, EnvSpec, Observation
from infworld.errors import EnvError

pytest.importorskip("vizdoom")
pytest.importorskip("crafter")

from infworld.envs.collect import run_episode  # noqa: E402
from infworld.envs.crafter import CRAFTER_ACTIONS, CRAFTER_INVENTORY_KEYS, CrafterConfig, CrafterEnv  # noqa: E402
from infworld.envs.policies import PolicyConfig, make_policy  # noqa: E402
from infworld.envs.registry import make_env  # noqa: E402
from infworld.envs.vizdoom import DOOM_BUTTONS, VizDoomConfig, VizDoomEnv, parse_scenario  # noqa: E402


@pytest.fixture(scope="module")
def doom():
    with VizDoomEnv(VizDoomConfig(scenario="freedoom2", max_steps=2000)) as env:
        yield env


@pytest.fixture(scope="module")
def maze():
    with VizDoomEnv(VizDoomConfig(scenario="my_way_home", max_steps=2000)) as env:
        yield env


@pytest.fixture(scope="module")
def crafter_small():
    return CrafterEnv(CrafterConfig(scenario="small"))


def _steps(env, cmd: Command, n: int):
    res = None
    for _ in range(n):
        res = env.step(cmd)
    return res


# --- commands --------------------------------------------------------------------------------


def test_command_ids_follow_the_action_schema():
    cmd = Command(forward=1, right=-1, yaw=1, pitch=-1)
    assert cmd.move_id == int(encode_move(1, -1)) and cmd.view_id == int(encode_view(1, -1))
    assert NOOP.move_id == 4 and NOOP.view_id == 4


@pytest.mark.parametrize("bad", [Command(forward=2), Command(yaw=-3), Command(interact=3),
                                 Command(interact=-1)])
def test_command_validation_rejects_out_of_range_fields(bad):
    with pytest.raises(EnvError, match="command field"):
        bad.validate(3)


# --- ViZDoom ---------------------------------------------------------------------------------


def test_vizdoom_observation_shapes_and_meta(doom):
    obs = doom.reset(0)
    assert obs.frame.shape == (64, 64, 3) and obs.frame.dtype == np.uint8
    assert obs.depth.shape == (64, 64) and obs.depth.dtype == np.uint8
    assert obs.pose.shape == (5,) and obs.pose.dtype == np.float32 and np.all(np.isfinite(obs.pose))
    assert obs.frame.std() > 5  # a rendered scene, not a blank screen
    meta = doom.dataset_meta(policy="random")
    assert meta.env == "vizdoom" and meta.has_depth and meta.size == (64, 64)
    assert meta.interact_vocab == ["none", "use", "attack"]
    assert meta.button_names == list(DOOM_BUTTONS)
    assert (meta.fps, meta.frame_skip) == (35.0, 4)  # the game clock; frames come every 4 tics


def test_vizdoom_yaw_plus_one_turns_clockwise(doom):
    """yaw +1 = turn right = clockwise from above, so Doom's CCW ANGLE must decrease."""
    start = float(doom.reset(0).pose[3])
    right = float(_steps(doom, Command(yaw=1), 5).obs.pose[3])
    assert wrap_deg(right - start) < -20
    left = float(_steps(doom, Command(yaw=-1), 8).obs.pose[3])
    assert wrap_deg(left - right) > 20


def test_vizdoom_pitch_plus_one_looks_up(doom):
    doom.reset(0)
    up = float(_steps(doom, Command(pitch=1), 2).obs.pose[4])
    assert up > 5
    down = float(_steps(doom, Command(pitch=-1), 5).obs.pose[4])
    assert down < -5


@pytest.mark.parametrize("cmd, direction", [(Command(forward=1), 0.0), (Command(forward=-1), 180.0),
                                            (Command(right=1), -90.0), (Command(right=-1), 90.0)])
def test_vizdoom_moves_relative_to_the_camera(doom, cmd, direction):
    """forward goes along the yaw, right +1 strafes clockwise of it (the freedoom2 start is open)."""
    obs = doom.reset(0)
    res = _steps(doom, cmd, 5)
    a = np.radians(float(obs.pose[3]) + direction)
    moved = res.obs.pose[:2] - obs.pose[:2]
    assert float(moved @ np.array([np.cos(a), np.sin(a)])) > 20


def test_vizdoom_buttons_are_what_the_command_asked(doom):
    doom.reset(0)
    res = doom.step(Command(forward=-1, right=1, yaw=1, pitch=1, interact=2))
    pressed = {name for name, v in zip(DOOM_BUTTONS, res.buttons, strict=True) if v}
    assert pressed == {"MOVE_BACKWARD", "MOVE_RIGHT", "TURN_RIGHT", "LOOK_UP", "ATTACK"}
    assert res.command == Command(forward=-1, right=1, yaw=1, pitch=1, interact=2)


def test_vizdoom_same_seed_same_episode(maze):
    cmds = [Command(forward=1, yaw=(i // 5) % 3 - 1) for i in range(30)]

    def play(seed):
        frames = [maze.reset(seed).frame]
        frames += [maze.step(c).obs.frame for c in cmds]
        return np.stack(frames)

    a, b = play(11), play(11)
    assert np.array_equal(a, b)
    # my_way_home spawns the player at a seeded random place.
    assert any(not np.array_equal(maze.reset(s).pose, maze.reset(11).pose) for s in (1, 2, 3))


def test_vizdoom_map_and_size_are_configurable():
    with VizDoomEnv(VizDoomConfig(scenario="freedoom2:map03", size=(48, 32))) as env:
        obs = env.reset(0)
        assert obs.frame.shape == (48, 32, 3) and obs.depth.shape == (48, 32)
        assert env.spec.scenario == "freedoom2:map03"


def test_vizdoom_scenario_names():
    assert parse_scenario("freedoom2") == ("freedoom2", "MAP01")
    assert parse_scenario("freedoom2:map03") == ("freedoom2", "MAP03")
    assert parse_scenario("freedoom1") == ("freedoom1", "E1M1")
    assert parse_scenario("my_way_home") == ("my_way_home", None)
    with pytest.raises(EnvError, match="known: my_way_home, freedoom1, freedoom2"):
        parse_scenario("e1m1")
    with pytest.raises(EnvError, match="unknown map 'MAP99'"):
        parse_scenario("freedoom2:MAP99")  # would hang vizdoom at init
    with pytest.raises(EnvError, match="single map"):
        parse_scenario("basic:MAP02")
    with pytest.raises(EnvError, match="frame_skip"):
        VizDoomEnv(VizDoomConfig(frame_skip=0))


# --- Crafter ---------------------------------------------------------------------------------


def test_crafter_observation_and_extras(crafter_small):
    obs = crafter_small.reset(3)
    assert obs.frame.shape == (64, 64, 3) and obs.frame.dtype == np.uint8 and obs.depth is None
    inv, sem = obs.extras["inventory"], obs.extras["semantic"]
    assert inv.shape == (len(CRAFTER_INVENTORY_KEYS),) and inv.dtype == np.uint8
    assert sem.shape == (32, 32) and sem.dtype == np.uint8  # the "small" world
    ids = crafter_small.semantic_ids()
    x, y = int(obs.pose[0]), int(obs.pose[1])
    assert sem[31 - y, x] == ids["player"]  # y grows up the screen, rows grow down
    assert obs.pose[2] == 0 and obs.pose[4] == 0
    meta = crafter_small.dataset_meta()
    assert meta.extra["inventory_keys"] == list(CRAFTER_INVENTORY_KEYS) and not meta.has_depth
    assert meta.interact_vocab[:3] == ["none", "do", "sleep"] and len(meta.interact_vocab) == 13


@pytest.mark.parametrize("cmd, action, yaw, step", [
    (Command(forward=1), "move_up", 90.0, (0, 1)), (Command(forward=-1), "move_down", 270.0, (0, -1)),
    (Command(right=1), "move_right", 0.0, (1, 0)), (Command(right=-1), "move_left", 180.0, (-1, 0))])
def test_crafter_moves_in_the_screen_frame(crafter_small, cmd, action, yaw, step):
    obs = crafter_small.reset(3)
    res = crafter_small.step(cmd)
    assert res.command == cmd and CRAFTER_ACTIONS[int(np.argmax(res.buttons))] == action
    assert res.obs.pose[3] == yaw  # facing, CCW on screen
    moved = tuple(int(v) for v in res.obs.pose[:2] - obs.pose[:2])
    assert moved in (step, (0, 0))  # (0, 0) only if the way was blocked


def test_crafter_does_one_thing_per_step(crafter_small):
    crafter_small.reset(3)
    res = crafter_small.step(Command(forward=1, right=1, yaw=1, interact=1))
    assert res.command == Command(interact=1)  # interact wins; the recorded action says so
    assert CRAFTER_ACTIONS[int(np.argmax(res.buttons))] == "do" and res.buttons.sum() == 1
    assert crafter_small.step(Command(forward=-1, right=1)).command == Command(forward=-1)


def test_crafter_lava_guard_and_keep_alive():
    env = CrafterEnv(CrafterConfig(scenario="small"))
    obs = env.reset(5)
    game = env._game
    game._world[game._player.pos + np.array([0, -1])] = "lava"  # the tile above the player
    res = env.step(Command(forward=1))
    assert res.command == NOOP and res.info.get("lava_guard") and not res.done
    assert np.array_equal(res.obs.pose[:2], obs.pose[:2])
    for _ in range(60):
        res = env.step(NOOP)
    need = [CRAFTER_INVENTORY_KEYS.index(k) for k in ("food", "drink", "energy")]
    assert np.all(res.obs.extras["inventory"][need] == 9)  # nobody starves with keep_alive

    unguarded = CrafterEnv(CrafterConfig(scenario="small", lava_guard=False, keep_alive=False))
    unguarded.reset(5)
    g = unguarded._game
    for _ in range(60):
        unguarded.step(NOOP)
    assert unguarded.step(NOOP).obs.extras["inventory"][CRAFTER_INVENTORY_KEYS.index("drink")] < 9
    g._world[g._player.pos + np.array([0, -1])] = "lava"
    assert unguarded.step(Command(forward=1)).done  # walking into lava kills


def test_crafter_monsters_switch():
    ids = CrafterEnv(CrafterConfig()).semantic_ids()
    hostile = [ids["zombie"], ids["skeleton"]]
    with_monsters = CrafterEnv(CrafterConfig(monsters=True)).reset(0).extras["semantic"]
    assert np.isin(with_monsters, hostile).any()
    env = CrafterEnv(CrafterConfig(monsters=False))
    sems = [env.reset(0).extras["semantic"]] + [env.step(Command(forward=1)).obs.extras["semantic"]
                                                for _ in range(30)]
    assert not np.isin(np.stack(sems), hostile).any()


def test_crafter_world_depends_on_the_seed_only(crafter_small):
    a = crafter_small.reset(7).extras["semantic"]
    crafter_small.reset(8)
    assert np.array_equal(crafter_small.reset(7).extras["semantic"], a)  # not on how many resets ran
    assert not np.array_equal(crafter_small.reset(8).extras["semantic"], a)


def test_crafter_rejects_bad_settings():
    with pytest.raises(EnvError, match="known: default, small"):
        CrafterEnv(CrafterConfig(scenario="huge"))
    with pytest.raises(EnvError, match="frame skip"):
        make_env("crafter", frame_skip=4)
    with pytest.raises(EnvError, match="valid envs: vizdoom, crafter"):
        make_env("minecraft")


# --- policies --------------------------------------------------------------------------------


def _spec(**kw) -> EnvSpec:
    base = dict(name="fake", scenario="x", size=(64, 64), interact_vocab=("none", "use"), button_names=(),
                has_depth=True, has_pitch=False, grid=False, frame_skip=4, fps=8.75, move_scale=33.0,
                turn_deg=14.0, depth_scale=7.0)
    base.update(kw)
    return EnvSpec(**base)


def test_unknown_policy_lists_the_valid_ones():
    with pytest.raises(EnvError, match="valid policies: random, explore, revisit"):
        make_policy("greedy", _spec(), 0)
    with pytest.raises(EnvError, match="min_hold"):
        make_policy("random", _spec(), 0, PolicyConfig(min_hold=5, max_hold=2))


def test_explore_turns_away_from_a_wall_and_walks_into_open_space():
    quiet = PolicyConfig(interact_prob=0.0, look_prob=0.0)
    pose = np.zeros(5, dtype=np.float32)
    wall = np.full((64, 64), 255, np.uint8)
    wall[:, 16:48] = 2  # something ~14 units ahead, open on both sides
    for seed in range(5):
        cmd = make_policy("explore", _spec(), seed, quiet).act(Observation(np.zeros((64, 64, 3), np.uint8),
                                                                           pose, wall))
        assert cmd.forward == 0 and (cmd.yaw != 0 or cmd.interact == 1)  # turn, or try "use" on a door
    wall[:, :32] = 255  # now the left half is open: the turn must go left (yaw -1)
    wall[:, 32:] = 2
    turns = [make_policy("explore", _spec(interact_vocab=("none",)), s, quiet).act(
        Observation(np.zeros((64, 64, 3), np.uint8), pose, wall)).yaw for s in range(5)]
    assert turns == [-1] * 5
    open_ahead = np.full((64, 64), 255, np.uint8)
    cmd = make_policy("explore", _spec(), 0, quiet).act(Observation(np.zeros((64, 64, 3), np.uint8), pose,
                                                                    open_ahead))
    assert cmd.forward == 1


def test_policies_are_seeded(maze):
    for name in ("random", "explore", "revisit"):
        a = run_episode(maze, name, 80, seed=3, index=0)
        b = run_episode(maze, name, 80, seed=3, index=0)
        for field in ("pose", "move", "view", "interact", "frames"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)
    c = run_episode(maze, "random", 80, seed=4, index=0)
    assert not np.array_equal(a.move, c.move)


def _revisit_share(pose: np.ndarray, radius: float, gap: int = 50, angle: float | None = 30.0) -> float:
    """Share of frames within ``radius`` (and ``angle`` degrees of heading) of a frame >= gap steps older."""
    xy, yaw = pose[:, :2].astype(np.float64), pose[:, 3].astype(np.float64)
    hits = 0
    for t in range(gap, len(pose)):
        near = np.linalg.norm(xy[: t - gap + 1] - xy[t], axis=1) <= radius
        if angle is not None:
            near &= np.abs(wrap_deg(yaw[: t - gap + 1] - yaw[t])) <= angle
        hits += bool(near.any())
    return hits / len(pose)


def test_revisit_policy_comes_back_far_more_than_random_in_doom(maze):
    share = {name: np.mean([_revisit_share(run_episode(maze, name, 500, seed=0, index=i).pose, 64.0)
                            for i in range(3)]) for name in ("random", "revisit")}
    assert share["revisit"] > 1.5 * share["random"], share


def test_revisit_policy_comes_back_far_more_than_random_in_crafter(crafter_small):
    share = {name: np.mean([_revisit_share(run_episode(crafter_small, name, 400, seed=0, index=i).pose, 0.5,
                                           angle=None) for i in range(2)]) for name in ("random", "revisit")}
    assert share["revisit"] > 1.5 * share["random"], share


def test_explore_covers_more_ground_and_changes_the_crafter_world(crafter_small):
    cells = {}
    for name in ("random", "explore"):
        eps = [run_episode(crafter_small, name, 400, seed=0, index=i) for i in range(2)]
        cells[name] = sum(len({tuple(p) for p in ep.pose[:, :2].astype(int)}) for ep in eps)
        if name == "explore":
            first, last = eps[0].extras["semantic"][0], eps[0].extras["semantic"][-1]
            materials = (first <= 12) & (last <= 12)  # ignore creatures walking around
            assert (first[materials] != last[materials]).any()  # trees collected, things placed
            assert eps[0].interact.any()
    assert cells["explore"] > cells["random"], cells
