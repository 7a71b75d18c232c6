"""The frame autoencoder: shapes, conversions, latent statistics, checkpointing, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infworld.errors import ConfigError, DataError
from infworld.eval.video import psnr, psnr_from_mse
from infworld.models.autoencoder import AutoencoderConfig, FrameAutoencoder


def tiny(**kw) -> FrameAutoencoder:
    base = dict(image_size=(16, 24), patch=2, downsample=4, channels=4, max_channels=8, latent_channels=3)
    base.update(kw)
    torch.manual_seed(0)
    return FrameAutoencoder(AutoencoderConfig(**base))


@pytest.mark.parametrize("kw, latent", [
    ({}, (3, 4, 6)),
    ({"downsample": 8, "patch": 4, "image_size": (32, 16)}, (3, 4, 2)),
    ({"downsample": 2, "patch": 2}, (3, 8, 12)),
    ({"downsample": 4, "patch": 1, "blocks": 2, "norm_groups": 2}, (3, 4, 6)),
])
def test_shapes_follow_the_config(kw, latent):
    m = tiny(**kw)
    h, w = m.config.image_size
    assert m.latent_shape == latent
    frames = torch.randint(0, 256, (2, 5, 3, h, w), dtype=torch.uint8)  # any leading dims
    z = m.encode(frames)
    assert z.shape == (2, 5, *latent)
    out = m.decode(z)
    assert out.shape == (2, 5, 3, h, w) and out.min() >= -1 and out.max() <= 1
    recon, raw = m(frames[0])
    assert recon.shape == (5, 3, h, w) and raw.shape == (5, *latent)


def test_uint8_and_float_inputs_agree():
    m = tiny().eval()
    frames = torch.randint(0, 256, (3, 3, 16, 24), dtype=torch.uint8)
    x = frames.float() / 127.5 - 1
    torch.testing.assert_close(m.encode(frames), m.encode(x))
    assert torch.equal(FrameAutoencoder.to_uint8(x), frames)  # exact round trip of the conversions


def test_running_stats_standardise_latents():
    m = tiny()
    with torch.no_grad():  # make the raw latents clearly non-standard
        m.encoder[-1].bias.copy_(torch.tensor([3.0, -2.0, 0.5]))
        m.encoder[-1].weight.mul_(10)
    frames = torch.randint(0, 256, (64, 3, 16, 24), dtype=torch.uint8)
    m.train()
    for chunk in frames.split(16):
        m(chunk)  # training-mode forward passes update the statistics
    m.eval()
    z = m.encode(frames)
    assert z.mean(dim=(0, 2, 3)).abs().max() < 0.05
    assert (z.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05
    # decode() undoes the standardisation: same frames as decoding the raw latents
    raw = m.encode_raw(m.to_float(frames[:4]))
    torch.testing.assert_close(m.decode(m.normalize(raw)), m.decode_raw(raw).clamp(-1, 1))
    assert int(m.stats_count) == 4
    m.eval()
    m(frames[:4])
    assert int(m.stats_count) == 4  # eval passes leave them alone


def test_calibrate_sets_exact_statistics():
    m = tiny().eval()
    frames = torch.randint(0, 256, (10, 3, 16, 24), dtype=torch.uint8)
    assert m.calibrate(frames.split(4)) == 10
    z = m.encode(frames)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-3, rtol=0)
    with pytest.raises(DataError, match="no frames"):
        m.calibrate([])


def test_grad_checkpointing_same_gradients():
    frames = torch.randint(0, 256, (4, 3, 16, 24), dtype=torch.uint8)
    grads = []
    for ckpt in (False, True):
        m = tiny(grad_checkpointing=ckpt, blocks=2)
        with torch.no_grad():  # non-zero residual branches so the blocks matter
            for p in m.parameters():
                p.add_(0.01)
        recon, _ = m(frames)
        recon.pow(2).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


def test_upsample_starts_without_checkerboard():
    m = tiny()
    up = next(layer for layer in m.decoder if layer.__class__.__name__ == "Upsample")
    y = up(torch.randn(1, up.conv.in_channels, 4, 4))  # (1, C, 8, 8)
    torch.testing.assert_close(y[..., 0::2, 0::2], y[..., 1::2, 1::2])


@pytest.mark.parametrize("kw, field", [
    ({"downsample": 6}, "downsample"),
    ({"patch": 8, "downsample": 4}, "patch"),
    ({"image_size": (18, 24)}, "image_size"),
    ({"latent_channels": 0}, "latent_channels"),
    ({"norm_groups": 3}, "norm_groups"),
])
def test_bad_config_rejected(kw, field):
    with pytest.raises(ConfigError, match=field):
        tiny(**kw)


def test_bad_inputs_rejected():
    m = tiny()
    with pytest.raises(DataError, match=r"frames.*\(\.\.\., 3, 16, 24\)"):
        m.encode(torch.zeros(2, 3, 16, 16))
    with pytest.raises(DataError, match="latents"):
        m.decode(torch.zeros(2, 4, 4, 6))
    with pytest.raises(DataError, match="dtype"):
        m.encode(torch.zeros(2, 3, 16, 24, dtype=torch.int32))


def test_tokenizer_psnr_is_the_one_psnr():
    """The tokenizer task's two PSNRs go through infworld.eval.video: per frame on uint8 (N, 3, H, W)
    (evaluation) and from the batch MSE of frames in [-1, 1] (the training metric), same numbers as
    the formulas they replaced."""
    a = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    b = a.clone()
    b[0] += 1  # MSE 1 -> 20 log10(255) = 48.13 dB
    b[1] += 255  # MSE 255^2 -> 0 dB
    np.testing.assert_allclose(psnr(a.numpy(), b.numpy()), [48.1308, 0.0], atol=1e-3)
    assert psnr(a.numpy(), a.numpy()).min() == 100.0
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g) * 2 - 1
    y = (x + 0.1 * torch.randn(4, 3, 8, 8, generator=g)).clamp(-1, 1)
    mse = float((y - x).pow(2).mean())
    old = 10.0 * math.log10(4.0 / max(mse, 1e-12))  # the formula the training metric used
    assert float(psnr_from_mse(mse, peak=2.0)) == pytest.approx(old, abs=1e-9)
    # the same PSNR as of the frames in 0..255 (unquantised), batch MSE
    as255 = psnr(((x + 1) * 127.5).reshape(1, -1).numpy(), ((y + 1) * 127.5).reshape(1, -1).numpy())
    assert float(as255[0]) == pytest.approx(old, abs=1e-4)
