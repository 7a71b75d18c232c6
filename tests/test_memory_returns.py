"""The loss that only memory can lower (``model.memory.loss_on: returns``) and row-wise ``train_only``."""

from __future__ import annotations

import pytest
import torch
from synthetic import make_dataset, memory_task, train_steps

from infworld.errors import ConfigError
from infworld.train.optim import build_optimizer
from infworld.train.recipe import OptimConfig
from infworld.train.tasks.memory_train import NO_MEMORY, return_frames

task_for = memory_task


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ret_data"), episodes=3, length=30)


def walk(xs: list[float], yaws: list[float] | None = None) -> torch.Tensor:
    """(1, T, 5) poses along x (y = 0), yaw 0 unless given."""
    t = len(xs)
    pose = torch.zeros(1, t, 5)
    pose[0, :, 0] = torch.tensor(xs)
    if yaws is not None:
        pose[0, :, 3] = torch.tensor(yaws)
    return pose


def test_return_frames_keep_places_only_the_history_saw():
    # history: frames 0..9 walk out along x (0, 100, ..., 900); the window (10..17) first keeps going
    # (1000, 1100, 1200: new places), then walks back over the history's places (800, 700, ...)
    xs = [100.0 * i for i in range(10)] + [1000, 1100, 1200, 800, 700, 600, 500, 500]
    ret = return_frames(walk(xs), history=10, min_gap=2, dist=50, angle_deg=30, recent=1)
    #                      1000   1100   1200   800   700   600   500   500 (again)
    assert ret[0].tolist() == [False, False, False, True, True, True, True, True]
    # the last frame's place (500) is also the frame before it: allowed while it is within `recent`
    # frames, excluded once the window itself showed the place earlier than that
    xs2 = xs[:-1] + [600]
    ret2 = return_frames(walk(xs2), history=10, min_gap=2, dist=50, angle_deg=30, recent=1)
    assert ret2[0, -1].item() is False  # 600 was in the window two frames before (> recent)
    ret3 = return_frames(walk(xs2), history=10, min_gap=2, dist=50, angle_deg=30, recent=2)
    assert ret3[0, -1].item() is True
    # the same place seen the other way round is no return; without the angle rule it is
    back = return_frames(walk(xs, [0.0] * 10 + [180.0] * 8), history=10, min_gap=2, dist=50,
                         angle_deg=30, recent=1)
    assert not back.any()
    assert return_frames(walk(xs, [0.0] * 10 + [180.0] * 8), history=10, min_gap=2, dist=50,
                         angle_deg=None, recent=1)[0].tolist() == ret[0].tolist()
    # yaw wraps: 175 and -175 degrees are 10 degrees apart
    wrap = return_frames(walk(xs, [175.0] * 10 + [-175.0] * 8), history=10, min_gap=2, dist=50,
                         angle_deg=30, recent=1)
    assert wrap[0].tolist() == ret[0].tolist()
    with pytest.raises(ConfigError, match="history 18"):
        return_frames(walk(xs), history=18, min_gap=2, dist=50, angle_deg=30, recent=1)


def test_returns_loss_weighs_only_the_returning_frames(data_root):
    task = task_for(data_root, "model.latent_cache_mb=0", "model.memory.loss_on=returns",
                    "model.memory.return_recent=2")
    torch.manual_seed(0)
    net = task.build_model().train()
    batch = next(task.batches("train", 2, seed=0, rank=0, world_size=1))
    h = task.config.memory.history
    # clip 12 = history 6 + window 6; clip 0 walks away and never comes back, clip 1 comes back
    away = walk([200.0 * i for i in range(12)])
    back = walk([200.0 * i for i in range(6)] + [2000, 2200, 400, 200, 0, 200])
    batch["pose"] = torch.cat([away, away])
    loss, metrics = task.loss(net, batch, torch.Generator().manual_seed(0), strategy="full")
    assert metrics["return_share"] == 0.0 and float(loss.detach()) == 0.0  # nothing only memory could give
    batch["pose"] = torch.cat([away, back])
    expected = return_frames(batch["pose"], h, task.return_gap, task.return_dist, 30.0, 2)
    assert expected[1].tolist() == [False, False, True, True, True, True] and not expected[0].any()
    loss, metrics = task.loss(net, batch, torch.Generator().manual_seed(0), strategy="full")
    assert metrics["return_share"] == pytest.approx(4 / 12) and float(loss.detach()) > 0
    loss.backward()
    assert net.dit.head.weight.grad is not None
    # the per-strategy reference without memory: no context, the same loss machinery
    _, ref = task.loss(net, batch, torch.Generator().manual_seed(0), strategy=NO_MEMORY)
    assert ref["memory_frames"] == 0.0 and f"loss_{NO_MEMORY}" in ref


@pytest.mark.parametrize("override", ["model.memory.loss_on=revisits", "model.memory.return_recent=0",
                                      "data.revisit_tail=-1", "model.memory.window_noise=1.5"])
def test_bad_returns_settings_name_the_field(data_root, override):
    field = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigError, match=field):
        task_for(data_root, override)


def test_train_only_rows_trains_some_rows_of_a_table(data_root):
    """``dit.kind_embed.weight[1:]``: the memory frame kinds train, the ordinary-frame row (what every
    plain frame sees) stays bit-identical under the trainer's AdamW."""
    task = task_for(data_root, "model.latent_cache_mb=0",
                    'model.train_only=["dit.kind_embed.weight[1:]", "dit.pose_embed.weight[1:]"]')
    torch.manual_seed(0)
    net = task.build_model().train()
    with torch.no_grad():  # random weights everywhere (zero-inits included), so gradients reach the input
        for p in net.dit.parameters():
            p.normal_(0.0, 0.15)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "dit.kind_embed.weight", "dit.pose_embed.weight"]
    table, matrix = net.dit.kind_embed.weight, net.dit.pose_embed.weight  # an embedding and a Linear
    before, before_m = table.detach().clone(), matrix.detach().clone()
    opt, _ = build_optimizer(net, OptimConfig(lr=1e-2, weight_decay=0.1), 10)
    train_steps(task, net, opt)
    assert torch.equal(table[0], before[0])  # the ordinary-frame row
    assert not torch.equal(table[1:], before[1:])
    assert torch.equal(matrix[0], before_m[0]) and not torch.equal(matrix[1:], before_m[1:])  # no decay
    with pytest.raises(ConfigError, match="selects 3 of the 3 rows"):
        task_for(data_root, 'model.train_only=["dit.kind_embed.weight[0:]"]').build_model()
    with pytest.raises(ConfigError, match="selects 0 of the 3 rows"):
        task_for(data_root, 'model.train_only=["dit.kind_embed.weight[5:]"]').build_model()


def test_window_noise_noises_the_window_prefix_of_memory_clips(data_root):
    """``model.memory.window_noise``: memory clips draw their clean-prefix levels up to it (the window
    stands in for the model's own drifting frames), on the same noise draw otherwise."""
    base = task_for(data_root, "model.latent_cache_mb=0")
    noisy = task_for(data_root, "model.latent_cache_mb=0", "model.memory.window_noise=0.8")
    torch.manual_seed(0)
    net = base.build_model().train()
    batch = next(base.batches("train", 4, seed=0, rank=0, world_size=1))
    seen = []
    for task in (base, noisy):
        means = []
        for seed in range(6):
            _, m = task.loss(net, batch, torch.Generator().manual_seed(seed), strategy="full")
            means.append(m["loss"])
        seen.append(means)
    assert seen[0] != seen[1]  # the prefix levels differ, so the losses do
