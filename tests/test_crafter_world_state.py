"""Crafter world state: the craft policy changes the world and comes back, the events the crafter
bench asks about are found where the real game shows them, and action spaces are not mixed."""

from __future__ import annotations

import numpy as np
import pytest

from infworld.bench.crafter_bench import read_scroll
from infworld.bench.crafter_events import find_effects, find_recalls, screen_cell
from infworld.data.action_schema import check_action_space
from infworld.envs.craft_policy import SEMANTIC, CraftPolicy, changed_cells
from infworld.errors import DataError, EnvError

crafter = pytest.importorskip("crafter")

from infworld.envs.crafter import (  # noqa: E402
    CRAFTER_INTERACT_VOCAB,
    CRAFTER_INVENTORY_KEYS,
    CrafterConfig,
    CrafterEnv,
)


def _play(seed: int, steps: int):
    env = CrafterEnv(CrafterConfig())
    obs = env.reset(seed)
    policy = CraftPolicy(env.spec, seed)
    sems, poses, invs, interact = [obs.extras["semantic"]], [obs.pose], [obs.extras["inventory"]], []
    for _ in range(steps):
        res = env.step(policy.act(obs))
        obs = res.obs
        interact.append(res.command.interact)
        sems.append(obs.extras["semantic"])
        poses.append(obs.pose)
        invs.append(obs.extras["inventory"])
    return policy, np.stack(sems), np.stack(poses), np.stack(invs), np.array(interact), env


def test_semantic_ids_are_the_games():
    env = CrafterEnv(CrafterConfig())
    env.reset(0)
    assert {k: v for k, v in env.semantic_ids().items() if k in SEMANTIC} == SEMANTIC


def test_craft_policy_collects_places_makes_and_returns():
    policy, sems, poses, invs, interact, _ = _play(seed=3, steps=400)
    news = {new for _, _, _, _, new in policy.changes}
    assert SEMANTIC["table"] in news  # it placed a table
    assert any(old == SEMANTIC["tree"] for _, _, _, old, _ in policy.changes)  # and cut a tree
    tools = [CRAFTER_INVENTORY_KEYS.index(k) for k in ("wood_pickaxe", "wood_sword")]
    assert invs[-1][tools].sum() >= 1  # and made a tool at the table
    assert "away_and_back" in policy.errands
    # The events the bench asks about are found on the records.
    effects = find_effects(interact, list(CRAFTER_INTERACT_VOCAB), invs, sems, poses,
                           list(CRAFTER_INVENTORY_KEYS))
    kinds = {e.kind for e in effects}
    assert {"collect", "place", "make"} <= kinds
    names = {v: k for k, v in SEMANTIC.items()}
    for e in effects:
        if e.kind == "place":  # the placed material is the one the action names
            assert CRAFTER_INTERACT_VOCAB[interact[e.t]] == f"place_{names[e.material]}"
    # The same seed gives the same game.
    again = _play(seed=3, steps=60)
    assert np.array_equal(again[1], sems[:61])


def test_craft_policy_refuses_other_games():
    import dataclasses

    spec = dataclasses.replace(CrafterEnv(CrafterConfig()).spec, name="vizdoom")
    with pytest.raises(EnvError, match="Crafter"):
        CraftPolicy(spec, 0)


def _walk(t_change: int, away: int, back_at: int, total: int):
    """A synthetic record: a 20 x 20 grass world, the player at (10, 10) turns cell (11, 10) into a
    table at t_change, walks right ``away`` cells, stays, walks back by ``back_at``."""
    h = w = 40
    sem = np.full((total, h, w), SEMANTIC["grass"], np.uint8)
    sem[t_change:, 10, 11] = SEMANTIC["table"]
    x = np.full(total, 10.0)
    out = np.arange(total) - t_change
    x = np.where((out > 0) & (np.arange(total) < back_at), 10 + np.minimum(out, away), x)
    pose = np.stack([x, h - 1 - np.full(total, 10.0), np.zeros(total), np.zeros(total), np.zeros(total)], 1)
    return sem, pose.astype(np.float32)


def test_recall_needs_the_cell_out_of_view_and_out_of_the_window():
    sem, pose = _walk(t_change=5, away=12, back_at=60, total=80)
    recalls = find_recalls(sem, pose, window=16, min_gap=20, max_gap=200)
    assert len(recalls) == 1
    r = recalls[0]
    assert r.cell == (11, 10) and r.new == SEMANTIC["table"] and r.old == SEMANTIC["grass"]
    assert r.back == 60 and r.gap == 55 and r.screen == (3, 5)
    # Back too soon (the window still held the cell): no return to ask about.
    sem, pose = _walk(t_change=5, away=12, back_at=25, total=80)
    assert find_recalls(sem, pose, window=16) == []
    # The change undone before the return: not a clean return either.
    sem, pose = _walk(t_change=5, away=12, back_at=60, total=80)
    sem[40:, 10, 11] = SEMANTIC["grass"]
    assert [r.new for r in find_recalls(sem, pose)] == [SEMANTIC["grass"]]  # only the undo's own return


def test_moving_things_are_not_changes_and_bad_shapes_are_named():
    a = np.full((6, 6), SEMANTIC["grass"], np.uint8)
    b = a.copy()
    b[2, 2] = SEMANTIC["cow"]
    b[4, 1] = SEMANTIC["plant"]
    assert changed_cells(a, b) == [(1, 4, SEMANTIC["grass"], SEMANTIC["plant"])]
    with pytest.raises(DataError, match="extra_semantic"):
        find_recalls(np.zeros((5, 6, 6), np.uint8), np.zeros((4, 5), np.float32))
    assert screen_cell((14, 10), (10, 10)) == (3, 8) and screen_cell((15, 10), (10, 10)) is None


def test_scroll_is_read_from_cell_maps():
    rng = np.random.default_rng(0)
    world = rng.integers(0, 12, size=(30, 30))
    view = lambda r, c: world[r - 3: r + 4, c - 4: c + 5]  # noqa: E731
    assert read_scroll(view(10, 10), view(9, 10)) == "up"
    assert read_scroll(view(10, 10), view(11, 10)) == "down"
    assert read_scroll(view(10, 10), view(10, 9)) == "left"
    assert read_scroll(view(10, 10), view(10, 11)) == "right"
    assert read_scroll(view(10, 10), view(10, 10)) == "none"


def test_crafter_actions_and_doom_models_do_not_mix():
    doom = ["none", "use", "attack"]
    with pytest.raises(DataError, match="crafter's action space .* trained on an action space"):
        check_action_space(doom, list(CRAFTER_INTERACT_VOCAB), "crafter")
    with pytest.raises(DataError, match="vizdoom's action space"):
        check_action_space(list(CRAFTER_INTERACT_VOCAB), doom, "vizdoom")
    check_action_space(doom, ["none", "interact_1", "interact_2"])  # imported placeholders: length only
    check_action_space(None, doom)  # a model that does not say: not checked


def test_imported_crafter_actions_by_name(tmp_path):
    """An actions CSV may name Crafter's actions (``--env crafter``); an unknown name is refused with
    the row and the valid names, and nothing is written."""
    import imageio.v2 as imageio

    from infworld.data.episode import list_episodes, read_episode, read_meta
    from infworld.data.importer import import_episode

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        imageio.imwrite(folder / f"{i:03d}.png", np.full((16, 16, 3), 40 * i, np.uint8))
    good = tmp_path / "actions.csv"
    good.write_text("frame,move,view,interact\n0,7,4,none\n1,4,4,place_table\n2,4,4,5\n")
    import_episode(folder, tmp_path / "ds", actions=good, size=16, env="crafter")
    meta = read_meta(tmp_path / "ds")
    assert list(meta.interact_vocab) == list(CRAFTER_INTERACT_VOCAB)
    ep = read_episode(list_episodes(tmp_path / "ds")[0], meta)
    assert ep.interact.tolist() == [0, CRAFTER_INTERACT_VOCAB.index("place_table"), 5]
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,move,view,interact\n0,7,4,none\n1,4,4,place_tabel\n2,4,4,do\n")
    want = r"row 2 \(line 3\): unknown action name 'place_tabel'; valid names are none, do, sleep, place"
    with pytest.raises(DataError, match=want):
        import_episode(folder, tmp_path / "ds2", actions=bad, size=16, env="crafter")
    assert not (tmp_path / "ds2" / "episodes").exists() or not list_episodes(tmp_path / "ds2")
