"""DDP (2 CPU processes, gloo) gives the same parameters as one process on the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from infworld.train.checkpoint import LAST, load_checkpoint
from infworld.train.recipe import OptimConfig, Recipe, TrainConfig
from infworld.train.task import register_task
from infworld.train.trainer import train

WORLD = 2
TEARDOWN_ABORT = "terminate called without an active exception"


@dataclass
class RegressionConfig:
    dim: int = 6
    hidden: int = 16


class RegressionTask:
    """Noisy linear regression whose samples are indexed globally across ranks.

    Per-rank sample ``i`` of rank ``r`` is global sample ``(i // B) * B * W + r * B + i % B``, so
    one step of W ranks with batch B sees exactly the samples of one step of a single process with
    batch B * W: the setting in which DDP must reproduce single-process training.
    """

    name = "test-regression"

    def __init__(self, config: RegressionConfig, recipe: Recipe):
        self.config = config
        self.weights = np.random.default_rng(123).normal(size=(config.dim, 2))

    def build_model(self) -> nn.Module:
        c = self.config
        return nn.Sequential(nn.Linear(c.dim, c.hidden), nn.LayerNorm(c.hidden), nn.GELU(),
                             nn.Linear(c.hidden, 2))

    def _sample(self, g: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([7, g])
        x = rng.normal(size=self.config.dim)
        return x, x @ self.weights + 0.1 * rng.normal(size=2)

    def batches(self, split, batch_size, seed, rank, world_size, start_sample=0):
        i = start_sample
        while True:
            idx = [(j // batch_size) * batch_size * world_size + rank * batch_size + j % batch_size
                   for j in range(i, i + batch_size)]
            xs, ys = zip(*(self._sample(g) for g in idx), strict=True)
            yield {"x": torch.tensor(np.stack(xs), dtype=torch.float32),
                   "y": torch.tensor(np.stack(ys), dtype=torch.float32)}
            i += batch_size

    def loss(self, model, batch, generator=None):
        loss = (model(batch["x"]) - batch["y"]).pow(2).mean()
        return loss, {}

    def evaluate(self, model, max_batches=8):
        batch = next(self.batches("val", 16, 0, 0, 1, start_sample=10_000))
        return {"mse": float((model(batch["x"]) - batch["y"]).pow(2).mean())}

    def export_config(self):
        return {"dim": self.config.dim, "hidden": self.config.hidden}

    @classmethod
    def build_inference_model(cls, model_config):
        return cls(RegressionConfig(**model_config), None).build_model()


register_task("test-regression", RegressionConfig, RegressionTask)


def make_recipe(out: Path, batch_size: int) -> Recipe:
    return Recipe(name="ddp", task="test-regression", model=RegressionConfig(),
                  optim=OptimConfig(lr=2e-2, warmup_steps=2, grad_clip=0.5),
                  train=TrainConfig(steps=6, batch_size=batch_size, log_every=1, eval_every=3, ckpt_every=3,
                                    ema_decay=0.9, out=str(out), device="cpu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(make_recipe(Path(out), batch_size=4), progress=False)


def test_ddp_matches_single_process(tmp_path):
    torch.set_num_threads(1)
    single = train(make_recipe(tmp_path / "single", batch_size=4 * WORLD), progress=False)
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "ddp")), nprocs=WORLD, join=True)
    a = load_checkpoint(single / "checkpoints" / LAST)
    b = load_checkpoint(tmp_path / "ddp" / "checkpoints" / LAST)
    assert a["step"] == b["step"] == 6
    assert b["rng"]["world_size"] == WORLD and len(b["rng"]["ranks"]) == WORLD
    assert b["samples_seen"] == {"per_rank": 6 * 4, "world_size": WORLD}
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in a["ema"]["params"].items():
        torch.testing.assert_close(b["ema"]["params"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    # rank 0 alone wrote the logs; the logged loss is the global-batch mean
    from infworld.train.logging import read_metrics

    la = {r["step"]: r["value"] for r in read_metrics(single / "metrics.csv") if r["name"] == "train/loss"}
    lb = {r["step"]: r["value"] for r in read_metrics(tmp_path / "ddp" / "metrics.csv")
          if r["name"] == "train/loss"}
    assert la.keys() == lb.keys() and all(abs(la[k] - lb[k]) < 1e-5 for k in la)


@pytest.mark.slow
def test_torchrun_cli_trains_the_tokenizer(tmp_path):
    from test_trainer import make_dataset

    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
           "--master_port", str(free_port()), "-m", "infworld", "train", "--recipe", "tiny-test-tokenizer",
           "--set", f"data.root={data}", "train.steps=4", "train.eval_every=2", "--out", str(out),
           "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and TEARDOWN_ABORT in proc.stderr and (out / "checkpoints" / LAST).exists():
        # A rank aborted in gloo's C++ teardown after the run wrote its last checkpoint: a rare race
        # in torch's gloo shutdown (seen once in CI; not reproduced in 40 local runs, idle or loaded).
        # Run it again once, so a real failure (twice in a row, or any other error) still fails.
        shutil.rmtree(out)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    state = load_checkpoint(out / "checkpoints" / LAST)
    assert state["step"] == 4 and state["rng"]["world_size"] == WORLD
    assert state["samples_seen"] == {"per_rank": 4 * 8, "world_size": WORLD}
