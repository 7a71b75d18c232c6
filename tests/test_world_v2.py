"""World model v2: action alignment pinned in training and streaming, the conv path and action adaLN,
context noise, and pre-v2 configs that still build the pre-v2 network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import make_dataset
from test_kvcache import rollout
from torch import nn

from infworld.diffusion.forcing import ForcingConfig
from infworld.diffusion.samplers import SamplerConfig
from infworld.errors import ConfigError
from infworld.memory.registry import make_memory
from infworld.models.action import NULL_ACTION, ActionConfig
from infworld.models.dit import DiT, DiTConfig
from infworld.models.latent_conv import LatentConvConfig
from infworld.models.tokenizers import PixelTokenizer
from infworld.models.worldnet import WorldNet
from infworld.train.recipe import load_recipe
from infworld.train.tasks.world import WorldTask
from infworld.world import RolloutConfig, WorldModel


def v2_net(seed: int = 0, max_frames: int = 8, conv: bool = True, adaln: bool = True) -> WorldNet:
    torch.manual_seed(seed)
    cfg = DiTConfig(in_channels=12, latent_size=(4, 4), patch_size=2, dim=32, depth=2, num_heads=2,
                    max_frames=max_frames, freq_dim=16, actions=ActionConfig(num_interact=2),
                    action_adaln=adaln, conv=LatentConvConfig(width=8 if conv else 0, groups=4,
                                                               shift_kernel=3 if conv else 0))
    dit = DiT(cfg)
    with torch.no_grad():  # random weights everywhere (zero-inits included), so every input matters
        for p in dit.parameters():
            p.normal_(0.0, 0.15)
    return WorldNet(dit, PixelTokenizer(2, (8, 8)), (8, 8), {})


class Spy(nn.Module):
    """Wraps a DiT (or a WorldNet) and records the per-frame actions and levels of every call."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.module = inner  # also what the world task's _unwrap looks for
        self.cfg = getattr(inner, "cfg", None)
        self.calls: list[tuple[dict[str, torch.Tensor], torch.Tensor]] = []

    def forward(self, x, t, actions, *args, **kw):
        self.calls.append(({k: v.clone() for k, v in actions.items()}, t.clone()))
        return self.module(x, t, actions, *args, **kw)


@pytest.mark.parametrize("sampler,noise", [("euler", 0.0), ("heun", 0.15), ("stochastic", 0.3)])
def test_v2_cached_rollout_equals_full_recompute(sampler, noise, monkeypatch):
    net = v2_net()
    orig = RolloutConfig.__init__

    def with_noise(self, *a, **kw):
        orig(self, *a, **kw)
        self.context_noise = noise

    monkeypatch.setattr(RolloutConfig, "__init__", with_noise)
    cached, _, world = rollout(net, True, 4, 2, chunks=5, sampler=sampler)
    full, _, _ = rollout(net, False, 4, 2, chunks=5, sampler=sampler)
    assert world.config.context_noise == noise and len(world.cache) == 3  # evictions happened
    assert torch.allclose(cached, full, atol=1e-4), float((cached - full).abs().max())


def test_context_noise_changes_the_rollout(monkeypatch):
    net = v2_net()
    clean, _, _ = rollout(net, True, 4, 2, chunks=3)
    orig = RolloutConfig.__init__
    monkeypatch.setattr(RolloutConfig, "__init__", lambda s, *a, **k: (orig(s, *a, **k),
                                                                        setattr(s, "context_noise", 0.2))[0])
    noisy, _, _ = rollout(net, True, 4, 2, chunks=3)
    assert not torch.allclose(clean, noisy, atol=1e-3)


def test_engine_aligns_actions_with_frames():
    """reset/observe commit frame 0 with the null action and frame f with action f - 1; step hands the
    commanded action to exactly the frame it produces."""
    net = v2_net()
    world = WorldModel(net, make_memory("window", budget=8), RolloutConfig(chunk=2, sampler=SamplerConfig(
        steps=2)))
    spy = Spy(net.dit)
    world.dit = spy
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (1, 3, 8, 8, 3), dtype=np.uint8)
    world.reset(frames, {"move": [[1, 2]], "view": [[3, 5]], "interact": [[0, 1]]})
    world.observe(frames[:, :1], {"move": [[6]], "view": [[7]], "interact": [[1]]})
    committed = torch.cat([a["move"] for a, _ in spy.calls], dim=1)
    assert committed.tolist() == [[NULL_ACTION, 1, 2, 6]]
    assert all(float(t.max()) == 0.0 for _, t in spy.calls)  # context frames at level 0
    spy.calls.clear()
    world.step({"move": [[8, 0]], "view": [[1, 2]], "interact": [[0, 0]]})
    denoise = [(a, t) for a, t in spy.calls if float(t.max()) > 0]
    assert denoise and all(a["move"].tolist() == [[8, 0]] and a["view"].tolist() == [[1, 2]]
                           for a, _ in denoise)
    assert spy.calls[-1][0]["move"].tolist() == [[8, 0]] and float(spy.calls[-1][1].max()) == 0.0  # commit


def test_training_loss_aligns_actions_with_frames(tmp_path):
    root = make_dataset(tmp_path / "d")
    recipe = load_recipe("tiny-test-world", [f"data.root={root}", "model.forcing.cfg_dropout=0.0"])
    task = WorldTask(recipe.model, recipe)
    net = task.build_model()
    spy = Spy(net)
    batch = next(task.batches("train", 4, seed=0, rank=0, world_size=1))
    task.loss(spy, batch, torch.Generator().manual_seed(0))
    (acts, t), = spy.calls
    for key in ("move", "view", "interact"):
        assert (acts[key][:, 0] == NULL_ACTION).all()  # nothing leads into the clip's first frame
        assert torch.equal(acts[key][:, 1:], batch[key].long())  # transition f -> f+1 conditions f+1


def test_conv_path_sees_the_previous_frame_and_memory_frames_do_not_chain():
    dit = v2_net().dit
    x = torch.randn(1, 3, 12, 4, 4)
    t = torch.full((1, 3), 0.5)
    acts = {k: torch.zeros(1, 3, dtype=torch.long) for k in ("move", "view", "interact")}
    prev = torch.randn(1, 1, 12, 4, 4)
    with torch.no_grad():
        a = dit(x, t, acts, prev=prev, prev_t=torch.zeros(1, 1))
        b = dit(x, t, acts, prev=prev + 1.0, prev_t=torch.zeros(1, 1))
        assert not torch.allclose(a[:, 0], b[:, 0], atol=1e-4)  # frame 0 sees the given previous frame
        x2 = x.clone()
        x2[:, 0] += 1.0
        c = dit(x2, t, acts, chain=False)
        d = dit(x, t, acts, chain=False)
        # without chaining (and with attention) frame 1 still changes through attention only; with
        # chaining it also changes through the conv stem, so the two differences differ
        e = dit(x2, t, acts)
        f = dit(x, t, acts)
    assert not torch.allclose(c[:, 1] - d[:, 1], e[:, 1] - f[:, 1], atol=1e-4)


def test_shift_kernel_moves_the_previous_frame_by_the_selected_tap():
    """A kernel peaked on the tap right of centre shifts the picture one latent pixel left (and the
    identity start leaves it in place), with the edge replicated."""
    from infworld.models.latent_conv import LatentConv

    conv = LatentConv(LatentConvConfig(width=4, groups=2, shift_kernel=3), channels=2, patch=2, dim=8)
    prev = torch.randn(1, 2, 2, 6, 6)
    act = torch.randn(1, 2, 8)
    with torch.no_grad():
        start = conv.shifted(prev, act)
        assert float((start - prev).abs().max()) < 0.03 * float(prev.abs().max())  # centre peak: ~identity
        conv.shift.bias.zero_()
        conv.shift.bias[5] = 50.0  # row 1, column 2 of the 3 x 3 kernel: reads the right neighbour
        moved = conv.shifted(prev, act)
    assert torch.allclose(moved[..., :-1], prev[..., 1:], atol=1e-5)
    assert torch.allclose(moved[..., -1], prev[..., -1], atol=1e-5)  # edge replicated
    with pytest.raises(ConfigError, match="shift_kernel"):
        LatentConvConfig(width=4, groups=2, shift_kernel=4).check()


def test_raw_prev_starts_as_the_model_without_it_and_then_sees_the_unshifted_frame(monkeypatch):
    """``raw_prev`` adds the previous frame as it was: zero-initialised, so a model trained without
    it loads (finetune) and computes the same; once trained, the unshifted frame reaches the stem
    even where the kernel moved the shifted copy away."""
    import infworld.models.loading as loading
    from infworld.models.latent_conv import LatentConv
    from infworld.train.finetune import load_matching

    def conv(raw_prev: bool) -> nn.Module:
        holder = nn.Module()  # export-like: the conv path under the name ``conv``
        holder.conv = LatentConv(LatentConvConfig(width=4, groups=2, shift_kernel=3, raw_prev=raw_prev),
                                 channels=2, patch=2, dim=8)
        return holder

    torch.manual_seed(0)
    base, raw = conv(False), conv(True)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (base, None))
    report = load_matching(raw, "base")
    assert report["new"] == ["conv.stem_raw.weight", "conv.stem_raw.bias"]
    x, prev = torch.randn(1, 2, 2, 6, 6), torch.randn(1, 2, 2, 6, 6)
    prev_t, cond, act = torch.zeros(1, 2), torch.randn(1, 2, 8), torch.randn(1, 2, 8)
    with torch.no_grad():
        before = base.conv.stem(x, prev, prev_t, cond, act)
        assert torch.allclose(before, raw.conv.stem(x, prev, prev_t, cond, act))
        raw.conv.stem_raw.weight.normal_(0.0, 0.5)
        raw.conv.shift.bias.zero_()
        raw.conv.shift.bias[8] = 50.0  # the shifted copy reads the bottom-right neighbour
        other = prev.clone()
        other[..., 0, 0] += 5.0  # the top-left corner: the shifted copy no longer contains it
        assert torch.allclose(raw.conv.shifted(prev, act), raw.conv.shifted(other, act), atol=1e-4)
        gap = raw.conv.stem(x, prev, prev_t, cond, act) - raw.conv.stem(x, other, prev_t, cond, act)
    assert float(gap.abs().max()) > 0.1  # ... but the unshifted one still brings it to the stem
    with pytest.raises(ConfigError, match="raw_prev"):
        LatentConvConfig(width=4, groups=2, raw_prev=True).check()


def test_action_adaln_makes_actions_matter_at_init():
    """With adaLN-zero everything starts at zero; after one shared perturbation the action pathway is
    the only difference between two action sequences."""
    dit = v2_net(conv=False).dit
    x = torch.randn(2, 2, 12, 4, 4)
    t = torch.full((2, 2), 0.5)
    left = {"move": torch.full((2, 2), 4), "view": torch.full((2, 2), 1),
            "interact": torch.zeros(2, 2, dtype=torch.long)}
    right = {**left, "view": torch.full((2, 2), 7)}
    with torch.no_grad():
        assert not torch.allclose(dit(x, t, left), dit(x, t, right), atol=1e-4)
    names = {n for n, _ in dit.named_parameters()}
    assert any(n.startswith("action_mod") for n in names)


def test_pre_v2_config_builds_the_pre_v2_network():
    old = {"in_channels": 12, "latent_size": [4, 4], "patch_size": 2, "dim": 32, "depth": 1, "num_heads": 2,
           "max_frames": 4, "freq_dim": 16, "actions": {"num_interact": 2}}
    from infworld.config import build_dataclass

    cfg = build_dataclass(DiTConfig, old, "dit")
    names = [n for n, _ in DiT(cfg).named_parameters()]
    assert not any(n.startswith(("conv.", "action_mod", "action_norm")) for n in names)


def test_bad_v2_settings_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="cfg_scale"):
        SamplerConfig(cfg_scale=-1.0).check()
    with pytest.raises(ConfigError, match="context_noise"):
        ForcingConfig(context_noise=-0.1).check()
    with pytest.raises(ConfigError, match="context_noise"):
        RolloutConfig(context_noise=-0.5).check()
    with pytest.raises(ConfigError, match="conv.groups"):
        LatentConvConfig(width=10, groups=4).check()
    root = make_dataset(tmp_path / "d")
    recipe = load_recipe("tiny-test-world", [f"data.root={root}", "model.context_noise=0.3"])
    with pytest.raises(ConfigError, match="context_noise"):
        WorldTask(recipe.model, recipe)  # more than the training maximum (0 here)
