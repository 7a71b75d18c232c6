"""``infworld rollout`` end to end: tiny dataset -> train -> export -> rollout, and bad inputs."""

from __future__ import annotations

import json
import shutil

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.cli import main
from infworld.cli.rollout import action_schedule, parse_episode


def train_and_export(recipe: str, data, run, model, *overrides: str) -> None:
    """`infworld train` a tiny recipe on ``data`` and `infworld export` it; both must succeed."""
    assert main(["train", "--recipe", recipe, "--set", f"data.root={data}", *overrides,
                 "--out", str(run), "--no-progress"]) == 0
    assert main(["export", str(run), "--out", str(model)]) == 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A dataset, a trained + exported tiny world model, and a tiny tokenizer export."""
    base = tmp_path_factory.mktemp("rollout_cli")
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_dataset(base / "data")
        train_and_export("tiny-test-world", data, base / "run", base / "model", "train.steps=6")
        train_and_export("tiny-test-tokenizer", data, base / "tok_run", base / "tok",
                         "train.steps=3", "train.eval_every=0", "train.ckpt_every=0")
    finally:
        torch.set_num_threads(prev)
    return {"base": base, "data": data, "model": base / "model", "tok": base / "tok"}


def rollout_args(setup, out, *extra: str, model=None, episode=None) -> list[str]:
    return [
        "rollout",
        "--model",
        str(model or setup["model"]),
        "--episode",
        episode or f"{setup['data']}:2",
        "--context",
        "4",
        "--frames",
        "30",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_rollout_end_to_end_past_the_episode_end(setup, tmp_path):
    out = tmp_path / "r"
    assert main(rollout_args(setup, out, "--chunk", "3", "--steps", "2", "--sampler", "heun")) == 0
    gen = np.load(out / "generated.npz")["frames"]
    assert gen.shape == (30, 32, 32, 3) and gen.dtype == np.uint8
    report = json.loads((out / "rollout.json").read_text())
    assert report["frames"] == 30 and report["seconds"] > 0 and report["fps"] > 0
    assert report["peak_rss_bytes"] > 10**6
    assert report["chunk"] == 3 and report["sampler"]["name"] == "heun" and report["sampler"]["steps"] == 2
    assert len(report["psnr"]) == report["frames_with_ground_truth"] == 24 - 4  # truth ends with the episode
    assert all(0 < p <= 100 for p in report["psnr"])
    mem = report["memory_state_bytes"]
    assert [m[0] for m in mem] == list(range(2, 30, 3))  # last generated frame of each chunk
    assert len({m[1] for m in mem}) == 1 and mem[0][1] > 0  # flat
    video = imageio.mimread(out / "video.mp4")
    assert len(video) == 30 and video[0].shape[1] == 2 * (2 * 32 + 2)  # generated | truth, scaled x2
    assert sorted(p.name for p in out.iterdir()) == ["generated.npz", "rollout.json", "video.mp4"]
    # the same seed gives the same frames
    again = tmp_path / "again"
    assert main(rollout_args(setup, again, "--chunk", "3", "--steps", "2", "--sampler", "heun")) == 0
    assert np.array_equal(np.load(again / "generated.npz")["frames"], gen)


def test_world_model_on_a_trained_tokenizer(setup, tmp_path):
    model = tmp_path / "model"
    train_and_export("tiny-test-world", setup["data"], tmp_path / "run", model,
                     "train.steps=2", f"model.tokenizer={setup['tok']}")
    cfg = json.loads((model / "config.json").read_text())["model_config"]
    assert (
        cfg["tokenizer"]["task"] == "tokenizer" and cfg["dit"]["in_channels"] == 4
    )  # tiny tokenizer latents
    out = tmp_path / "r"
    assert main(rollout_args(setup, out, "--frames", "5", model=model)) == 0
    assert np.load(out / "generated.npz")["frames"].shape == (5, 32, 32, 3)


def bad(setup, tmp_path, capsys, expected: str, **kw) -> None:
    out = tmp_path / "bad"
    extra = kw.pop("extra", ())
    assert main(rollout_args(setup, out, *extra, **kw)) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not out.exists() or not any(out.iterdir())  # nothing written, not even half


def test_bad_inputs_give_clear_errors_and_write_nothing(setup, tmp_path, capsys):
    bad(setup, tmp_path, capsys, "is a 'tokenizer' model", model=setup["tok"])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(setup["model"], corrupt)
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    bad(setup, tmp_path, capsys, "model.safetensors", model=corrupt)
    bad(setup, tmp_path, capsys, "fewer than --context 40", extra=("--context", "40"))
    bad(setup, tmp_path, capsys, "episode index 7 out of range", episode=f"{setup['data']}:7")
    wide = make_dataset(tmp_path / "wide", episodes=1, vocab=("none", "use", "open"), interact_max=2, seed=3)
    bad(
        setup,
        tmp_path,
        capsys,
        "[interact_vocab]: the actions are in synthetic's action space (3 interact ids: none, use, open) but "
        "the model was trained on an action space (2 interact ids: none, use)",
        episode=str(wide),
    )
    small = make_dataset(tmp_path / "small", episodes=1, size=16)
    bad(setup, tmp_path, capsys, "trained on (32, 32)", episode=str(small))
    bad(setup, tmp_path, capsys, "unknown memory 'nope'", extra=("--memory", "nope"))
    bad(setup, tmp_path, capsys, "local window 99", extra=("--window", "99"))
    bad(setup, tmp_path, capsys, "--frames: expected an integer >= 1", extra=("--frames", "0"))


def test_episode_spec_and_action_continuation():
    assert parse_episode("data/doom:3") == ("data/doom", 3)
    assert parse_episode("data/doom") == ("data/doom", 0)
    assert parse_episode("C:data") == ("C:data", 0)
    acts = {"move": np.array([1, 2, 3]), "view": np.array([4, 5, 6])}
    cyc = action_schedule(acts, start=1, count=6, mode="cycle", seed=0)
    assert cyc["move"].tolist() == [2, 3, 1, 2, 3, 1]
    rnd = action_schedule(acts, start=1, count=40, mode="random", seed=0)
    assert rnd["move"][:2].tolist() == [2, 3] and set(rnd["move"][2:].tolist()) <= {1, 2, 3}
    assert rnd["move"].tolist() == action_schedule(acts, 1, 40, "random", 0)["move"].tolist()
