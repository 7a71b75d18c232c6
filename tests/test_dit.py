"""The block-causal DiT: shapes, causality, per-frame noise, windows, RoPE relativity, actions, configs."""

from __future__ import annotations

import pytest
import torch

from infworld.errors import ConfigError, DataError
from infworld.models.action import NULL_ACTION, ActionConfig, ActionEncoder, drop_actions, frame_actions
from infworld.models.dit import DiT, DiTConfig, frame_mask
from infworld.models.kvcache import PastKV
from infworld.models.rope import Rope3D, apply_rotary, axis_split


def tiny_config(**kw) -> DiTConfig:
    base = dict(
        in_channels=4,
        latent_size=(4, 6),
        patch_size=2,
        dim=32,
        depth=2,
        num_heads=2,
        max_frames=8,
        freq_dim=16,
        actions=ActionConfig(num_interact=3),
    )
    base.update(kw)
    return DiTConfig(**base)


def randomised(cfg: DiTConfig, seed: int = 0) -> DiT:
    """A DiT with all weights random (the zero-initialised adaLN would hide most dependencies)."""
    torch.manual_seed(seed)
    model = DiT(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def inputs(b: int = 2, f: int = 5, cfg: DiTConfig | None = None, seed: int = 1):
    cfg = cfg or tiny_config()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, f, cfg.in_channels, *cfg.latent_size, generator=g)
    t = torch.rand(b, f, generator=g)
    acts = {
        "move": torch.randint(0, 10, (b, f), generator=g),
        "view": torch.randint(0, 10, (b, f), generator=g),
        "interact": torch.randint(0, 3, (b, f), generator=g),
    }
    return x, t, acts


def test_output_shape_and_zero_init():
    cfg = tiny_config()
    x, t, a = inputs(cfg=cfg)
    model = DiT(cfg)
    out = model(x, t, a)
    assert out.shape == x.shape
    # adaLN-zero: the output projection starts at zero, so the untrained net predicts zero velocity.
    assert torch.count_nonzero(out) == 0
    assert cfg.tokens_per_frame == 2 * 3


def test_patchify_roundtrip():
    model = DiT(tiny_config())
    x, _, _ = inputs()
    tokens = model.patchify(x)
    assert tokens.shape == (2, 5, 6, 4 * 2 * 2)
    assert torch.equal(model.unpatchify(tokens), x)


def test_block_causal_changing_a_later_frame_never_changes_earlier_outputs():
    model = randomised(tiny_config())
    x, t, a = inputs()
    out = model(x, t, a)
    x2 = x.clone()
    x2[:, 3] += torch.randn_like(x2[:, 3])
    a2 = {k: v.clone() for k, v in a.items()}
    a2["move"][:, 3] = (a2["move"][:, 3] + 1) % 10
    out2 = model(x2, t, a2)
    assert torch.allclose(out[:, :3], out2[:, :3], atol=1e-6)
    assert not torch.allclose(out[:, 3:], out2[:, 3:], atol=1e-3)  # later frames do see the change


def test_per_frame_noise_levels():
    model = randomised(tiny_config())
    x, t, a = inputs()
    out = model(x, t, a)
    t2 = t.clone()
    t2[:, 2] = 1.0 - t2[:, 2]
    out2 = model(x, t2, a)
    # frame 2's own output responds to its own level; earlier frames ignore it
    assert torch.allclose(out[:, :2], out2[:, :2], atol=1e-6)
    assert not torch.allclose(out[:, 2], out2[:, 2], atol=1e-3)
    with pytest.raises(ConfigError, match="noise levels"):
        model(x, t[:, 0], a)


def test_sliding_window_mask():
    m = frame_mask(torch.arange(5.0), torch.arange(5.0), window=2)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]
    )
    assert torch.equal(m, expected.bool())
    pinned = frame_mask(
        torch.arange(2.0),
        torch.tensor([-5.0, 0.0, 1.0]),
        window=1,
        k_pinned=torch.tensor([True, False, False]),
    )
    assert torch.equal(pinned, torch.tensor([[1, 1, 0], [1, 0, 1]]).bool())

    model = randomised(tiny_config())
    x, t, a = inputs(f=6)
    out = model(x, t, a, window=2)
    x2 = x.clone()
    x2[:, 1] += 1.0  # outside frame 4's window of 2 frames at every layer depth (receptive field 2 * 2 - 1)
    out2 = model(x2, t, a, window=2)
    assert torch.allclose(out[:, 4:], out2[:, 4:], atol=1e-6)
    assert not torch.allclose(out[:, 2], out2[:, 2], atol=1e-3)


def test_past_kv_matches_a_full_forward_and_rope_is_relative():
    model = randomised(tiny_config())
    x, t, a = inputs(f=6)
    t[:, :4] = 0.0
    full = model(x, t, a)
    # the first 4 frames as cached context, the last 2 as the new chunk
    _, kv = model(x[:, :4], t[:, :4], {k: v[:, :4] for k, v in a.items()}, return_kv=True)
    past = PastKV([k for k, _ in kv], [v for _, v in kv], torch.arange(4.0), torch.zeros(4, dtype=torch.bool))
    chunk = model(
        x[:, 4:], t[:, 4:], {k: v[:, 4:] for k, v in a.items()}, positions=torch.tensor([4.0, 5.0]), past=past
    )
    assert torch.allclose(chunk, full[:, 4:], atol=1e-5)
    # shifting every position by the same offset changes nothing (scores depend on differences only)
    shifted = model(x, t, a, positions=torch.arange(6.0) + 1000.0)
    assert torch.allclose(shifted, full, atol=1e-3)


def test_rope_rotation_preserves_norms_and_split():
    assert sum(axis_split(32)) == 32 and all(d % 2 == 0 for d in axis_split(32))
    rope = Rope3D(32)
    cos, sin = rope.cos_sin(torch.arange(3.0), (2, 2))
    assert cos.shape == (3 * 4, 16)
    q = torch.randn(1, 2, 12, 32)
    rq = apply_rotary(q, cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    with pytest.raises(ConfigError, match="head_dim"):
        Rope3D(7)


def test_actions_null_frame_zero_and_cfg_dropout():
    enc = ActionEncoder(ActionConfig(num_interact=2), dim=8)
    trans = {
        "move": torch.tensor([[1, 2]]),
        "view": torch.tensor([[3, 4]]),
        "interact": torch.tensor([[0, 1]]),
    }
    per_frame = frame_actions(trans)
    assert per_frame["move"].tolist() == [[NULL_ACTION, 1, 2]]
    e = enc(per_frame, 1, 3)
    assert torch.allclose(e[0, 0], enc.null)
    assert not torch.allclose(e[0, 1], enc.null)
    dropped = drop_actions(per_frame, torch.tensor([True]))
    assert torch.allclose(enc(dropped, 1, 3), enc.null.expand(1, 3, 8))


def test_continuous_action_field_plugs_in():
    cfg = tiny_config(actions=ActionConfig(num_interact=1, continuous={"mouse": 2}))
    model = randomised(cfg)
    x, t, a = inputs(cfg=cfg)
    a["interact"] = torch.zeros_like(a["interact"])
    a["mouse"] = torch.randn(2, 5, 2)
    out = model(x, t, a)
    a["mouse"] = a["mouse"] + 1.0
    assert not torch.allclose(out, model(x, t, a), atol=1e-4)
    with pytest.raises(ConfigError, match="continuous"):
        ActionConfig(num_interact=1, continuous={"move": 2}).check()


def test_bad_actions_are_rejected():
    model = randomised(tiny_config())
    x, t, a = inputs()
    bad = dict(a, interact=torch.full_like(a["interact"], 3))
    with pytest.raises(DataError, match="interact"):
        model(x, t, bad)
    with pytest.raises(DataError, match="interact"):
        model(x, t, {k: v for k, v in a.items() if k != "interact"})
    with pytest.raises(DataError, match="view"):
        model(x, t, dict(a, view=torch.full_like(a["view"], -2)))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="unresolved"):
        DiT(DiTConfig())
    with pytest.raises(ConfigError, match="patch_size"):
        DiT(tiny_config(patch_size=4))
    with pytest.raises(ConfigError, match="num_heads"):
        DiT(tiny_config(dim=30, num_heads=4))
    with pytest.raises(ConfigError, match="max_frames"):
        DiT(tiny_config(max_frames=0))
    with pytest.raises(ConfigError, match="num_interact"):
        DiT(tiny_config(actions=ActionConfig(num_interact=0)))
    model = DiT(tiny_config())
    x, t, a = inputs()
    with pytest.raises(ConfigError, match="latents"):
        model(x[:, :, :3], t, a)


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = tiny_config()
    x, t, a = inputs(cfg=cfg)
    grads = []
    for ckpt in (False, True):
        model = randomised(tiny_config(grad_checkpointing=ckpt)).train()
        model(x, t, a).pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
