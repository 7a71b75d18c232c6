"""Bad input: out-of-range action ids in an imported actions CSV, and an unknown collect policy, give a
one-line error naming what is wrong and the valid values, and write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from infworld.cli import main
from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.data.episode import META_FILE, episode_path, list_episodes, read_episode
from infworld.data.importer import import_episode
from infworld.envs.policies import POLICIES
from infworld.errors import DataError

T = 5  # frames per imported clip: 4 actions


def setup(tmp_path: Path, header: str, rows: list[str]) -> tuple[Path, Path]:
    frames = tmp_path / "f.npy"
    np.save(frames, np.zeros((T, 16, 16, 3), np.uint8))
    csv_path = tmp_path / "actions.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    return frames, csv_path


def run_import(frames: Path, csv_path: Path, out: Path, capsys) -> str:
    """Run the CLI import; it must fail with exit code 2 and one line on stderr, returned."""
    rc = main(["data", "import", "--frames", str(frames), "--actions", str(csv_path), "--out", str(out)])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and err.count("\n") == 0 and not captured.out, (rc, captured)
    return err


@pytest.mark.parametrize("header, rows, column, row, value", [
    ("frame,move,view", ["0,7,4", "1,12,4", "2,4,4", "3,4,4"], "move", 2, "12"),
    ("frame,move,view", ["0,7,4", "1,7,4", "2,4,-3", "3,4,4"], "view", 3, "-3"),
    ("frame,move,view,interact", ["0,7,4,0", "1,7.5,4,0", "2,4,4,0", "3,4,4,0"], "move", 2, "7.5"),
    # rows in any order: the row named is the row of the file
    ("frame,forward,right,view", ["3,0,0,4", "0,0,0,4", "2,0,0,10", "1,0,0,4"], "view", 3, "10"),
])
def test_out_of_range_id_names_file_column_row_and_range(tmp_path, capsys, header, rows, column, row, value):
    frames, csv_path = setup(tmp_path, header, rows)
    out = tmp_path / "ds"
    err = run_import(frames, csv_path, out, capsys)
    assert f"{csv_path} [{column}]: row {row} (line {row + 1}): {value} is not a {column} id" in err
    assert f"valid ids are integers 0..{UNCERTAIN}" in err
    assert not out.exists()  # nothing written, not even meta.json


def test_out_of_range_tri_state_names_file_column_row_and_range(tmp_path, capsys):
    frames, csv_path = setup(tmp_path, "frame,forward,right,yaw,pitch",
                             ["0,1,0,0,0", "1,12,0,0,0", "2,0,0,0,0", "3,0,0,0,0"])
    err = run_import(frames, csv_path, tmp_path / "ds", capsys)
    assert f"{csv_path} [forward]: row 2 (line 3): 12 is not a tri-state in {{-1, 0, 1}}" in err
    frames, csv_path = setup(tmp_path, "frame,forward,right,yaw,pitch",
                             ["0,1,0,0,0", "1,1,0,0,0", "2,0,0,-3,0", "3,0,0,0,0"])
    err = run_import(frames, csv_path, tmp_path / "ds", capsys)
    assert f"{csv_path} [yaw]: row 3 (line 4): -3 is not a tri-state in {{-1, 0, 1}}" in err
    assert not (tmp_path / "ds").exists()


def test_bad_append_leaves_the_dataset_as_it_was(tmp_path, capsys):
    frames, good = setup(tmp_path, "frame,move,view,interact", ["0,7,1,0", "1,7,1,1", "2,9,4,0", "3,4,9,0"])
    out = tmp_path / "ds"
    assert main(["data", "import", "--frames", str(frames), "--actions", str(good), "--out", str(out)]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in [out / META_FILE, *list_episodes(out)]}

    bad = tmp_path / "bad.csv"
    bad.write_text("frame,move,view\n0,7,4\n1,7,4\n2,7,4\n3,-1,4\n")
    err = run_import(frames, bad, out, capsys)
    assert f"{bad} [move]: row 4 (line 5): -1 is not a move id" in err
    # an interact id outside the existing dataset's vocabulary (none, interact_1) names its row too
    bad.write_text("frame,move,view,interact\n0,7,4,0\n1,7,4,2\n2,7,4,0\n3,7,4,0\n")
    err = run_import(frames, bad, out, capsys)
    assert f"{bad} [interact]: row 2 (line 3): 2 is not an interact id of the dataset's vocabulary" in err
    assert "valid ids are 0..1 (none, interact_1)" in err

    after = {p.name: p.read_bytes() for p in [out / META_FILE, *list_episodes(out)]}
    assert after == before and sorted(p.name for p in out.iterdir()) == ["episodes", META_FILE]
    assert [p.name for p in (out / "episodes").iterdir()] == ["ep_000000.npz"]  # no temp file left


def test_id_columns_import_exactly(tmp_path):
    """A move / view id column may replace the tri-states; 9 (uncertain) is kept as is."""
    frames, csv_path = setup(tmp_path, "frame,move,yaw,pitch", ["0,7,1,0", "1,0,-1,1", "2,9,0,0", "3,4,0,-1"])
    summary = import_episode(frames, tmp_path / "ds", actions=csv_path)
    ep = read_episode(episode_path(tmp_path / "ds", 0))
    assert ep.move.tolist() == [7, 0, 9, 4]
    assert ep.view.tolist() == encode_view([1, -1, 0, 0], [0, 1, 0, -1]).tolist()
    assert summary["move_uncertain_share"] == 0.25 and summary["view_uncertain_share"] == 0.0
    assert int(encode_move(1, 0)) == 7  # the id column means the same thing as forward=1, right=0


@pytest.mark.parametrize("header, rows, match", [
    ("frame,move,forward,right,view", [f"{t},7,1,0,4" for t in range(4)],
     r"\[move\]: give either a move id column or forward,right tri-state columns, not both"),
    ("frame,move,yaw", ["0,7,0", "1,7,0", "2,7,0", "3,7,0"],
     r"\[pitch\]: missing column: give yaw,pitch \(tri-states in \{-1, 0, 1\}\) or view \(ids 0\.\.9\)"),
])
def test_ambiguous_or_missing_columns(tmp_path, header, rows, match):
    frames, csv_path = setup(tmp_path, header, rows)
    with pytest.raises(DataError, match=match):
        import_episode(frames, tmp_path / "ds", actions=csv_path)
    assert not (tmp_path / "ds").exists()


def test_collect_unknown_policy_lists_valid_policies(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["collect", "--env", "crafter", "--policy", "nonsense", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0
    assert "unknown policy 'nonsense'; valid policies: random, explore, revisit, diverse" in err
    assert "diverse" in POLICIES and all(name in err for name in POLICIES)
    assert not out.exists()
