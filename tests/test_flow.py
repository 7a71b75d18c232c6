"""Rectified flow, timestep shift, samplers (exact / approximate integration), diffusion-forcing loss."""

from __future__ import annotations

import math

import pytest
import torch

from infworld.diffusion.flow import (
    FlowConfig,
    add_noise,
    predict_eps,
    predict_x0,
    sample_t,
    shift_t,
    velocity_target,
)
from infworld.diffusion.forcing import ForcingConfig, forcing_loss, forcing_noise_levels
from infworld.diffusion.samplers import (
    SamplerConfig,
    guided,
    sample,
    sample_euler,
    sample_heun,
    sample_stochastic,
    timesteps,
)
from infworld.errors import ConfigError
from infworld.models.action import NULL_ACTION


def test_interpolation_endpoints_and_estimates():
    x0, eps = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    t = torch.rand(2, 3)
    assert torch.equal(add_noise(x0, eps, torch.zeros(2, 3)), x0)
    assert torch.equal(add_noise(x0, eps, torch.ones(2, 3)), eps)
    xt = add_noise(x0, eps, t)
    v = velocity_target(x0, eps)
    assert torch.allclose(predict_x0(xt, v, t), x0, atol=1e-5)
    assert torch.allclose(predict_eps(xt, v, t), eps, atol=1e-5)


def test_timestep_shift():
    t = torch.linspace(0, 1, 11)
    assert torch.equal(shift_t(t, 1.0), t)
    s = shift_t(t, 3.0)
    assert s[0] == 0 and s[-1] == 1 and torch.all(s[1:-1] > t[1:-1]) and torch.all(s.diff() > 0)
    assert math.isclose(float(shift_t(torch.tensor(0.5), 3.0)), 0.75, rel_tol=1e-6)  # 3*.5/(1+2*.5)


def test_training_t_sampling():
    g = torch.Generator().manual_seed(0)
    t = sample_t((20000,), FlowConfig(), g)
    assert 0 < float(t.min()) and float(t.max()) < 1
    assert abs(float(t.mean()) - 0.5) < 0.01  # logit-normal(0, 1) is symmetric around 0.5
    shifted = sample_t((20000,), FlowConfig(shift=3.0), torch.Generator().manual_seed(0))
    assert float(shifted.mean()) > 0.6
    u = sample_t((20000,), FlowConfig(t_sampling="uniform"), g)
    assert abs(float(u.std()) - (1 / 12) ** 0.5) < 0.01
    with pytest.raises(ConfigError, match="logit_std"):
        FlowConfig(logit_std=0).check()


def test_euler_integrates_a_straight_flow_exactly():
    x0, eps = torch.randn(3, 5), torch.randn(3, 5)

    def v(x, t):  # the exact velocity of the straight path through (x0, eps)
        return eps - x0

    for steps in (1, 3, 10):
        out = sample_euler(v, eps.clone(), timesteps(steps, shift=2.0))
        assert torch.allclose(out, x0, atol=1e-5)
    assert torch.allclose(sample_heun(v, eps.clone(), timesteps(4)), x0, atol=1e-5)


def test_heun_is_more_accurate_than_euler_on_a_curved_flow():
    # dx/dt = x  =>  x(0) = x(1) * e^{-1}
    x1 = torch.randn(100)
    exact = x1 * math.exp(-1.0)
    ts = timesteps(8)
    err_euler = (sample_euler(lambda x, t: x, x1, ts) - exact).abs().max()
    err_heun = (sample_heun(lambda x, t: x, x1, ts) - exact).abs().max()
    assert err_heun < err_euler / 5
    assert err_heun < 0.02 * x1.abs().max()


def test_stochastic_sampler_with_eta_zero_is_euler_and_is_seeded():
    x = torch.randn(4, 6)

    def v(x, t):
        return torch.sin(x) + t

    ts = timesteps(5)
    assert torch.allclose(sample_stochastic(v, x, ts, eta=0.0), sample_euler(v, x, ts), atol=1e-5)
    a = sample_stochastic(v, x, ts, torch.Generator().manual_seed(3), eta=0.7)
    b = sample_stochastic(v, x, ts, torch.Generator().manual_seed(3), eta=0.7)
    assert torch.equal(a, b)


def test_guidance_and_sampler_config():
    fn = guided(lambda x, t: x + 1, lambda x, t: x, 3.0)
    assert torch.equal(fn(torch.zeros(2), torch.tensor(0.5)), torch.full((2,), 3.0))
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    out = sample(SamplerConfig(name="heun", steps=3), lambda x, t: eps - x0, eps)
    assert torch.allclose(out, x0, atol=1e-5)
    with pytest.raises(ConfigError, match="unknown sampler"):
        SamplerConfig(name="ddim").check()
    with pytest.raises(ConfigError, match="steps"):
        SamplerConfig(steps=0).check()


def test_forcing_noise_levels_prefix_regime():
    g = torch.Generator().manual_seed(0)
    t, mask = forcing_noise_levels(64, 6, FlowConfig(), ForcingConfig(prefix_prob=1.0), g)
    for b in range(64):
        p = int((~mask[b]).sum())
        assert 1 <= p <= 5 and not mask[b, :p].any() and mask[b, p:].all()
        assert torch.all(t[b, :p] == 0)
        assert torch.allclose(t[b, p:], t[b, p].expand(6 - p))  # the noisy chunk shares one level
    t, mask = forcing_noise_levels(64, 6, FlowConfig(), ForcingConfig(prefix_prob=0.0), g)
    assert mask.all() and torch.all(t > 0)
    assert float(t.std(dim=1).mean()) > 0.05  # independent levels per frame


def test_forcing_loss_ignores_context_frames_and_drops_actions():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 5, 2, 2, 2)
    acts = {"move": torch.randint(0, 10, (16, 5))}
    seen = {}

    def perfect_on_noisy(x_t, t, a):
        seen["actions"] = a
        # recover the exact target where t > 0, garbage on the clean context (t = 0, no loss)
        eps = (x_t - (1 - t[..., None, None, None]) * x0) / t[..., None, None, None].clamp(min=1e-6)
        v = eps - x0
        return torch.where(t[..., None, None, None] > 0, v, torch.full_like(v, 100.0))

    loss, metrics = forcing_loss(perfect_on_noisy, x0, acts, FlowConfig(), ForcingConfig(prefix_prob=1.0), g)
    assert float(loss) < 1e-6 and metrics["prefix_share"] == 1.0
    forcing_loss(perfect_on_noisy, x0, acts, FlowConfig(), ForcingConfig(cfg_dropout=1.0), g)
    assert torch.all(seen["actions"]["move"] == NULL_ACTION)
    with pytest.raises(ConfigError, match="prefix_prob"):
        ForcingConfig(prefix_prob=1.5).check()


def test_forcing_region_weight_counts_errors_inside_the_region_more():
    """An error only in the bottom quarter of the frame weighs region_weight times an error of the
    same size elsewhere; the weight map has mean 1 (the loss keeps its scale) and bad regions are
    rejected by name."""
    x0 = torch.randn(4, 3, 2, 8, 8)
    acts = {"move": torch.zeros(4, 3, dtype=torch.long)}

    def error_at(rows: slice):
        def fn(x_t, t, a):  # the exact velocity, plus a unit error on some rows
            tt = t[..., None, None, None]
            v = (x_t - (1 - tt) * x0) / tt.clamp(min=1e-6) - x0
            v = v.clone()
            v[..., rows, :] += 1.0
            return v
        return fn

    plain = ForcingConfig(prefix_prob=0.0)
    region = ForcingConfig(prefix_prob=0.0, region=(0.75, 1.0, 0.0, 1.0), region_weight=4.0)
    loss = {}
    for name, cfg in (("plain", plain), ("region", region)):
        for where, rows in (("bottom", slice(6, 8)), ("top", slice(0, 2))):
            g = torch.Generator().manual_seed(0)
            loss[name, where] = float(forcing_loss(error_at(rows), x0, acts, FlowConfig(), cfg, g)[0])
    assert loss["plain", "bottom"] == pytest.approx(loss["plain", "top"], rel=1e-3)
    assert loss["region", "bottom"] == pytest.approx(4 * loss["region", "top"], rel=1e-3)
    # mean-1 map: 2 of 8 rows at weight 4 -> bottom error 4 / 1.75 of the plain one, top 1 / 1.75
    assert loss["region", "bottom"] == pytest.approx(loss["plain", "bottom"] * 4 / 1.75, rel=1e-3)
    for bad in ((0.5, 0.2, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.2, 0.0, 1.0)):
        with pytest.raises(ConfigError, match="forcing.region"):
            ForcingConfig(region=bad, region_weight=2.0).check()
    with pytest.raises(ConfigError, match="region_weight"):
        ForcingConfig(region_weight=0.0).check()


def test_loss_goes_down_on_a_tiny_overfit():
    from infworld.models.action import ActionConfig, frame_actions
    from infworld.models.dit import DiT, DiTConfig

    torch.manual_seed(0)
    cfg = DiTConfig(
        in_channels=4,
        latent_size=(4, 4),
        patch_size=2,
        dim=32,
        depth=2,
        num_heads=2,
        max_frames=6,
        freq_dim=16,
        actions=ActionConfig(num_interact=1),
    )
    model = DiT(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # clips that share a pattern plus small variations: learnable within a few dozen steps
    x0 = torch.randn(1, 1, 4, 4, 4).expand(4, 6, 4, 4, 4) + 0.1 * torch.randn(4, 6, 4, 4, 4)
    acts = frame_actions(
        {
            "move": torch.randint(0, 10, (4, 5)),
            "view": torch.randint(0, 10, (4, 5)),
            "interact": torch.zeros(4, 5, dtype=torch.long),
        }
    )
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(80):
        loss, _ = forcing_loss(model, x0, acts, FlowConfig(), ForcingConfig(), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
