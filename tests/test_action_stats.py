"""The action distribution reported by ``infworld data info``: shares, entropy, repeat rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import infworld.data.stats as stats
from infworld.cli import main
from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.data.stats import (
    MOVE_NAMES,
    VIEW_NAMES,
    ActionTally,
    action_distribution,
    dataset_info,
    entropy_bits,
    format_info,
)
from infworld.errors import DataError


def write_known(root: Path, episodes: list[tuple[list[int], list[int], list[int]]],
                vocab=("none", "use")) -> Path:
    """A dataset whose episodes carry exactly the given (move, view, interact) id lists."""
    write_meta(root, DatasetMeta(env="synthetic", size=(8, 8), interact_vocab=list(vocab), has_pose=False))
    for i, (move, view, interact) in enumerate(episodes):
        frames = np.zeros((len(move) + 1, 8, 8, 3), np.uint8)
        ep = Episode(frames, np.array(move), np.array(view), np.array(interact))
        write_episode(episode_path(root, i), ep)
    return root


# ep0 walks through move ids 0..8, ep1 walks back 8..0, so the 18 moves are uniform over 9 ids and no
# step repeats inside an episode; ep0's last move (8) equals ep1's first, which must not count as a
# repeat. View is always "turn-right" (7). Interact: 15 x none, 3 x use.
KNOWN = [
    (list(range(9)), [7] * 9, [0] * 9),
    (list(range(8, -1, -1)), [7] * 9, [1, 1, 1, 0, 0, 0, 0, 0, 0]),
]


def test_names_follow_the_action_schema():
    assert MOVE_NAMES[int(encode_move(1, 0))] == "forward"
    assert MOVE_NAMES[int(encode_move(-1, -1))] == "back-left"
    assert MOVE_NAMES[int(encode_move(0, 1))] == "right"
    assert MOVE_NAMES[int(encode_move(0, 0))] == "none"
    assert VIEW_NAMES[int(encode_view(1, 0))] == "turn-right"  # yaw +1 turns right
    assert VIEW_NAMES[int(encode_view(0, 1))] == "look-up"  # pitch +1 looks up
    assert VIEW_NAMES[int(encode_view(-1, -1))] == "turn-left+look-down"
    assert MOVE_NAMES[UNCERTAIN] == VIEW_NAMES[UNCERTAIN] == "uncertain"
    assert len(MOVE_NAMES) == len(VIEW_NAMES) == 10


def test_entropy_bits():
    assert entropy_bits(np.ones(9)) == pytest.approx(math.log2(9))
    assert entropy_bits(np.array([0, 5, 0])) == 0.0
    assert entropy_bits(np.zeros(4)) == 0.0
    assert entropy_bits(np.array([1, 1, 2])) == pytest.approx(1.5)


def test_distribution_of_known_actions(tmp_path):
    dist = action_distribution(write_known(tmp_path / "ds", KNOWN))
    assert (dist["steps"], dist["pairs"]) == (18, 16)

    move = dist["move"]
    assert move["names"] == list(MOVE_NAMES)
    assert move["counts"] == [2] * 9 + [0]
    assert move["shares"] == pytest.approx([1 / 9] * 9 + [0.0])
    assert move["entropy_bits"] == pytest.approx(math.log2(9))
    assert move["max_entropy_bits"] == pytest.approx(math.log2(10))
    assert move["repeat_rate"] == 0.0  # the 8 -> 8 across the episode boundary is not a repeat
    assert move["uncertain_share"] == 0.0

    view = dist["view"]
    assert view["shares"][7] == 1.0 and view["names"][7] == "turn-right"
    assert view["entropy_bits"] == 0.0 and view["repeat_rate"] == 1.0

    interact = dist["interact"]
    assert interact["names"] == ["none", "use"] and interact["counts"] == [15, 3]
    assert interact["shares"] == pytest.approx([15 / 18, 3 / 18])
    assert interact["entropy_bits"] == pytest.approx(-(5 / 6) * math.log2(5 / 6) - (1 / 6) * math.log2(1 / 6))
    assert interact["repeat_rate"] == pytest.approx(15 / 16)  # ep0: 8 repeats, ep1: 2 + 5

    joint = dist["move_view"]
    assert joint["entropy_bits"] == pytest.approx(math.log2(9))  # view is constant: H(move, view) = H(move)
    assert joint["mutual_information_bits"] == pytest.approx(0.0, abs=1e-9)
    assert joint["max_entropy_bits"] == pytest.approx(math.log2(100))
    assert joint["repeat_rate"] == 0.0


def test_joint_entropy_and_uncertain_share():
    ids = np.arange(81)
    tally = ActionTally(num_interact=1)
    # every (move, view) pair of 9 x 9 once: independent, so H(move, view) = H(move) + H(view)
    tally.add({"move": ids // 9, "view": ids % 9, "interact": np.zeros(81, int)})
    d = tally.summary(["none"])
    assert d["move_view"]["entropy_bits"] == pytest.approx(2 * math.log2(9))
    assert d["move_view"]["mutual_information_bits"] == pytest.approx(0.0, abs=1e-9)
    assert d["interact"]["entropy_bits"] == 0.0 and d["interact"]["max_entropy_bits"] == 0.0

    tally = ActionTally(num_interact=1)
    move = np.array([UNCERTAIN, UNCERTAIN, 7, 7])
    tally.add({"move": move, "view": move, "interact": np.zeros(4, int)})  # view = move: fully dependent
    d = tally.summary(["none"])
    assert d["move"]["uncertain_share"] == 0.5 and d["move"]["entropy_bits"] == pytest.approx(1.0)
    assert d["move_view"]["entropy_bits"] == pytest.approx(1.0)
    assert d["move_view"]["mutual_information_bits"] == pytest.approx(1.0)
    assert d["move_view"]["repeat_rate"] == pytest.approx(2 / 3)


def test_no_pairs_gives_no_repeat_rate(tmp_path):
    dist = action_distribution(write_known(tmp_path / "ds", [([7], [4], [0])]))  # one 2-frame episode
    assert dist["steps"] == 1 and dist["pairs"] == 0 and dist["move"]["repeat_rate"] is None
    assert "move entropy" in format_info(dataset_info(tmp_path / "ds"))


def test_bad_ids_name_the_file_and_field():
    tally = ActionTally(num_interact=2)
    with pytest.raises(DataError, match=r"ep\.npz \[view\]: ids must be in 0\.\.9, got range 0\.\.12"):
        tally.add({"move": np.zeros(3, int), "view": np.array([0, 12, 1]), "interact": np.zeros(3, int)},
                  path="ep.npz")
    with pytest.raises(DataError, match=r"\[interact\]: ids must be in 0\.\.1"):
        tally.add({"move": np.zeros(3, int), "view": np.zeros(3, int), "interact": np.array([0, 2, 0])})
    with pytest.raises(DataError, match=r"\[view\]: missing array"):
        tally.add({"move": np.zeros(3, int)})


def test_only_action_arrays_are_read(tmp_path, monkeypatch):
    """Streaming: one episode's small arrays at a time, never the frames."""
    root = write_known(tmp_path / "ds", KNOWN)
    real, asked = stats.load_arrays, []

    def spy(path, names):
        asked.append(names)
        return real(path, names)

    monkeypatch.setattr(stats, "load_arrays", spy)
    action_distribution(root)
    assert len(asked) == 2 and all("frames" not in names for names in asked)


def test_info_reports_the_distribution(tmp_path, capsys):
    root = write_known(tmp_path / "ds", KNOWN)
    info = dataset_info(root)
    assert info["action_distribution"] == action_distribution(root)
    assert info["actions"]["move"]["counts"] == [2] * 9 + [0]  # the older histogram key is kept

    assert main(["data", "info", str(root), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["action_distribution"]["move"]["entropy_bits"] == pytest.approx(math.log2(9))
    assert out["action_distribution"]["view"]["repeat_rate"] == 1.0

    assert main(["data", "info", str(root)]) == 0
    table = capsys.readouterr().out
    assert format_info(info) == table.rstrip("\n")
    rows = dict(line.split("  ", 1) for line in table.splitlines())
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["action steps"].startswith("18 ")
    assert rows["move shares"].startswith("back-left 11.1%, back 11.1%")
    assert rows["move entropy"] == "3.17 of 3.32 bits; 0.0% of steps repeat the previous one"
    assert rows["view shares"].startswith("turn-right 100.0%  (never: turn-left+look-down, turn-left,")
    assert "uncertain" not in rows["view shares"]
    assert rows["interact shares"] == "none 83.3%, use 16.7%"
    assert rows["move+view joint"].startswith("3.17 of 6.64 bits")
