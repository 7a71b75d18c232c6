"""Validator, dataset info and revisit detection on tiny synthetic datasets (episode format v1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from infworld.cli import main
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.data.revisits import default_revisit_dist, find_revisits, revisit_stats
from infworld.data.stats import dataset_info, format_info
from infworld.data.validate import validate_dataset
from infworld.errors import ConfigError, DataError

SIZE = (12, 16)
PERIOD = 40  # frames per lap of the circular trajectory


def circle_pose(t_len: int, radius: float = 100.0, period: int = PERIOD) -> np.ndarray:
    """(T, 5) pose walking a circle, facing along the tangent: lap k revisits lap k - 2 (gap 80 > 50)."""
    phase = 2 * np.pi * np.arange(t_len) / period
    pose = np.zeros((t_len, 5), np.float32)
    pose[:, 0] = 1000 + radius * np.cos(phase)  # offset: revisits must not depend on the origin
    pose[:, 1] = -500 + radius * np.sin(phase)
    pose[:, 3] = (np.degrees(phase) + 90 + 180) % 360 - 180  # wrapped to [-180, 180)
    return pose


def make_episode(t_len: int, size=SIZE, seed: int = 0, pose: bool = True, depth: bool = False) -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        frames=rng.integers(0, 255, (t_len, *size, 3), dtype=np.uint8),
        move=rng.integers(0, 10, t_len - 1),
        view=rng.integers(0, 10, t_len - 1),
        interact=rng.integers(0, 2, t_len - 1),
        pose=circle_pose(t_len) if pose else None,
        depth=rng.integers(0, 255, (t_len, *size), dtype=np.uint8) if depth else None,
        info={"seed": seed},
    )


def make_dataset(root: Path, lengths=(100, 120, 90), pose: bool = True) -> Path:
    meta = DatasetMeta(env="vizdoom", scenario="test", size=SIZE, interact_vocab=["none", "use"],
                       has_pose=pose)
    write_meta(root, meta)
    for i, t in enumerate(lengths):
        write_episode(episode_path(root, i), make_episode(t, seed=i, pose=pose), meta=meta)
    return root


def raw_save(path: Path, **arrays) -> None:
    """Write an episode .npz without the writer's checks (to make broken files)."""
    np.savez_compressed(path, **arrays)


# ------------------------------------------------------------------------------------------ validate


def test_validate_good_dataset_passes(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    report = validate_dataset(root)
    assert report.ok and report.errors == [] and report.warnings == []
    assert (report.episodes, report.valid_episodes, report.frames) == (3, 3, 310)
    assert main(["data", "validate", str(root)]) == 0
    assert "3 valid, 310 frames" in capsys.readouterr().out


def test_leftover_temp_file_is_only_a_warning(tmp_path):
    root = make_dataset(tmp_path / "ds")
    (root / "episodes" / ".ep_000003.npz.k2j3h.tmp").write_bytes(b"half an episode")
    report = validate_dataset(root)
    assert report.ok
    assert len(report.warnings) == 1 and "leftover temp file" in report.warnings[0].message


def assert_fails(root: Path, capsys, file_part: str, field: str | None, text: str) -> None:
    """The report's first error names the file and field; the CLI exits 2 with one line naming both."""
    report = validate_dataset(root)
    assert not report.ok
    first = report.errors[0]
    assert file_part in first.path and first.field == field and text in first.message, first
    with pytest.raises(DataError, match=re.escape(text)):
        report.raise_for_errors()
    capsys.readouterr()
    assert main(["data", "validate", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and file_part in err[0] and text in err[0]
    if field:
        assert f"[{field}]" in err[0]


def test_truncated_episode_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    path = episode_path(root, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_fails(root, capsys, "ep_000001.npz", None, "corrupt or truncated")


def test_mismatched_lengths_fail(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    ep = make_episode(30)
    raw_save(episode_path(root, 0), frames=ep.frames, move=ep.move[:-3].astype(np.int8),
             view=ep.view.astype(np.int8), interact=ep.interact.astype(np.int16), pose=ep.pose)
    assert_fails(root, capsys, "ep_000000.npz", "move", "expected shape (29,)")


def test_out_of_range_action_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    ep = make_episode(30)
    move = ep.move.astype(np.int8)
    move[5] = 12
    raw_save(episode_path(root, 2), frames=ep.frames, move=move, view=ep.view.astype(np.int8),
             interact=ep.interact.astype(np.int16), pose=ep.pose)
    assert_fails(root, capsys, "ep_000002.npz", "move", "ids must be in 0..9")


def test_interact_outside_vocab_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    ep = make_episode(30)
    ep.interact[3] = 2  # vocab is ["none", "use"]
    write_episode(episode_path(root, 0), ep)  # no meta: the writer cannot know the vocabulary
    assert_fails(root, capsys, "ep_000000.npz", "interact", "ids must be in 0..1")


def test_wrong_frame_size_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    write_episode(episode_path(root, 1), make_episode(30, size=(8, 8)))
    assert_fails(root, capsys, "ep_000001.npz", "frames", "differs from dataset size")


def test_float_actions_on_disk_fail(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    ep = make_episode(30)
    raw_save(episode_path(root, 0), frames=ep.frames, move=ep.move.astype(np.float32),
             view=ep.view.astype(np.int8), interact=ep.interact.astype(np.int16), pose=ep.pose)
    assert_fails(root, capsys, "ep_000000.npz", "move", "expected an integer dtype")


def test_missing_pose_fails_when_meta_has_pose(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    write_episode(episode_path(root, 0), make_episode(30, pose=False))
    assert_fails(root, capsys, "ep_000000.npz", "pose", "has_pose")


def test_missing_meta_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    (root / "meta.json").unlink()
    assert_fails(root, capsys, "meta.json", None, "missing meta.json")


def test_bad_meta_field_fails(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    meta = json.loads((root / "meta.json").read_text())
    meta["size"] = [0, 16]
    (root / "meta.json").write_text(json.dumps(meta))
    assert_fails(root, capsys, "meta.json", "size", "positive ints")
    meta["size"], meta["format_version"] = [12, 16], 99
    (root / "meta.json").write_text(json.dumps(meta))
    assert_fails(root, capsys, "meta.json", "format_version", "not supported")
    meta["format_version"], meta["fps"] = 1, "fast"  # wrong JSON type: named, never a traceback
    (root / "meta.json").write_text(json.dumps(meta))
    assert_fails(root, capsys, "meta.json", "fps", "expected a number > 0, got 'fast'")
    meta["fps"], meta["size"] = 35, ["a", 16]
    (root / "meta.json").write_text(json.dumps(meta))
    assert_fails(root, capsys, "meta.json", "size", "[H, W] with positive ints")


def test_empty_dataset_fails(tmp_path, capsys):
    root = tmp_path / "ds"
    write_meta(root, DatasetMeta(env="vizdoom", size=SIZE))
    assert_fails(root, capsys, "episodes", None, "dataset is empty")
    (root / "episodes").mkdir()
    assert_fails(root, capsys, "episodes", None, "no episodes")


def test_all_problems_are_collected(tmp_path):
    root = make_dataset(tmp_path / "ds")
    for i in (0, 2):
        path = episode_path(root, i)
        path.write_bytes(path.read_bytes()[:100])
    report = validate_dataset(root)
    assert [Path(p.path).name for p in report.errors] == ["ep_000000.npz", "ep_000002.npz"]
    assert report.valid_episodes == 1 and report.frames == 120
    with pytest.raises(DataError, match=r"ep_000000\.npz.*\(and 1 more problem\)"):
        report.raise_for_errors()


# ---------------------------------------------------------------------------------------------- info


def test_dataset_info_counts(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds")
    info = dataset_info(root)
    assert (info["env"], info["scenario"], info["size"]) == ("vizdoom", "test", [12, 16])
    assert (info["episodes"], info["frames"]) == (3, 310)
    assert info["length"] == {"min": 90, "mean": pytest.approx(310 / 3), "max": 120}
    eps = [make_episode(t, seed=i) for i, t in enumerate((100, 120, 90))]
    move = np.bincount(np.concatenate([e.move for e in eps]), minlength=10)
    assert info["actions"]["move"]["counts"] == move.tolist()
    assert info["actions"]["move"]["uncertain_share"] == pytest.approx(move[9] / move.sum())
    assert sum(info["actions"]["interact"]["counts"]) == 307
    assert info["pose_extent"]["x"] == pytest.approx([900.0, 1100.0], abs=0.5)
    expected = revisit_stats([e.pose for e in eps])["revisit_fraction"]
    assert info["revisits"]["revisit_fraction"] == pytest.approx(expected) and expected > 0.1
    assert info["has_pose"] and not info["has_depth"] and info["extras"] == []

    assert main(["data", "info", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 310
    assert main(["data", "info", str(root)]) == 0
    table = capsys.readouterr().out
    assert "length min/mean/max  90 / 103.3 / 120" in table and "revisit frames" in table
    assert format_info(info) == table.rstrip("\n")


def test_info_without_poses(tmp_path):
    info = dataset_info(make_dataset(tmp_path / "ds", lengths=(20,), pose=False))
    assert info["pose_extent"] is None and info["revisits"] is None and info["frames"] == 20
    assert "revisit" not in format_info(info)


def test_info_on_missing_folder_exits_2(tmp_path, capsys):
    assert main(["data", "info", str(tmp_path / "nope")]) == 2
    assert "not a dataset folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ revisits


def test_circle_revisits_exactly_where_expected():
    pose = circle_pose(200)
    mask, source = find_revisits(pose, min_gap=50, dist=64.0, angle_deg=30.0)
    # 9 deg of yaw per frame: matches are s = t - 80 + d with |d| <= 3 (one lap is too recent)
    assert np.array_equal(mask, np.arange(200) >= 77)
    t = np.arange(200)
    assert np.array_equal(source[80:120], t[80:120] - 80)  # closest = same phase two laps back
    assert np.all((t[120:] - source[120:]) % PERIOD == 0)  # later: an exact match on some earlier lap
    assert np.all(source[~mask] == -1)
    _, latest = find_revisits(pose, 50, 64.0, 30.0, pick="latest")
    assert np.array_equal(latest[120:], np.arange(120, 200) - 77)
    _, earliest = find_revisits(pose, 50, 64.0, 30.0, pick="earliest")
    assert np.all((np.arange(200)[mask] - earliest[mask]) >= 77) and np.all(earliest[mask] < 43)


def test_revisit_rules():
    line = np.zeros((300, 3), np.float32)
    line[:, 0] = np.arange(300) * 30.0  # straight line: never back
    assert not find_revisits(line)[0].any()
    still = np.zeros((10, 3), np.float32)
    still[:, 2] = [179, -179] * 5  # same spot, yaw across the +-180 seam: 2 deg apart
    mask, source = find_revisits(still, min_gap=2, dist=1.0, angle_deg=5.0)
    assert mask.tolist() == [False] * 3 + [True] * 7 and source[3] == 0
    turned = still.copy()
    turned[:, 2] = [0, 90] * 5
    assert find_revisits(turned, 2, 1.0, 30.0)[0].sum() == 6  # same heading every 2nd frame
    assert find_revisits(turned, 2, 1.0, None)[0].sum() == 7  # heading ignored
    assert default_revisit_dist("crafter") == 1.0 and default_revisit_dist("vizdoom") == 64.0


def test_revisit_bad_input():
    with pytest.raises(DataError, match="pose"):
        find_revisits(np.zeros((10, 4)))
    with pytest.raises(DataError, match="NaN"):
        find_revisits(np.full((10, 5), np.nan))
    with pytest.raises(ConfigError, match="dist"):
        find_revisits(np.zeros((10, 5)), dist=0)
    with pytest.raises(ConfigError, match="pick"):
        find_revisits(np.zeros((10, 5)), pick="best")


def test_revisit_stats_aggregates():
    stats = revisit_stats([circle_pose(200), circle_pose(50)], min_gap=50)
    assert stats["num_frames"] == 250 and stats["num_revisit_frames"] == 123
    assert stats["revisit_fraction"] == pytest.approx(123 / 250)
    assert stats["per_episode"] == [pytest.approx(123 / 200), 0.0]
    assert stats["episodes_with_revisits"] == 1 and len(stats["masks"]) == 2
    assert 77 <= stats["mean_revisit_gap"] <= 160
    assert revisit_stats([])["revisit_fraction"] == 0.0
