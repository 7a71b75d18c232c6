"""Memory v2: isolated memory-frame encoding, positions fitted into a trained span (an oracle that
reaches hundreds of frames), HPMC's temporal 3D encoder, plain/marked presentation, data merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset

from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError, DataError, MemoryConfigError
from infworld.memory.base import COMPRESSED_KIND, MEMORY_KIND, MemoryContext, plain_context, slot_positions
from infworld.memory.compressor import CompressorConfig, TemporalCompressor
from infworld.memory.context import MemoryLayout, fit_positions, memory_past
from infworld.memory.registry import make_memory
from infworld.models.action import ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel


def tiny_dit() -> DiT:
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=4, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=6, num_frame_kinds=3, actions=ActionConfig(num_interact=2))
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():  # random everywhere: every input matters
            p.normal_(0.0, 0.15)
    return dit.eval()


def acts(b: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"move": torch.randint(0, 9, (b, n), generator=g),
            "view": torch.randint(0, 9, (b, n), generator=g), "interact": torch.zeros(b, n, dtype=torch.long)}


def test_isolated_memory_frames_do_not_depend_on_position_or_neighbours():
    """A frame's keys/values are those of the frame run alone, wherever it sits and whatever else is
    in memory: so they could be cached, and hundreds of frames cost linear time."""
    dit = tiny_dit()
    lat, a = torch.randn(2, 5, 4, 4, 4), acts(2, 5)
    iso = MemoryLayout("isolated", 0)
    with torch.no_grad():
        kv = memory_past(dit, MemoryContext(lat, a, slot_positions(5, 6)), None, layout=iso)
        alone = memory_past(dit, MemoryContext(lat[:, 3:4], {k: v[:, 3:4] for k, v in a.items()},
                                               torch.tensor([-40.0])), None, layout=iso)
        causal = memory_past(dit, MemoryContext(lat, a, slot_positions(5, 6)), None)
    n = dit.cfg.tokens_per_frame
    for layer in range(dit.cfg.depth):
        assert torch.allclose(kv.keys[layer][:, :, 3 * n:4 * n], alone.keys[layer], atol=1e-5)
        assert torch.allclose(kv.values[layer][:, :, 3 * n:4 * n], alone.values[layer], atol=1e-5)
    # the causal layout lets frame 3 read frames 0-2: different keys (the layouts really differ)
    assert not torch.allclose(causal.keys[1][:, :, 3 * n:4 * n], alone.keys[1], atol=1e-3)


def test_fitted_positions_stay_in_the_trained_span():
    pos = slot_positions(400, 16)  # 400 frames before a 16-frame window
    fitted = fit_positions(pos, 32)
    assert fitted[-1] == pos[-1] and fitted[0] == pos[-1] - 31  # newest kept, oldest 31 slots before
    assert torch.all(fitted[1:] > fitted[:-1])  # order kept
    assert torch.equal(fit_positions(slot_positions(20, 16), 32), slot_positions(20, 16))  # fits: unchanged
    with pytest.raises(MemoryConfigError, match="span"):
        MemoryLayout("isolated", 1).check()
    with pytest.raises(MemoryConfigError, match="encoding"):
        MemoryLayout.of({"memory_encoding": "sideways"})
    assert MemoryLayout.of({}) == MemoryLayout("causal", 0)  # older exports


def span_net(span: int = 4, slots: int = 64) -> WorldNet:
    torch.manual_seed(0)
    cfg = DiTConfig(in_channels=12, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=4, freq_dim=16, num_frame_kinds=3, actions=ActionConfig(num_interact=2))
    dit = DiT(cfg)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0.0, 0.15)
    return WorldNet(dit, PixelTokenizer(2, (8, 8)), (8, 8),
                    {"memory_encoding": "isolated", "memory_span": span, "memory_slots": slots})


def test_oracle_reaches_past_the_span_with_positions_in_the_trained_range(monkeypatch):
    """`full` holds 36 frames on a model whose memory positions span 4 slots: every read returns all
    frames before the window, at positions within the 4 slots before the local window."""
    import infworld.memory.kv_reuse as prefix  # the engine's per-chunk memory context

    seen = []

    def spy(dit, ctx, ref, shift=0.0, layout=None, **kw):
        past = memory_past(dit, ctx, ref, shift, layout, **kw)
        seen.append((ctx.num_frames, past.positions - shift))  # positions relative to the chunk
        return past

    monkeypatch.setattr(prefix, "memory_past", spy)
    world = WorldModel(span_net(), make_memory("full", budget=48, local_window=4),
                       RolloutConfig(chunk=2, sampler=SamplerConfig(steps=2), seed=3))
    rng = np.random.default_rng(0)
    world.reset(rng.integers(0, 256, (1, 2, 8, 8, 3), dtype=np.uint8),
                {"move": rng.integers(0, 9, (1, 1)), "view": rng.integers(0, 9, (1, 1)),
                 "interact": np.zeros((1, 1), int)})
    for _ in range(20):
        world.step({"move": rng.integers(0, 9, (1, 2)), "view": rng.integers(0, 9, (1, 2)),
                    "interact": np.zeros((1, 2), int)})
    assert [m for m, _ in seen] == list(range(1, 39, 2))  # every frame before the local window
    for _, rel in seen:
        assert float(rel.max()) == -4.0 and float(rel.min()) >= -7.0  # 4 slots right before the window


def test_budget_above_the_memory_slots_is_refused():
    with pytest.raises(MemoryConfigError, match="memory slots"):
        WorldModel(span_net(slots=16), make_memory("full", budget=48, local_window=4))


def test_conv3d_compressor_starts_as_the_mean_and_learns():
    cfg = CompressorConfig(channels=4, hidden=16, encoder="conv3d", heads=2)
    comp = TemporalCompressor(cfg)
    x, levels = torch.randn(2, 4, 4, 4, 4), torch.tensor([[1, 0, 0, 0], [2, 1, 1, 0]])
    assert torch.allclose(comp(x, levels), x.mean(1))  # untrained = temporal average pooling
    target = x[:, -1]  # learn to keep the newest latent, not the mean
    opt = torch.optim.Adam(comp.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        loss = (comp(x, levels) - target).pow(2).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first
    with pytest.raises(MemoryConfigError, match="power of 2"):
        CompressorConfig(channels=4, factor=3, encoder="conv3d").check()
    with pytest.raises(MemoryConfigError, match="encoder"):
        make_memory("hpmc", budget=8, encoder="conv4d")


def test_plain_presentation_keeps_compressed_latents_marked():
    kinds = torch.tensor([[COMPRESSED_KIND, MEMORY_KIND, MEMORY_KIND]])
    ctx = MemoryContext(torch.zeros(1, 3, 4, 2, 2), acts(1, 3), slot_positions(3, 4), kinds=kinds,
                        poses=torch.zeros(1, 3, 5))
    out = plain_context(ctx)
    assert out.kinds.tolist() == [[COMPRESSED_KIND, 0, 0]] and out.poses is None
    hpmc = make_memory("hpmc", budget=4, local_window=2, plain=True)
    assert hpmc.frame_kinds() == {COMPRESSED_KIND}
    hpmc.write(torch.randn(1, 12, 4, 2, 2), acts(1, 12), None, 0)
    read = hpmc.read(13)
    assert set(read.kinds[0].tolist()) <= {0, COMPRESSED_KIND} and COMPRESSED_KIND in read.kinds[0].tolist()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mem_v2"), episodes=3, length=30)


def task_for(root, *overrides: str) -> WorldTask:
    recipe = load_recipe("tiny-test-memory", [f"data.root={root}", *overrides])
    return WorldTask(recipe.model, recipe)


def test_memory_v2_training_exports_its_layout_and_per_strategy_val_losses(data_root):
    task = task_for(data_root, "model.memory.encoding=isolated", "model.memory.span=4",
                    "model.memory.slots=32", "model.memory.plain_prob=0.5", "model.latent_cache_mb=0",
                    "model.memory.strategies={window: 1.0, full: 1.0, hpmc: 1.0}",
                    "model.memory.settings={full: {budget: 6}, hpmc: {budget: 4, encoder: conv3d}}")
    torch.manual_seed(0)
    net = task.build_model().train()
    with torch.no_grad():  # past adaLN-zero's identity start, so the memory matters to the loss
        for p in net.dit.parameters():
            p.normal_(0.0, 0.1)
    batch = next(task.batches("train", 2, seed=0, rank=0, world_size=1))
    g = torch.Generator().manual_seed(0)
    loss, _ = task.loss(net, batch, g, "hpmc")
    loss.backward()
    grads = [p.grad for p in net.memory_modules["hpmc"].parameters() if p.grad is not None]
    assert grads and any(float(gr.abs().sum()) > 0 for gr in grads)  # the compressor trains through the DiT
    cfg = task.export_config()
    assert (cfg["memory_encoding"], cfg["memory_span"], cfg["memory_slots"]) == ("isolated", 4, 32)
    metrics = task.evaluate(net, max_batches=1)
    assert {"loss_window", "loss_full", "loss_hpmc"} <= set(metrics)


def test_bad_memory_v2_settings(data_root):
    with pytest.raises(ConfigError, match="slots"):  # more slots than trained, no span to fit them
        task_for(data_root, "model.memory.slots=32").export_config()
    with pytest.raises(ConfigError, match="encoding"):
        task_for(data_root, "model.memory.encoding=bidirectional")
    with pytest.raises(ConfigError, match="plain_prob"):
        task_for(data_root, "model.memory.plain_prob=1.5")


def test_data_merge(tmp_path):
    from infworld.data.episode import list_episodes, read_meta
    from infworld.data.merge import merge_datasets

    a = make_dataset(tmp_path / "a", episodes=2, length=12)
    b = make_dataset(tmp_path / "b", episodes=1, length=12)
    summary = merge_datasets([a, b], tmp_path / "m", repeat=[1, 2])
    assert summary["episodes"] == 4 and len(list_episodes(tmp_path / "m")) == 4
    assert read_meta(tmp_path / "m").extra["merged_from"][1]["repeat"] == 2
    with pytest.raises(DataError, match="already holds episodes"):
        merge_datasets([a], tmp_path / "m")
    c = make_dataset(tmp_path / "c", episodes=1, length=12, size=16)
    with pytest.raises(DataError, match="size"):
        merge_datasets([a, c], tmp_path / "n")
