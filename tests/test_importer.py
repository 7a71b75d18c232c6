"""Importing users' own footage (video, image folder, array) with optional poses / actions CSVs."""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from infworld.cli import main
from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.data.episode import episode_path, list_episodes, read_episode, read_meta
from infworld.data.frames import resize_frames
from infworld.data.importer import import_episode, load_frames
from infworld.data.validate import validate_dataset
from infworld.errors import DataError


def gradient_frames(t_len: int, h: int, w: int) -> np.ndarray:
    """(T, H, W, 3) uint8 frames whose brightness encodes the frame index (order is checkable)."""
    frames = np.zeros((t_len, h, w, 3), np.uint8)
    frames[..., 0] = (np.arange(t_len) * (200 // t_len))[:, None, None]
    frames[..., 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, None, :]
    return frames


def write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def poses_csv(path: Path, t_len: int) -> Path:
    """A camera walking forward along +x (yaw 0), level."""
    return write_csv(path, "frame,x,y,z,yaw,pitch", [f"{t},{10.0 * t},0,0,0,0" for t in range(t_len)])


def test_import_video(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, gradient_frames(12, 48, 64), plugin="FFMPEG", fps=10)
    out = tmp_path / "ds"
    summary = import_episode(video, out, size=32)
    assert summary["frames"] == 12 and summary["source"] == "video" and summary["original_size"] == [48, 64]
    meta = read_meta(out)
    assert meta.size == (32, 32) and meta.fps == 10.0 and not meta.has_pose and meta.env == "custom"
    ep = read_episode(episode_path(out, 0), meta)
    assert ep.frames.shape == (12, 32, 32, 3) and ep.pose is None
    assert np.all(ep.move == UNCERTAIN) and np.all(ep.view == UNCERTAIN) and not ep.interact.any()
    red = ep.frames[..., 0].mean(axis=(1, 2))
    assert np.all(np.diff(red) > 0)  # frames kept in order (lossy codec, so compare trends)
    assert validate_dataset(out).ok
    capsys.readouterr()
    assert main(["data", "import", "--frames", str(video), "--out", str(out)]) == 0  # appends
    assert "appended to" in capsys.readouterr().out
    assert [p.name for p in list_episodes(out)] == ["ep_000000.npz", "ep_000001.npz"]


def test_import_png_folder_natural_order(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    frames = gradient_frames(11, 20, 30)
    for t, f in enumerate(frames):  # f0 .. f10: plain string order would put f10 before f2
        cv2.imwrite(str(folder / f"f{t}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    summary = import_episode(folder, tmp_path / "ds", size=(16, 24), env="myrobot")
    assert summary["source"] == "images" and summary["frames"] == 11
    ep = read_episode(episode_path(tmp_path / "ds", 0))
    assert np.array_equal(ep.frames, resize_frames(frames, (16, 24)))  # lossless, RGB order kept
    assert read_meta(tmp_path / "ds").env == "myrobot"


def test_import_mixed_size_folder_fails(tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    for t in range(4):
        size = (20, 30) if t != 2 else (20, 31)
        cv2.imwrite(str(folder / f"{t:03d}.png"), np.zeros((*size, 3), np.uint8))
    with pytest.raises(DataError, match=r"002\.png \[frames\]: image size \(H, W\) = \(20, 31\) differs from "
                                        r"\(20, 30\) of 000\.png"):
        import_episode(folder, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()  # nothing written on failure


def test_import_arrays(tmp_path):
    frames = gradient_frames(9, 40, 40)
    np.save(tmp_path / "f.npy", frames)
    np.savez(tmp_path / "f.npz", frames=frames, other=np.zeros(3))
    np.savez(tmp_path / "only.npz", clip=frames)
    np.savez(tmp_path / "ambiguous.npz", a=frames, b=frames)
    for name in ("f.npy", "f.npz", "only.npz"):
        loaded, info = load_frames(tmp_path / name, (16, 16))
        assert np.array_equal(loaded, resize_frames(frames, (16, 16))) and info["original_size"] == [40, 40]
    with pytest.raises(DataError, match=r"ambiguous\.npz.*'frames' array or a single array"):
        load_frames(tmp_path / "ambiguous.npz", (16, 16))
    np.save(tmp_path / "float.npy", frames.astype(np.float32))
    with pytest.raises(DataError, match=r"float\.npy \[frames\]: expected \(T, H, W, 3\) uint8"):
        load_frames(tmp_path / "float.npy", (16, 16))
    with pytest.raises(DataError, match="unsupported frames input"):
        load_frames(write_csv(tmp_path / "x.txt", "a", []), (16, 16))


def test_import_with_actions_csv(tmp_path):
    np.save(tmp_path / "f.npy", gradient_frames(5, 16, 16))
    # rows in any order; a row for the last frame (4) is accepted and ignored
    rows = ["0,1,0,0,0,0", "1,1,-1,1,0,2", "3,0,0,0,-1,0", "2,-1,1,-1,1,1", "4,0,0,0,0,0"]
    actions = write_csv(tmp_path / "a.csv", "frame,forward,right,yaw,pitch,interact", rows)
    summary = import_episode(tmp_path / "f.npy", tmp_path / "ds", actions=actions, size=16)
    assert summary["actions_from"] == "csv"
    ep = read_episode(episode_path(tmp_path / "ds", 0))
    assert ep.move.tolist() == encode_move([1, 1, -1, 0], [0, -1, 1, 0]).tolist()
    assert ep.view.tolist() == encode_view([0, 1, -1, 0], [0, 0, 1, -1]).tolist()
    assert ep.interact.tolist() == [0, 2, 1, 0]
    assert read_meta(tmp_path / "ds").interact_vocab == ["none", "interact_1", "interact_2"]
    bad = write_csv(tmp_path / "bad.csv", "frame,forward,right,yaw,pitch", ["0,1,0,0,0", "1,2,0,0,0",
                                                                           "2,0,0,0,0", "3,0,0,0,0"])
    with pytest.raises(DataError, match=r"bad\.csv \[forward\]: row 2 \(line 3\): 2 is not a tri-state"):
        import_episode(tmp_path / "f.npy", tmp_path / "ds2", actions=bad)


def test_import_poses_label_actions(tmp_path):
    np.save(tmp_path / "f.npy", gradient_frames(30, 16, 16))
    summary = import_episode(tmp_path / "f.npy", tmp_path / "ds", poses=poses_csv(tmp_path / "p.csv", 30))
    assert summary["actions_from"] == "poses" and summary["has_pose"]
    ep = read_episode(episode_path(tmp_path / "ds", 0))
    assert read_meta(tmp_path / "ds").has_pose
    assert np.allclose(ep.pose[:, 0], 10.0 * np.arange(30)) and not ep.pose[:, 1:].any()
    assert np.all(ep.move == encode_move(1, 0)) and np.all(ep.view == encode_view(0, 0))  # walking forward
    # appending to a dataset with poses needs poses too
    with pytest.raises(DataError, match=r"meta\.json \[has_pose\]"):
        import_episode(tmp_path / "f.npy", tmp_path / "ds")


@pytest.mark.parametrize("header, edit, match", [
    ("frame,x,y,yaw,pitch", {}, r"\[z\]: missing column"),
    ("frame,x,y,z,yaw,pitch", {3: "3,30,0,nan,0,0"}, r"\[z\]: row 4 \(line 5\): nan is not a finite"),
    ("frame,x,y,z,yaw,pitch", {2: "2,20,,0,0,0"}, r"\[y\]: row 3 \(line 4\): empty cell"),
    ("frame,x,y,z,yaw,pitch", {1: "1,ten,0,0,0,0"}, r"\[x\]: row 2 \(line 3\): not a number: 'ten'"),
    ("frame,x,y,z,yaw,pitch", {5: "3,50,0,0,0,0"}, r"\[frame\]: row 6 \(line 7\): frame 3 repeats row 4"),
    ("frame,x,y,z,yaw,pitch", {7: None}, r"\[frame\]: 7 rows, expected 8"),
])
def test_bad_poses_csv(tmp_path, header, edit, match):
    """Each CSV error names the file, the column and the row."""
    np.save(tmp_path / "f.npy", gradient_frames(8, 16, 16))
    lines = [f"{t},{10 * t},0,0,0,0" for t in range(8)]
    for i, row in edit.items():
        lines[i] = row
    csv_path = write_csv(tmp_path / "p.csv", header, [r for r in lines if r is not None])
    match = r"p\.csv " + match
    with pytest.raises(DataError, match=match):
        import_episode(tmp_path / "f.npy", tmp_path / "ds", poses=csv_path)
    assert not (tmp_path / "ds").exists()


def test_append_compatibility(tmp_path):
    np.save(tmp_path / "f.npy", gradient_frames(6, 16, 16))
    import_episode(tmp_path / "f.npy", tmp_path / "ds", size=16, env="cam")
    with pytest.raises(DataError, match=r"\[size\]: dataset frame size \(16, 16\) differs from requested"):
        import_episode(tmp_path / "f.npy", tmp_path / "ds", size=32)
    with pytest.raises(DataError, match=r"\[env\]"):
        import_episode(tmp_path / "f.npy", tmp_path / "ds", env="other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="not a dataset"):
        import_episode(tmp_path / "f.npy", tmp_path / "junk")


def test_cli_import_errors_and_label(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "f.npy", gradient_frames(6, 16, 16))
    bad = write_csv(tmp_path / "p.csv", "frame,x,y,z,yaw", [f"{t},0,0,0,0" for t in range(6)])
    assert main(["data", "import", "--frames", str(tmp_path / "f.npy"), "--poses", str(bad),
                 "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "p.csv [pitch]: missing column" in err
    assert main(["data", "import", "--frames", str(tmp_path / "f.npy"), "--size", "12x20",
                 "--out", str(tmp_path / "ds")]) == 0
    assert read_meta(tmp_path / "ds").size == (12, 20)
    with pytest.raises(SystemExit):
        main(["data", "import", "--frames", "x", "--out", "y", "--size", "big"])

    # `data label` end to end with the real labeler: a camera walking forward along +x
    np.save(tmp_path / "walk.npy", gradient_frames(30, 16, 16))
    walk = write_csv(tmp_path / "walk.csv", "frame,x,y,z,yaw,pitch",
                     [f"{t},{10.0 * t + 0.1 * (t % 3)},{0.1 * (t % 2)},0,0,0" for t in range(30)])
    assert main(["data", "import", "--frames", str(tmp_path / "walk.npy"), "--poses", str(walk),
                 "--out", str(tmp_path / "walk")]) == 0
    capsys.readouterr()
    assert main(["data", "label", str(tmp_path / "walk"), "--out", str(tmp_path / "walk2"),
                 "--noise-std", "0.5,0.5"]) == 0
    ep = read_episode(episode_path(tmp_path / "walk2", 0))
    assert np.mean(ep.move == 7) > 0.9  # forward +1, right 0
    assert main(["data", "label", str(tmp_path / "walk"), "--out", str(tmp_path / "walk2")]) == 2
    assert "walk2" in capsys.readouterr().err
