"""Per-strategy memory layouts (memory/context.py MemoryLayout.of, model.memory.encodings): the
oracle `full` encoded frame by frame (isolated), the bounded strategies as one causal sequence."""

from __future__ import annotations

import pytest
import torch
from synthetic import make_dataset

from infworld.errors import ConfigError
from infworld.memory.base import MemoryContext
from infworld.memory.context import MemoryLayout, memory_past
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mem_layouts"), episodes=3, length=30)


def task_for(root, *overrides: str) -> WorldTask:
    recipe = load_recipe("tiny-test-memory", [f"data.root={root}", "model.latent_cache_mb=0", *overrides])
    return WorldTask(recipe.model, recipe)


def test_each_strategy_runs_its_own_layout_in_training_and_export(data_root):
    task = task_for(data_root, "model.memory.encoding=causal", "model.memory.encodings={full: isolated}",
                    "model.memory.strategies={window: 1.0, full: 1.0, vrag: 1.0}",
                    "model.memory.settings={full: {budget: 6}, vrag: {budget: 3}}")
    cfg = task.export_config()
    assert cfg["memory_encoding"] == "causal" and cfg["memory_encodings"] == {"full": "isolated"}
    assert MemoryLayout.of(cfg, "full").encoding == "isolated"
    assert MemoryLayout.of(cfg, "vrag").encoding == "causal"
    assert MemoryLayout.of(cfg).encoding == "causal"
    torch.manual_seed(0)
    net = task.build_model().eval()
    with torch.no_grad():  # past adaLN-zero's identity start, so the layout matters to the output
        for p in net.dit.parameters():
            p.normal_(0.0, 0.1)
    g = torch.Generator().manual_seed(1)
    b, m, n = 1, 4, 2
    c, h, w = net.dit.cfg.in_channels, *net.dit.cfg.latent_size
    acts = {"move": torch.randint(0, 9, (b, m), generator=g),
            "view": torch.randint(0, 9, (b, m), generator=g), "interact": torch.zeros(b, m, dtype=torch.long)}
    ctx = MemoryContext(latents=torch.randn(b, m, c, h, w, generator=g), actions=acts,
                        positions=torch.arange(m, dtype=torch.float32) - m)
    x = torch.randn(b, n, c, h, w, generator=g)
    t = torch.full((b, n), 0.5)
    xa = {k: v[:, :n] for k, v in acts.items()}
    with torch.no_grad():
        out = {name: net(x, t, xa, memory=ctx, memory_name=name) for name in ("full", "vrag")}
        want = {enc: net.dit(x, t, xa, past=memory_past(net.dit, ctx, None, layout=MemoryLayout(enc)))
                for enc in ("isolated", "causal")}
    torch.testing.assert_close(out["full"], want["isolated"])
    torch.testing.assert_close(out["vrag"], want["causal"])
    assert not torch.allclose(want["isolated"], want["causal"], atol=1e-4)  # the layouts do differ


def test_bad_per_strategy_encodings(data_root):
    with pytest.raises(ConfigError, match=r"encodings.*kv"):  # a strategy that is not trained
        task_for(data_root, "model.memory.encodings={kv: isolated}")
    with pytest.raises(ConfigError, match=r"encodings\.full.*encoding"):
        task_for(data_root, "model.memory.encodings={full: bidirectional}")


def test_every_strategy_loss_sees_the_same_noise(data_root):
    """Per-strategy validation losses compare strategies on one noise draw: with a network on which
    context has no effect (adaLN-zero's identity blocks at initialisation) they are all equal, also
    when the plain/marked coin is drawn for the strategies that return context."""
    task = task_for(data_root, "model.memory.plain_prob=0.5",
                    "model.memory.strategies={window: 1.0, full: 1.0}",
                    "model.memory.settings={full: {budget: 6}}")
    torch.manual_seed(0)
    net = task.build_model().eval()
    batch = next(task.batches("val", 2, seed=0, rank=0, world_size=1))
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    losses = {}
    with torch.no_grad():
        for name in ("window", "full"):
            g.set_state(state)
            losses[name] = float(task.loss(net, batch, g, name)[0])
    assert losses["window"] == pytest.approx(losses["full"], rel=1e-6)
