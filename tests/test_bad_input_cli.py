"""Bad inputs that used to end in a traceback: each is one stderr line and exit code 2 from the CLI.

Every case runs through ``infworld.cli.main`` and checks the exit code, that stderr is a single
line naming the file, field or value at fault, and that nothing already on disk was modified (no
file replaced, no stray file created). All of them fail before a model is loaded, so no model is
trained or read here.
"""

from __future__ import annotations

import socket
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.cli import main
from infworld.data.episode import episode_path


def snapshot(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every file (mtime, bytes) and folder (None) under ``root``."""
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else None for p in root.rglob("*")}


def fails(capsys, argv: list[str], *named: str, root: Path | None = None) -> str:
    """Run ``infworld argv``: exit 2, one stderr line containing every string of ``named``, and no
    change under ``root``. Returns the line."""
    before = snapshot(root) if root is not None else None
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"infworld {argv[0]}: error: "), lines[0]
    for text in named:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in captured.err and "ffmpeg version" not in captured.err
    if root is not None:
        assert snapshot(root) == before
    return lines[0]


def read_only_dir(tmp_path: Path) -> Path:
    """A folder nobody can create files in: a 0555 folder, or /sys where root ignores the mode."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for folder in (ro, Path("/sys")):
        try:
            (folder / ".infworld-test-probe").touch()
        except OSError:
            return folder
        (folder / ".infworld-test-probe").unlink()
    pytest.skip("no read-only folder here (root ignores the mode, and /sys is writable)")


@pytest.fixture
def work(tmp_path):
    """A dataset, a frames array to import, a plain file and a folder, all pre-existing."""
    data = make_dataset(tmp_path / "data", episodes=2, length=12)
    np.save(tmp_path / "frames.npy", np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("keep me\n")
    (tmp_path / "folder").mkdir()
    return tmp_path, data


def damage(path: Path, at: float) -> None:
    """Overwrite 4 bytes ``at`` bytes (or that fraction of the way) into the compressed frames of an
    episode file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("frames.npy")
    offset = info.header_offset
    at = int(at * info.compress_size) if at < 1 else int(at)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[offset + 26 : offset + 30])  # the local header's own
    start = offset + 30 + name_len + extra_len
    raw[start + at : start + at + 4] = b"\xde\xad\xbe\xef"
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("out", ["file", "under_file", "read_only"])
def test_unwritable_out_folder(work, capsys, out):
    tmp, data = work
    target = {"file": tmp / "notes.txt", "under_file": tmp / "notes.txt" / "ds",
              "read_only": (read_only_dir(tmp) if out == "read_only" else tmp) / "ds"}[out]
    why = "cannot write in" if out == "read_only" else "notes.txt"
    fails(capsys, ["data", "import", "--frames", str(tmp / "frames.npy"), "--out", str(target)],
          str(target), why, root=tmp)
    fails(capsys, ["rollout", "--model", "doom-tiny-world", "--episode", str(data), "--context", "2",
                   "--frames", "2", "--out", str(target), "--no-progress"], str(target), why, root=tmp)
    fails(capsys, ["data", "label", str(data), "--out", str(target)], str(target), why, root=tmp)
    video = target if out == "file" else target / "walk.mp4"
    if out == "file":  # an existing non-video file is refused by its name, before anything else
        why = "must end in .mp4"
    fails(capsys, ["play", "--headless", "--frames", "8", "--out", str(video)], str(video), why, root=tmp)


def test_headless_video_name_must_be_an_mp4_file(work, capsys):
    tmp, _ = work
    fails(capsys, ["play", "--headless", "--frames", "8", "--out", str(tmp / "w.txt")],
          "w.txt", "must end in .mp4", root=tmp)
    fails(capsys, ["play", "--headless", "--frames", "8", "--out", str(tmp / "folder")],
          "folder", "is a folder", root=tmp)
    fails(capsys, ["play", "--headless", "--frames", "8", "--out", str(tmp / "new") + "/"],
          "new/", "is a folder", root=tmp)
    fails(capsys, ["play", "--make-starts", "collect", "--out", str(tmp / "folder")],
          "folder", "ending in .npz", root=tmp)


@pytest.mark.parametrize("at", [5, 40, 0.5])
def test_episode_with_bytes_overwritten_early(work, capsys, at):
    tmp, data = work
    path = episode_path(data, 0)
    damage(path, at)
    name = str(path)
    fails(capsys, ["data", "validate", str(data)], name, "corrupt or truncated", root=tmp)
    if at >= 1:  # info reads the array headers, not the frames: damage further in is validate's job
        fails(capsys, ["data", "info", str(data)], name, "corrupt or truncated", root=tmp)
    fails(capsys, ["data", "label", str(data), "--out", str(tmp / "relabeled")], name, "corrupt or truncated",
          root=tmp)
    fails(capsys, ["rollout", "--model", "doom-tiny-world", "--episode", f"{data}:0", "--context", "2",
                   "--frames", "2", "--out", str(tmp / "r"), "--no-progress"], name, "corrupt or truncated",
          root=tmp)


def test_play_port_out_of_range_or_taken(work, capsys):
    tmp, _ = work
    fails(capsys, ["play", "--port", "99999", "--no-browser"], "--port", "99999", root=tmp)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        capsys.readouterr()
        assert main(["play", "--port", str(port), "--host", "127.0.0.1", "--no-browser"]) == 2
        captured = capsys.readouterr()
    assert captured.out == ""  # no "open http://..." before the failure
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0], captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda(work, capsys):
    tmp, data = work
    fails(capsys, ["rollout", "--model", "doom-tiny-world", "--episode", str(data), "--context", "2",
                   "--frames", "2", "--out", str(tmp / "r"), "--device", "cuda", "--no-progress"],
          "--device cuda", "CUDA is not available", root=tmp)
    fails(capsys, ["play", "--headless", "--frames", "8", "--out", str(tmp / "w.mp4"), "--device", "cuda"],
          "--device cuda", root=tmp)
    fails(capsys, ["rollout", "--model", "doom-tiny-world", "--episode", str(data), "--context", "2",
                   "--frames", "2", "--out", str(tmp / "r"), "--device", "gpu", "--no-progress"],
          "--device 'gpu'", "not a torch device", root=tmp)


def test_non_video_mp4(work, capsys):
    tmp, _ = work
    (tmp / "clip.mp4").write_bytes(b"this is not a video\n" * 10)
    line = fails(capsys, ["data", "import", "--frames", str(tmp / "clip.mp4"), "--out", str(tmp / "mine")],
                 "clip.mp4", "cannot decode video", root=tmp)
    assert len(line) < 300


@pytest.mark.parametrize("flag", ["--budget", "--window"])
def test_zero_budget_names_the_flag_typed(work, capsys, flag):
    tmp, data = work
    line = fails(capsys, ["rollout", "--model", "doom-tiny-world", "--episode", str(data), "--context", "2",
                          "--frames", "2", "--out", str(tmp / "r"), flag, "0", "--no-progress"],
                 f"{flag}: expected an integer >= 1, got 0", root=tmp)
    other = "--window" if flag == "--budget" else "--budget"
    assert other not in line
