"""Training with memory: the same memory objects as inference, padding and pose conditioning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset, train_steps

from infworld.errors import ConfigError, MemoryConfigError
from infworld.memory.base import MemoryContext, slot_positions
from infworld.memory.context import memory_past, pose_features
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mem_data"), episodes=3, length=30)


def task_for(root, *overrides: str) -> WorldTask:
    recipe = load_recipe("tiny-test-memory", [f"data.root={root}", *overrides])
    return WorldTask(recipe.model, recipe)


def test_memory_training_resolves_the_window_and_the_loss_goes_down(data_root):
    task = task_for(data_root, "model.latent_cache_mb=0")
    assert task.dit_config.max_frames == 6 and task.window == 6  # clip 12 = history 6 + window 6
    torch.manual_seed(0)
    net = task.build_model().train()
    batch = next(task.batches("train", 4, seed=0, rank=0, world_size=1))
    assert batch["frames"].shape[1] == 12
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-3)
    g = torch.Generator().manual_seed(0)
    seen, losses = set(), []
    for _ in range(60):
        loss, metrics = task.loss(net, batch, g)
        seen |= {k for k in metrics if k in ("loss_full", "loss_window")}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(metrics["loss"])
    assert seen == {"loss_full", "loss_window"}  # both strategies were drawn
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    cfg = task.export_config()
    assert cfg["memory_slots"] == 6 and cfg["memory"]["full"] == {"budget": 6, "local_window": 6,
                                                                    "plain": False}


def test_exported_memory_settings_are_used_and_checked(data_root):
    task = task_for(data_root)
    net = WorldTask.build_inference_model(task.export_config())
    world = WorldModel(net, make_memory("full", budget=6, local_window=6), RolloutConfig(chunk=2))
    frames = np.zeros((1, 2, 32, 32, 3), np.uint8)
    world.reset(frames, poses=np.zeros((1, 2, 5)))
    acts = {"move": [[4, 4]], "view": [[4, 4]], "interact": [[0, 0]]}
    for _ in range(4):
        world.step(acts, poses=np.zeros((1, 2, 5)))
    ctx = world.last_context
    assert ctx is not None and ctx.num_frames >= 1
    assert int(ctx.sources.max()) < world.index - 2 - (6 - 1)  # only frames outside the local window
    with pytest.raises(MemoryConfigError, match="exceeds the budget of 6"):
        world.step(acts, poses=np.zeros((1, 2, 5)))
    with pytest.raises(MemoryConfigError, match="memory slots"):
        WorldModel(net, make_memory("full", budget=7, local_window=6), RolloutConfig(chunk=2))


def test_bad_memory_training_settings(data_root):
    with pytest.raises(ConfigError, match="unknown memory 'nope'"):
        task_for(data_root, "model.memory.strategies={nope: 1.0}")
    with pytest.raises(ConfigError, match="history"):
        task_for(data_root, "model.memory.history=0")
    with pytest.raises(ConfigError, match="weight"):
        task_for(data_root, "model.memory.strategies={full: 0.0}")


def tiny_dit(**kw) -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=4, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=8, num_frame_kinds=3, pose_dim=6, actions=ActionConfig(num_interact=2), **kw)
    dit = DiT(cfg)
    for p in dit.parameters():  # leave adaLN-zero: outputs must depend on the context
        torch.nn.init.normal_(p, std=0.2)
    return dit.eval()


def acts(b: int, n: int) -> dict[str, torch.Tensor]:
    return {k: torch.randint(0, 9, (b, n)) for k in ("move", "view")} | {"interact": torch.zeros(b, n).long()}


def test_padding_frames_are_never_attended():
    dit = tiny_dit()
    lat = torch.randn(2, 3, 4, 4, 4)
    a = acts(2, 3)
    x, t, xa = torch.randn(2, 2, 4, 4, 4), torch.full((2, 2), 0.5), acts(2, 2)
    padded = MemoryContext(torch.cat([lat, torch.randn(2, 1, 4, 4, 4)], 1),
                           {k: torch.cat([v, v[:, :1]], 1) for k, v in a.items()}, slot_positions(4, 4),
                           valid=torch.tensor([[True, True, True, False]] * 2))
    with torch.no_grad():
        out_pad = dit(x, t, xa, past=memory_past(dit, padded, None))
        # the padding frame's content must not matter
        padded.latents[:, 3] = 100.0
        out_pad2 = dit(x, t, xa, past=memory_past(dit, padded, None))
    # positions differ by one slot (3 vs 4 frames), so compare the padded variants with each other
    assert torch.allclose(out_pad, out_pad2, atol=1e-5)
    padded.valid[:, 3] = True
    with torch.no_grad():
        out_valid = dit(x, t, xa, past=memory_past(dit, padded, None))
    assert not torch.allclose(out_valid, out_pad2, atol=1e-3)  # the same frame, attended, does matter


def test_pose_features_are_relative_to_the_camera():
    ref = torch.tensor([[100.0, 50.0, 0.0, 90.0, 0.0]])  # looking along +y
    poses = torch.tensor([[[100.0, 60.0, 0.0, 90.0, 0.0], [90.0, 50.0, 0.0, 180.0, 0.0],
                           [float("nan")] * 5]])
    f = pose_features(poses, ref, scale=10.0)
    assert torch.allclose(f[0, 0], torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), atol=1e-5)  # 10 ahead
    assert torch.allclose(f[0, 1, :2], torch.tensor([0.0, 1.0]), atol=1e-5)  # 10 to the left (-x)
    assert torch.allclose(f[0, 1, 3:5], torch.tensor([1.0, 0.0]), atol=1e-5)  # turned 90 deg
    assert torch.isnan(f[0, 2]).all()
    dit = tiny_dit()
    lat = torch.randn(1, 2, 4, 4, 4)
    x, t, xa = torch.randn(1, 1, 4, 4, 4), torch.full((1, 1), 0.5), acts(1, 1)
    with torch.no_grad():
        outs = [dit(x, t, xa, past=memory_past(dit, MemoryContext(lat, acts(1, 2), slot_positions(2, 4),
                                                                   poses=poses[:, :2] + dx), ref))
                for dx in (0.0, 30.0)]
    assert not torch.allclose(outs[0], outs[1], atol=1e-4)  # where a memory frame was seen matters


def test_init_from_grows_tables_and_keeps_weights(data_root, tmp_path):
    from test_rollout_cli import train_and_export

    from infworld.models.loading import load_model
    from infworld.train.finetune import load_matching

    train_and_export("tiny-test-world", data_root, tmp_path / "run", tmp_path / "base", "train.steps=2")
    src, _ = load_model(tmp_path / "base")
    net = task_for(data_root).build_model()
    report = load_matching(net, str(tmp_path / "base"))
    assert "dit.kind_embed.weight" in report["partial"] and "dit.pose_embed.weight" in report["new"]
    assert torch.equal(net.dit.kind_embed.weight[:2], src.dit.kind_embed.weight)
    assert torch.equal(net.dit.blocks[0].attn.qkv.weight, src.dit.blocks[0].attn.qkv.weight)


def test_training_memory_positions_match_streaming(data_root):
    """Memory slots end right before the clip, as they end right before the oldest cached frame when
    streaming (the engine's shift), whatever the strategy's local window."""
    from infworld.train.tasks.memory_train import training_context

    memory = make_memory("full", budget=6, local_window=6)
    x0 = torch.randn(2, 12, 4, 4, 4)
    acts = {k: torch.zeros(2, 12, dtype=torch.long) for k in ("move", "view", "interact")}
    ctx, _ = training_context(memory, None, x0, acts, None, history=6, ref_index=8)
    assert ctx.num_frames == 6 and torch.equal(ctx.positions, torch.arange(-6.0, 0.0))


def test_validation_can_draw_revisit_clips_only(tmp_path):
    """``data.val_revisit_dense``: the val split keeps only clips that come back to a place the clip saw
    (so per-strategy validation losses measure memory), while training clips stay unfiltered."""
    from infworld.data.dataset import ClipDataset
    from infworld.data.episode import episode_path, read_episode, write_episode

    root = make_dataset(tmp_path / "ds", episodes=3, length=30)
    # the val episode walks straight away for 20 frames (no revisit), then walks back over its path
    ep = read_episode(episode_path(root, 2))
    x = np.r_[np.arange(20) * 100.0, (19 - np.arange(1, 11)) * 100.0].astype(np.float32)
    ep.pose = np.stack([x, np.zeros(30), np.zeros(30), np.zeros(30), np.zeros(30)], 1).astype(np.float32)
    write_episode(episode_path(root, 2), ep)

    task = task_for(root, "data.val_revisit_dense=true", "model.latent_cache_mb=0")
    data = task.recipe.data
    dense = ClipDataset(root, data.clip_len, "val", data.val_episodes, revisit_dense=True)
    every = ClipDataset(root, data.clip_len, "val", data.val_episodes)
    assert 0 < dense.num_clips < every.num_clips  # the filter does something on this data
    batch = next(task.batches("val", 8, seed=0, rank=0, world_size=1))
    for ep_id, start in zip(batch["episode"].tolist(), batch["start"].tolist(), strict=True):
        assert start in dense._starts[ep_id].tolist()
    assert next(task.batches("train", 8, seed=0, rank=0, world_size=1))["frames"].shape[1] == data.clip_len


def test_train_only_trains_the_named_parameters_and_leaves_the_backbone_as_it_was(data_root):
    """``model.train_only``: a memory pathway trained on a frozen backbone; after training steps the
    frozen weights are bit-identical, the named ones moved, and a pattern that matches nothing is an
    error naming it."""
    task = task_for(data_root, "model.latent_cache_mb=0", "model.train_only=[dit.kind_embed.*]")
    torch.manual_seed(0)
    net = task.build_model().train()
    with torch.no_grad():  # random weights everywhere (zero-inits included), so gradients reach the input
        for p in net.dit.parameters():
            p.normal_(0.0, 0.15)
    trained = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trained == ["dit.kind_embed.weight"]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    train_steps(task, net, opt)
    for n, p in net.named_parameters():
        moved = not torch.equal(p.detach(), before[n])
        assert moved == (n == "dit.kind_embed.weight"), n
    with pytest.raises(ConfigError, match="dit.kind_embeds"):
        task_for(data_root, "model.train_only=[dit.kind_embeds]").build_model()
