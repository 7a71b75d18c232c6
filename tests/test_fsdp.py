"""FSDP2 on 2 CPU processes (gloo): equal to one process on the same global batch, exact DCP resume,
bf16 compute with activation checkpointing, and a clear error without torchrun.

One spawn of 2 processes runs every distributed training of this file in turn (process start-up
costs more than the tiny trainings); the tests then read the run folders.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from synthetic import make_dataset
from test_ddp import free_port
from torch import nn

from infworld.cli import main
from infworld.errors import ConfigError
from infworld.train import dcp_checkpoint as dcp_ckpt
from infworld.train.checkpoint import LAST, load_checkpoint
from infworld.train.distributed import init_distributed, shutdown
from infworld.train.logging import read_metrics
from infworld.train.recipe import OptimConfig, Recipe, TrainConfig, load_recipe
from infworld.train.task import register_task
from infworld.train.trainer import Trainer, train

WORLD = 2
STEPS = 6
BLOCK_CALLS = {"train": 0, "weight_dtype": ""}  # per process: block forwards with grad, and their dtype


@dataclass
class BlockNetConfig:
    dim: int = 6
    hidden: int = 12
    depth: int = 2
    out: int = 3  # odd: FSDP pads the uneven dim-0 shards of the head
    noise: float = 0.0  # input noise drawn from the loss generator (makes exact resume depend on it)


class Block(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            BLOCK_CALLS["train"] += 1
            BLOCK_CALLS["weight_dtype"] = str(self.fc1.weight.dtype)
        return h + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(h))))


class BlockNet(nn.Module):
    """A frozen encoder used outside ``forward`` (like WorldNet's tokenizer), then trainable blocks."""

    def __init__(self, c: BlockNetConfig):
        super().__init__()
        self.encoder = nn.Linear(c.dim, c.dim)
        self.encoder.requires_grad_(False)
        self.inp = nn.Linear(c.dim, c.hidden)
        self.blocks = nn.ModuleList(Block(c.hidden) for _ in range(c.depth))
        self.head = nn.Sequential(nn.LayerNorm(c.hidden), nn.Linear(c.hidden, c.out))
        self.register_buffer("scale", torch.ones(c.out))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.inp(z)
        for block in self.blocks:
            h = block(h)
        return self.head(h) * self.scale


class BlockTask:
    """Regression whose per-rank samples are global samples (see test_ddp.RegressionTask)."""

    def __init__(self, config: BlockNetConfig, recipe: Recipe):
        self.config = config
        self.weights = np.random.default_rng(5).normal(size=(config.dim, config.out))

    def build_model(self) -> nn.Module:
        return BlockNet(self.config)

    def batches(self, split, batch_size, seed, rank, world_size, start_sample=0):
        i = start_sample
        while True:
            idx = [(j // batch_size) * batch_size * world_size + rank * batch_size + j % batch_size
                   for j in range(i, i + batch_size)]
            rngs = [np.random.default_rng([11, g]) for g in idx]
            xs = np.stack([r.normal(size=self.config.dim) for r in rngs])
            yield {"x": torch.tensor(xs, dtype=torch.float32),
                   "y": torch.tensor(np.tanh(xs @ self.weights), dtype=torch.float32)}
            i += batch_size

    def loss(self, model, batch, generator=None):
        noise = torch.randn(batch["x"].shape, generator=generator) * self.config.noise
        pred = model(model.encode(batch["x"] + noise))
        return (pred.float() - batch["y"]).pow(2).mean(), {}

    def evaluate(self, model, max_batches=8):
        batch = next(self.batches("val", 16, 0, 0, 1, start_sample=10_000))
        return {"mse": float((model(model.encode(batch["x"])).float() - batch["y"]).pow(2).mean())}

    def export_config(self):
        return dict(vars(self.config))

    @classmethod
    def build_inference_model(cls, model_config):
        return BlockNet(BlockNetConfig(**model_config))


register_task("test-fsdp-blocks", BlockNetConfig, BlockTask)


def make_recipe(out: str, batch_size: int, parallel: str = "fsdp", noise: float = 0.0, **train) -> Recipe:
    return Recipe(name="fsdp", task="test-fsdp-blocks", model=BlockNetConfig(noise=noise),
                  optim=OptimConfig(lr=2e-2, warmup_steps=2, grad_clip=0.5, weight_decay=0.05),
                  train=TrainConfig(**{"steps": STEPS, "batch_size": batch_size, "log_every": 1,
                                       "eval_every": 3, "ckpt_every": 3, "ema_decay": 0.9, "out": out,
                                       "device": "cpu", "parallel": parallel, "precision": "fp32", **train}))


# Every distributed training of this file: (run folder, recipe kwargs, train kwargs)
JOBS = [
    ("straight", {}, {}),
    ("full", {"noise": 0.1}, {}),
    ("half", {"noise": 0.1}, {"until_step": 3}),
    ("half", {"noise": 0.1}, {"resume": True}),
    ("bf16", {"precision": "bf16", "grad_checkpointing": True, "steps": 2, "ckpt_every": 0}, {}),
    # the world model: frozen tokenizer inside, DiT blocks, its own grad checkpointing, bf16
    ("world", {"world": ["train.steps=3"]}, {"until_step": 2}),
    ("world", {"world": ["train.steps=3"]}, {"resume": True}),
    # a full-state .pt of a one-process run (written by the fixture) loaded into shards, saved again
    ("reload", {}, {"reload": "plain/checkpoints/last.pt"}),
]
WORLD_SET = ["train.parallel=fsdp", "train.precision=bf16", "train.grad_checkpointing=true",
             "train.log_every=1", "train.ckpt_every=2", "train.device=cpu", "data.clip_len=4"]


def job_recipe(base: Path, name: str, recipe_kw: dict) -> Recipe:
    if "world" in recipe_kw:
        return load_recipe("tiny-test-world", [f"data.root={base / 'data'}", f"train.out={base / name}",
                                               *WORLD_SET, *recipe_kw["world"]])
    return make_recipe(str(base / name), batch_size=4, **recipe_kw)


def _worker(rank: int, jobs: list, ports: list[int], base: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    for port, (name, recipe_kw, train_kw) in zip(ports, jobs, strict=True):
        os.environ["MASTER_PORT"] = str(port)
        BLOCK_CALLS.update(train=0, weight_dtype="")
        recipe = job_recipe(Path(base), name, recipe_kw)
        if "reload" in train_kw:
            info = init_distributed("cpu", "fsdp")
            trainer = Trainer(recipe, info, progress=False)
            trainer.load(Path(base) / train_kw["reload"])
            trainer.save(numbered=True)
            shutdown(info)
            continue
        train(recipe, progress=False, **train_kw)
        (Path(base) / name / f"calls_{rank}.json").write_text(json.dumps(BLOCK_CALLS))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("fsdp")
    make_dataset(base / "data")
    train(make_recipe(str(base / "plain"), batch_size=4, parallel="ddp"), until_step=3, progress=False)
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(JOBS, [free_port() for _ in JOBS], str(base)), nprocs=WORLD, join=True)
    return base


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["value"] for r in read_metrics(run / "metrics.csv") if r["name"] == "train/loss"}


def test_fsdp_matches_single_process(runs, tmp_path):
    recipe = make_recipe(str(tmp_path / "single"), batch_size=4 * WORLD, parallel="ddp")
    single = train(recipe, progress=False)
    ck = runs / "straight" / "checkpoints"
    for step in (3, 6):  # the layout: one DCP folder per checkpoint, each rank's shards, meta.pt
        names = {p.name for p in (ck / f"step_{step:07d}").iterdir()}
        assert {".metadata", "meta.pt", "__0_0.distcp", "__1_0.distcp"} <= names, names
    assert not [p for p in ck.iterdir() if p.name.startswith(".")]  # no temp folder left
    a = load_checkpoint(single / "checkpoints" / LAST)
    b = load_checkpoint(ck / LAST)  # the pointer to step_0000006/, gathered into a full state
    assert a["step"] == b["step"] == STEPS and b["rng"]["world_size"] == WORLD
    assert b["samples_seen"] == {"per_rank": STEPS * 4, "world_size": WORLD}
    assert a["model"].keys() == b["model"].keys()
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in a["ema"]["params"].items():
        torch.testing.assert_close(b["ema"]["params"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert a["ema"]["num_updates"] == b["ema"]["num_updates"] == STEPS
    for i, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][i]["exp_avg_sq"], state["exp_avg_sq"],
                                   rtol=1e-4, atol=1e-9)
    la, lb = losses(single), losses(runs / "straight")
    assert la.keys() == lb.keys() == set(range(1, STEPS + 1))
    assert all(abs(la[k] - lb[k]) < 1e-5 for k in la), (la, lb)
    assert abs(a["metrics"]["mse"] - b["metrics"]["mse"]) < 1e-5  # evaluation on the gathered EMA

    # the slim export of the FSDP run (gathered in one process) equals the single-process one
    from infworld.models.loading import load_model
    from infworld.train.export import export_run

    ma = load_model(export_run(single, tmp_path / "export-single"))[0].state_dict()
    mb = load_model(export_run(runs / "straight", tmp_path / "export-fsdp"))[0].state_dict()
    for key, value in ma.items():
        torch.testing.assert_close(mb[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_dcp_checkpoint_resumes_exactly(runs):
    full, resumed = runs / "full", runs / "half"
    a = load_checkpoint(full / "checkpoints" / LAST)
    b = load_checkpoint(resumed / "checkpoints" / LAST)
    assert a["step"] == b["step"] == STEPS
    # step 4, the first after the checkpoint, and every later one: the same loss
    assert losses(full) == losses(resumed)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["ema"]["params"]:
        assert torch.equal(a["ema"]["params"][key], b["ema"]["params"][key]), key
    for i, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][i][name]), name
    assert a["rng"]["ranks"][1]["train"]["generator"].equal(b["rng"]["ranks"][1]["train"]["generator"])


def test_a_full_state_checkpoint_loads_into_shards(runs):
    a = load_checkpoint(runs / "plain" / "checkpoints" / LAST)  # one process, DDP-style .pt
    b = load_checkpoint(runs / "reload" / "checkpoints" / LAST)  # scattered to 2 ranks, saved by DCP
    assert a["step"] == b["step"] == 3 and a["ema"]["num_updates"] == b["ema"]["num_updates"] == 3
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for kind in ("params", "buffers"):
        for key in a["ema"][kind]:
            assert torch.equal(a["ema"][kind][key], b["ema"][kind][key]), key
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for i, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][i][name]), name


def test_bf16_mixed_precision_and_activation_checkpointing(runs):
    run = runs / "bf16"
    state = load_checkpoint(run / "checkpoints" / LAST)
    assert state["step"] == 2 and all(v.dtype == torch.float32 for v in state["model"].values())
    assert all(np.isfinite(v) for v in losses(run).values())
    for rank in range(WORLD):
        calls = json.loads((run / f"calls_{rank}.json").read_text())
        assert calls["weight_dtype"] == "torch.bfloat16"  # blocks compute on bf16 all-gathered weights
        assert calls["train"] == 2 * 2 * 2  # steps x blocks x (forward + recomputation in backward)
    calls = json.loads((runs / "straight" / "calls_0.json").read_text())
    assert calls == {"train": STEPS * 2, "weight_dtype": "torch.float32"}  # no checkpointing, fp32


def test_interrupted_save_keeps_the_last_good_checkpoint(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "straight", run)
    ck = run / "checkpoints"
    # a save of step 9 killed while the ranks wrote their shards, one of step 12 killed before meta.pt
    (ck / ".step_0000009.tmp").mkdir()
    (ck / ".step_0000009.tmp" / "__0_0.distcp").write_bytes(b"partial")
    shutil.copytree(ck / "step_0000006", ck / "step_0000012")
    (ck / "step_0000012" / "meta.pt").unlink()
    assert dcp_ckpt.latest_complete(ck) == ck / "step_0000006"
    assert dcp_ckpt.resume_source(ck) == ck / "step_0000006"
    # and the FSDP run continues without FSDP (one process, full state gathered from the shards)
    train(make_recipe(str(run), batch_size=4, parallel="ddp", steps=STEPS + 1), resume=True, progress=False)
    state = load_checkpoint(ck / LAST)
    assert state["step"] == STEPS + 1 and state["samples_seen"]["world_size"] == 1


def test_fsdp_without_torchrun_is_a_clear_error(tmp_path, monkeypatch, capsys):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match=r"torchrun --nproc_per_node N"):
        train(make_recipe(str(tmp_path / "run"), batch_size=4), progress=False)
    assert not (tmp_path / "run").exists()
    assert main(["train", "--recipe", "tiny-test-tokenizer", "--set", "train.parallel=fsdp",
                 "--out", str(tmp_path / "cli")]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


def test_fsdp_trains_resumes_and_exports_the_world_model(runs, tmp_path):
    from infworld.models.loading import load_model
    from infworld.train.export import export_run

    run = runs / "world"
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt", "step_0000002", "step_0000003"], names
    state = load_checkpoint(run / "checkpoints" / LAST)
    assert state["step"] == 3 and not any(k.startswith("tokenizer.") for k in state["ema"]["params"])
    curve = losses(run)
    assert sorted(curve) == [1, 2, 3] and all(np.isfinite(v) for v in curve.values())
    model, config = load_model(export_run(run, tmp_path / "export"))
    assert config["trained_steps"] == 3 and "next_frame_psnr" in config["metrics"]
    head = "dit.head.weight"
    torch.testing.assert_close(model.state_dict()[head], state["ema"]["params"][head])
