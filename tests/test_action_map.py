"""``dit.conv.action_map``: per-latent-pixel action features (infworld/models/action_map.py)."""

from __future__ import annotations

import pytest
import torch

from infworld.errors import ConfigError
from infworld.models.action import ActionConfig
from infworld.models.action_map import ActionMap
from infworld.models.dit import DiT, DiTConfig
from infworld.models.latent_conv import LatentConvConfig


def dit(action_map: int = 0) -> DiT:
    cfg = DiTConfig(in_channels=4, latent_size=(8, 8), patch_size=4, dim=32, depth=2, num_heads=2,
                    max_frames=4, action_adaln=True, actions=ActionConfig(num_interact=3),
                    conv=LatentConvConfig(width=8, groups=4, shift_kernel=3, action_map=action_map))
    torch.manual_seed(0)
    net = DiT(cfg)
    for name, p in net.named_parameters():  # random weights, so the output depends on everything
        if not name.endswith("action_map.mix"):
            torch.nn.init.normal_(p, std=0.2)
    return net.eval()


def acts(move: int, b: int = 1) -> dict[str, torch.Tensor]:
    return {"move": torch.full((b, 3), move), "view": torch.full((b, 3), 4),
            "interact": torch.zeros(b, 3).long()}


def test_action_map_starts_as_the_model_without_it_then_acts_at_one_place():
    plain, mapped = dit(), dit(action_map=2)
    missing, unexpected = mapped.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["conv.action_map.mix", "conv.action_map.proj.bias",
                               "conv.action_map.proj.weight"]
    assert not unexpected
    x, t = torch.randn(1, 3, 4, 8, 8), torch.full((1, 3), 0.5)
    with torch.no_grad():
        # a finetune starts exactly at its source
        assert torch.allclose(plain(x, t, acts(1)), mapped(x, t, acts(1)), atol=1e-6)
        mapped.conv.action_map.mix[9, 0] = 1.0  # latent pixel (1, 1) gets the action's first basis
        assert not torch.allclose(mapped(x, t, acts(1)), plain(x, t, acts(1)), atol=1e-4)
    amap = mapped.conv.action_map
    act = torch.randn(2, 3, 32)
    feat = amap(act)  # (B, F, P, W)
    assert feat.shape == (2, 3, 64, 8)
    others = torch.cat([feat[:, :, :9], feat[:, :, 10:]], dim=2)
    assert torch.count_nonzero(others) == 0 and torch.count_nonzero(feat[:, :, 9]) > 0  # only that pixel
    assert not torch.allclose(amap(act + 1.0)[:, :, 9], feat[:, :, 9])  # and it follows the action


def test_action_map_trains_and_is_checked():
    net = dit(action_map=2).train()
    x, t = torch.randn(2, 3, 4, 8, 8), torch.full((2, 3), 0.5)
    net(x, t, acts(2, 2)).pow(2).mean().backward()
    assert net.conv.action_map.mix.grad is not None and net.conv.action_map.mix.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="dit.conv.action_map"):
        LatentConvConfig(width=8, action_map=-1).check()
    assert ActionMap(8, 4, 6, 1)(torch.zeros(1, 1, 8)).shape == (1, 1, 6, 4)
