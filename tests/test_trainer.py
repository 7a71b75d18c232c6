"""The generic trainer on the tiny tokenizer: learning, exact resume, checkpoints, export, CLI."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from infworld.cli import main
from infworld.data.episode import DatasetMeta, Episode, episode_path, write_episode, write_meta
from infworld.errors import CheckpointError, ConfigError
from infworld.models.loading import CONFIG, WEIGHTS, load_model
from infworld.train.checkpoint import LAST, load_checkpoint
from infworld.train.export import export_run
from infworld.train.logging import read_metrics
from infworld.train.recipe import load_recipe
from infworld.train.trainer import lr_factor, param_groups, train


def make_dataset(root: Path, n_episodes: int = 3, length: int = 20, size=(32, 32), seed: int = 0) -> Path:
    """Structured synthetic frames: a coloured background, moving stripes and a moving disc."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    write_meta(root, DatasetMeta(env="synthetic", size=size))
    for e in range(n_episodes):
        base = rng.uniform(40, 200, 3)
        frames = np.empty((length, h, w, 3), np.uint8)
        for t in range(length):
            disc = (xx - (2 * t + 5 * e) % w) ** 2 + (yy - (t + 3 * e) % h) ** 2 < (h // 5) ** 2
            for c in range(3):
                frames[t, :, :, c] = np.clip(0.6 * base[c] + 50 * np.sin(xx / (2 + c) + 0.4 * t) + 90 * disc,
                                             0, 255)
        ep = Episode(frames=frames, move=np.full(length - 1, 4), view=np.full(length - 1, 4),
                     interact=np.zeros(length - 1, np.int64),
                     pose=np.cumsum(rng.normal(size=(length, 5)), axis=0).astype(np.float32))
        write_episode(episode_path(root, e), ep)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "synth")




def recipe(dataset: Path, out: Path, *overrides: str):
    return load_recipe("tiny-test-tokenizer", [f"data.root={dataset}", f"train.out={out}", *overrides])


def losses(run: Path, name: str = "train/loss") -> dict[int, float]:
    return {r["step"]: r["value"] for r in read_metrics(run / "metrics.csv") if r["name"] == name}


def test_loss_goes_down_and_run_folder_is_complete(dataset, tmp_path):
    run = train(recipe(dataset, tmp_path / "run", "train.steps=30", "train.eval_every=15"), progress=False)
    curve = losses(run)
    assert sorted(curve) == [5, 10, 15, 20, 25, 30]
    assert curve[30] < 0.5 * curve[5], curve
    psnr = losses(run, "val/psnr")
    assert sorted(psnr) == [15, 30] and psnr[30] > psnr[15] > 8.0
    ck = load_checkpoint(run / "checkpoints" / LAST)
    assert ck["step"] == 30 and ck["samples_seen"]["per_rank"] == 30 * 8
    assert ck["recipe"]["name"] == "tiny-test-tokenizer" and ck["metrics"]["psnr"] == pytest.approx(psnr[30])
    assert (run / "checkpoints" / "step_0000020.pt").is_file()  # ckpt_every: 20
    assert json.loads((run / "recipe.json").read_text()) == ck["recipe"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 30 and summary["stop_reason"] == "reached train.steps"
    # lr follows the schedule: warmup 5 steps, cosine to 0.1 x at step 30
    lrs = losses(run, "train/lr")
    assert lrs[5] == pytest.approx(3e-3 * lr_factor(4, 5, 30, 0.1))
    assert lrs[30] == pytest.approx(3e-3 * lr_factor(29, 5, 30, 0.1))


def test_resume_is_exact(dataset, tmp_path):
    # latent noise makes the loss use the generator, so its state must be restored as well
    extra = ("train.steps=10", "train.eval_every=3", "train.ckpt_every=0", "train.log_every=1",
             "model.latent_noise=0.1")
    straight = train(recipe(dataset, tmp_path / "a", *extra), progress=False)
    half = train(recipe(dataset, tmp_path / "b", *extra), until_step=5, progress=False)
    assert load_checkpoint(half / "checkpoints" / LAST)["step"] == 5
    resumed = train(recipe(dataset, tmp_path / "b", *extra), resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoints" / LAST)
    b = load_checkpoint(resumed / "checkpoints" / LAST)
    assert a["step"] == b["step"] == 10
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["params"]:
        assert torch.equal(a["ema"]["params"][key], b["ema"]["params"][key]), key
    assert losses(straight) == losses(resumed)  # the resumed log has each step once, same values


def test_resume_guards(dataset, tmp_path):
    out = tmp_path / "run"
    train(recipe(dataset, out, "train.steps=2"), progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(recipe(dataset, out, "train.steps=2"), progress=False)
    with pytest.raises(CheckpointError, match=r"model\.channels: checkpoint 8 != recipe 16"):
        train(recipe(dataset, out, "train.steps=4", "model.channels=16"), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        train(recipe(dataset, tmp_path / "fresh", "train.steps=2"), resume=True, progress=False)
    # allowed changes: more steps
    train(recipe(dataset, out, "train.steps=3"), resume=True, progress=False)
    assert load_checkpoint(out / "checkpoints" / LAST)["step"] == 3
    (out / "checkpoints" / LAST).write_bytes((out / "checkpoints" / LAST).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        train(recipe(dataset, out, "train.steps=4"), resume=True, progress=False)


def test_time_budget_stops_cleanly(dataset, tmp_path):
    run = train(recipe(dataset, tmp_path / "run", "train.steps=1000", "train.max_minutes=1e-5"),
                progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 1 and "time budget" in summary["stop_reason"]
    assert load_checkpoint(run / "checkpoints" / LAST)["step"] == 1


def test_sigterm_stops_after_the_step_with_a_checkpoint(dataset, tmp_path, monkeypatch):
    from infworld.train.tasks.tokenizer import TokenizerTask

    calls = []
    original = TokenizerTask.loss

    def loss(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # as if the cluster preempted the job during step 3
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TokenizerTask, "loss", loss)
    before = signal.getsignal(signal.SIGTERM)
    run = train(recipe(dataset, tmp_path / "run", "train.steps=100"), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 3 and summary["stop_reason"] == "stopped by SIGTERM"
    assert load_checkpoint(run / "checkpoints" / LAST)["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is before


def test_export_and_load_model_round_trip(dataset, tmp_path):
    run = train(recipe(dataset, tmp_path / "run", "train.steps=6"), progress=False)
    state = load_checkpoint(run / "checkpoints" / LAST)
    frames = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    for weights in ("ema", "raw"):
        out = export_run(run, tmp_path / f"model-{weights}", weights=weights)
        model, config = load_model(out)
        assert (config["format"], config["version"], config["task"]) == ("infworld-model", 1, "tokenizer")
        assert config["trained_steps"] == 6 and "psnr" in config["metrics"] and config["weights"] == weights
        assert config["recipe"]["name"] == "tiny-test-tokenizer"
        assert not model.training
        # the same module rebuilt from the training checkpoint gives the same outputs
        from infworld.train.tasks.tokenizer import TokenizerTask

        ref = TokenizerTask.build_inference_model(config["model_config"])
        sd = dict(state["model"])
        if weights == "ema":
            sd.update(state["ema"]["params"])
            sd.update(state["ema"]["buffers"])
        ref.load_state_dict(sd)
        ref.eval()
        with torch.no_grad():
            torch.testing.assert_close(model.encode(frames), ref.encode(frames), rtol=0, atol=0)
            z = model.encode(frames)
            torch.testing.assert_close(model.decode(z), ref.decode(z), rtol=0, atol=0)
    # the exported (EMA) tokenizer carries exact latent statistics of the training frames
    from infworld.train.tasks.tokenizer import load_frame_pool

    model = load_model(tmp_path / "model-ema")[0]
    with torch.no_grad():
        z = model.encode(load_frame_pool(dataset, "train", 1, 10_000, (32, 32)))
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-3, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), correction=0), torch.ones(4), atol=1e-3, rtol=0)
    ema = load_model(tmp_path / "model-ema")[0].state_dict()
    raw = load_model(tmp_path / "model-raw")[0].state_dict()
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)  # EMA differs from the raw weights


def test_corrupt_and_mismatched_exports(dataset, tmp_path):
    run = train(recipe(dataset, tmp_path / "run", "train.steps=2"), progress=False)
    good = export_run(run, tmp_path / "good")

    def copy(name: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f in (WEIGHTS, CONFIG):
            (d / f).write_bytes((good / f).read_bytes())
        return d

    truncated = copy("truncated")
    (truncated / WEIGHTS).write_bytes((good / WEIGHTS).read_bytes()[:500])
    with pytest.raises(CheckpointError, match=f"{WEIGHTS}.*does not match"):
        load_model(truncated)
    unchecked = copy("unchecked")  # without the recorded hash, safetensors itself must fail cleanly
    cfg = json.loads((unchecked / CONFIG).read_text())
    del cfg["files"]
    (unchecked / CONFIG).write_text(json.dumps(cfg))
    (unchecked / WEIGHTS).write_bytes((good / WEIGHTS).read_bytes()[:500])
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_model(unchecked)
    other = copy("other")  # config of another architecture: the weights do not fit
    cfg = json.loads((other / CONFIG).read_text())
    cfg["model_config"]["channels"] = 16
    del cfg["files"]
    (other / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot load"):
        load_model(other)
    badtask = copy("badtask")
    cfg = json.loads((badtask / CONFIG).read_text())
    cfg["task"] = "painter"
    (badtask / CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="painter"):
        load_model(badtask)
    noconfig = copy("noconfig")
    (noconfig / CONFIG).unlink()
    with pytest.raises(CheckpointError, match=f"{CONFIG}: missing"):
        load_model(noconfig)
    for name, text in (("otherformat", json.dumps({"format": "infworld-idm"})), ("notjson", "{")):
        d = copy(name)
        (d / CONFIG).write_text(text)
        with pytest.raises(CheckpointError, match="not an infworld model export|cannot read"):
            load_model(d)
    with pytest.raises(CheckpointError, match="known models"):
        load_model("no-such-model")
    with pytest.raises(CheckpointError, match="no such run"):
        export_run(tmp_path / "nothing", tmp_path / "x")
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        export_run(bad_ckpt, tmp_path / "x")


def test_param_groups_skip_norms_biases_embeddings_and_frozen():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    model[3].requires_grad_(False)  # e.g. a frozen tokenizer inside the world model
    decay, no_decay = param_groups(model, 0.1)
    assert [p is model[1].weight for p in decay["params"]] == [True] and decay["weight_decay"] == 0.1
    expected = {id(model[0].weight), id(model[1].bias), id(model[2].weight), id(model[2].bias)}
    assert {id(p) for p in no_decay["params"]} == expected and no_decay["weight_decay"] == 0.0


def test_lr_schedule_shape():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 0, 10, 0.0) == pytest.approx(1.0)


def test_grad_checkpointing_reaches_the_model_config(dataset, tmp_path):
    run = train(recipe(dataset, tmp_path / "run", "train.steps=1", "train.grad_checkpointing=true"),
                progress=False)
    assert json.loads((run / "recipe.json").read_text())["model"]["grad_checkpointing"] is True


def test_cli_train_export_and_errors(dataset, tmp_path, capsys):
    out, model_dir = tmp_path / "run", tmp_path / "model"
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--set", f"data.root={dataset}", "train.steps=3",
                 "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints" / LAST)["step"] == 3
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--set", f"data.root={dataset}", "train.steps=4",
                 "--out", str(out), "--resume", "--no-progress"]) == 0
    assert main(["export", str(out), "--out", str(model_dir), "--weights", "raw"]) == 0
    assert json.loads((model_dir / CONFIG).read_text())["trained_steps"] == 4
    assert "exported tokenizer" in capsys.readouterr().out
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--dry-run", "--set", "train.steps=7"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["steps"] == 7
    assert main(["train", "--list"]) == 0
    assert "doom-tiny-tokenizer" in capsys.readouterr().out
    assert main(["train", "--recipe", "no-such-recipe"]) == 2
    assert "unknown recipe 'no-such-recipe'" in capsys.readouterr().err
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--set", "train.stpes=3"]) == 2
    assert "train.stpes" in capsys.readouterr().err
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--out", str(tmp_path / "x")]) == 2
    assert "data.root is empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "--out", str(model_dir)]) == 2


def test_tokenizer_task_rejects_bad_data(dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"image_size \(64, 64\).*\(32, 32\)"):
        train(recipe(dataset, tmp_path / "run", "model.image_size=[64, 64]"), progress=False)
    with pytest.raises(ConfigError, match="val_episodes"):
        train(recipe(dataset, tmp_path / "run2", "data.val_episodes=0"), progress=False)
