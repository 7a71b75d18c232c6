"""The inverse dynamics model of the bench: it learns visible actions, exports, loads, refuses junk."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infworld.bench.idm import (
    IDM,
    IDMConfig,
    IDMNet,
    _mirror_move,
    _mirror_view,
    accuracy,
    load_idm,
    train_idm,
)
from infworld.cli import main
from infworld.data.action_schema import UNCERTAIN, encode_move, encode_view
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.errors import CheckpointError, ConfigError, DataError

TINY = IDMConfig(size=(32, 32), channels=(16, 16), hidden=32)


def shifting_dataset(root, episodes: int = 4, length: int = 60, size: int = 32, seed: int = 0):
    """A blocky texture that ``move`` translates by 4 px (forward = down the rows, right = along the
    columns) and ``view`` brightens or darkens: the action is visible in every pair of frames."""
    rng = np.random.default_rng(seed)
    write_meta(root, DatasetMeta(env="synthetic", size=(size, size), has_pose=False))
    tex = rng.integers(0, 256, (size // 4, size // 4, 3)).repeat(4, 0).repeat(4, 1).astype(np.int16)
    for e in range(episodes):
        move = rng.choice([1, 3, 4, 5, 7], length - 1)  # back, left, still, right, forward
        view = rng.choice([1, 4, 7], length - 1)  # yaw left, none, right
        y = x = b = 0
        frames = []
        for t in range(length):
            if t:
                y += 4 * (move[t - 1] // 3 - 1)
                x += 4 * (move[t - 1] % 3 - 1)
                b = int(np.clip(b + 30 * (view[t - 1] // 3 - 1), -90, 90))
            frames.append(np.clip(np.roll(tex, (y, x), (0, 1)) + b, 0, 255).astype(np.uint8))
        ep = Episode(np.stack(frames), move, view, np.zeros(length - 1, np.int64))
        write_episode(episode_path(root, e), ep)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("idm")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = shifting_dataset(base / "data")
        meta = train_idm(data, base / "idm", steps=150, seed=0, batch_size=32, lr=3e-3, config=TINY,
                         progress=False)
    finally:
        torch.set_num_threads(prev)
    return {"base": base, "data": data, "out": base / "idm", "meta": meta}


def test_idm_learns_visible_actions_and_records_heldout_accuracy(trained):
    meta = trained["meta"]
    acc, base = meta["heldout_accuracy"], meta["heldout_majority_baseline"]
    assert acc["move"] >= base["move"] + 0.25  # well above always guessing the most common move
    assert meta["train"]["heldout_episodes"] == 1 and meta["train"]["steps"] == 150
    on_disk = json.loads((trained["out"] / "config.json").read_text())
    assert on_disk["heldout_accuracy"] == acc and on_disk["format"] == "infworld-idm"
    assert (trained["out"] / "model.safetensors").stat().st_size < 2_000_000


def test_export_round_trip_gives_the_same_predictions(trained):
    idm = load_idm(trained["out"])
    assert idm.size == (32, 32) and idm.meta["heldout_accuracy"] == trained["meta"]["heldout_accuracy"]
    frames = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    move, view = idm.predict(frames)
    assert move.shape == view.shape == (6,) and move.max() < 9 and view.max() < 9
    again = load_idm(str(trained["out"]))
    assert all(np.array_equal(a, b) for a, b in zip(again.predict(frames), (move, view), strict=True))
    # other frame sizes are resized to the IDM's
    assert idm.predict(np.zeros((3, 64, 64, 3), np.uint8))[0].shape == (2,)


def test_mirrored_labels_swap_right_and_yaw_only():
    f, r = np.meshgrid([-1, 0, 1], [-1, 0, 1])
    ids = encode_move(f.ravel(), r.ravel())
    assert np.array_equal(_mirror_move(ids), encode_move(f.ravel(), -r.ravel()))
    assert np.array_equal(_mirror_view(encode_view(f.ravel(), r.ravel())), encode_view(-f.ravel(), r.ravel()))
    assert _mirror_move(np.array([UNCERTAIN]))[0] == UNCERTAIN


def test_accuracy_ignores_uncertain_labels():
    assert accuracy(np.array([1, 2, 3]), np.array([1, UNCERTAIN, 0])) == 0.5
    assert accuracy(np.array([1]), np.array([UNCERTAIN])) is None


def test_bad_inputs_raise_typed_errors(trained, tmp_path):
    idm = IDM(IDMNet(TINY))
    with pytest.raises(DataError, match="uint8"):
        idm.predict(np.zeros((3, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="T >= 2"):
        idm.predict(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(CheckpointError, match="not found"):
        load_idm(tmp_path / "nothing-here")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "infworld-model"}))
    with pytest.raises(CheckpointError, match="not an inverse dynamics model"):
        load_idm(tmp_path / "other")
    with pytest.raises(ConfigError, match="divisible"):
        IDMConfig(size=(30, 30)).check()
    with pytest.raises(ConfigError, match="heldout"):
        train_idm(trained["data"], tmp_path / "x", steps=1, heldout=4, config=TINY, progress=False)


def test_cli_train_idm(trained, tmp_path, capsys):
    out = tmp_path / "cli_idm"
    assert main(["bench", "train-idm", "--data", str(trained["data"]), "--out", str(out),
                 "--train-steps", "2", "--no-progress"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out and (out / "model.safetensors").is_file()
    assert main(["bench", "train-idm", "--out", str(out)]) == 2  # no --data
    assert "--data" in capsys.readouterr().err
