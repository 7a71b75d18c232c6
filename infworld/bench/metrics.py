"""Frame and distribution metrics of the bench: numpy in, numpy (or float) out.

Frames are uint8 arrays (N, H, W, 3); features are float arrays (N, D).

- :func:`psnr`, :func:`ssim`: per-frame fidelity against ground truth (SSIM of Wang et al. 2004).
- :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two feature sets
  (Heusel et al. 2017, the formula behind FID; which features are used is the caller's choice).
- :func:`kid`: the unbiased MMD^2 with a cubic polynomial kernel (Binkowski et al. 2018, KID).
- :func:`dynamic_degree_proxy`, :func:`motion_smoothness_proxy`: cheap OpenCV/numpy stand-ins for
  motion statistics. They are proxies, NOT VBench scores (VBench uses RAFT and an AMT interpolation
  network we do not ship); compare them only between runs of this bench.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from infworld.errors import DataError
from infworld.eval.video import psnr as _psnr

SSIM_WINDOW = 11  # Gaussian window size of Wang et al. 2004
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
DATA_RANGE = 255.0


def _frames(x: np.ndarray, name: str) -> np.ndarray:
    """Check a uint8 clip (N, H, W, 3) (or one frame (H, W, 3), made (1, H, W, 3))."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise DataError(f"expected frames of shape (N, H, W, 3), got {x.shape}", field=name)
    if x.dtype != np.uint8:
        raise DataError(f"expected uint8 frames, got dtype {x.dtype}", field=name)
    return x


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _frames(a, "a"), _frames(b, "b")
    if a.shape != b.shape:
        raise DataError(f"frame shapes differ: {a.shape} vs {b.shape}", field="frames")
    return a, b


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame PSNR in dB (N,) of uint8 clips (N, H, W, 3), peak 255, capped at 100 dB when identical."""
    a, b = _pair(a, b)
    return np.asarray(_psnr(a, b), dtype=np.float64)


def _gaussian_window() -> np.ndarray:
    r = SSIM_WINDOW // 2
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()  # (11,)


def _blur_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter over H and W of (N, H, W, C), keeping only the 'valid' region.

    ndimage pads the border, but the interior (H - 10, W - 10) never reads the padding, so the crop
    equals the 'valid' convolution Wang et al. use.
    """
    r = len(g) // 2
    y = ndimage.correlate1d(x, g, axis=1, mode="nearest")
    y = ndimage.correlate1d(y, g, axis=2, mode="nearest")
    return y[:, r:-r, r:-r]  # (N, H - 2r, W - 2r, C)


def ssim(a: np.ndarray, b: np.ndarray, batch: int = 64) -> np.ndarray:
    """Per-frame SSIM (N,) of uint8 clips (N, H, W, 3) (Wang, Bovik, Sheikh, Simoncelli 2004, eq. 13).

    SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01 L)^2, C2 = (0.03 L)^2, L = 255, local statistics under an 11x11 Gaussian window
    (sigma 1.5), valid region only. Computed on each RGB channel separately, the SSIM map averaged
    over pixels and channels. Identical frames give exactly 1.0. Frames must be at least 11x11.
    """
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < SSIM_WINDOW:
        raise DataError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {a.shape[1:3]}",
                        field="frames")
    g = _gaussian_window()
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    out = np.empty(a.shape[0], dtype=np.float64)
    for s in range(0, a.shape[0], batch):  # chunks bound the float64 temporaries
        x = a[s : s + batch].astype(np.float64)  # (n, H, W, 3)
        y = b[s : s + batch].astype(np.float64)
        mx, my = _blur_valid(x, g), _blur_valid(y, g)
        vx = _blur_valid(x * x, g) - mx * mx
        vy = _blur_valid(y * y, g) - my * my
        cxy = _blur_valid(x * y, g) - mx * my
        smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        out[s : s + batch] = smap.reshape(smap.shape[0], -1).mean(axis=1)
    return out


def _features(f: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise DataError(f"expected features of shape (N, D), got {f.shape}", field=name)
    if f.shape[0] < min_rows:
        raise DataError(f"need at least {min_rows} feature vectors, got {f.shape[0]}", field=name)
    if not np.isfinite(f).all():
        raise DataError("features contain NaN or inf", field=name)
    return f


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix (D, D) via eigh (negative round-off clipped)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(fa: np.ndarray, fb: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to features fa (N, D) and fb (M, D).

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))   (Heusel et al. 2017, eq. 6; Dowson &
    Landau 1982). Tr (S_a S_b)^(1/2) is computed as Tr (S_a^(1/2) S_b S_a^(1/2))^(1/2), whose argument
    is symmetric PSD, so eigh gives a real, stable answer even when N < D (singular covariances), where
    scipy's sqrtm returns complex noise. Covariances use ddof=1. Clipped at 0 (round-off).
    """
    fa, fb = _features(fa, "fa"), _features(fb, "fb")
    if fa.shape[1] != fb.shape[1]:
        raise DataError(f"feature sizes differ: {fa.shape[1]} vs {fb.shape[1]}", field="features")
    mu_a, mu_b = fa.mean(axis=0), fb.mean(axis=0)
    sa = np.atleast_2d(np.cov(fa, rowvar=False))  # (D, D)
    sb = np.atleast_2d(np.cov(fb, rowvar=False))
    ra = _psd_sqrt(sa)
    m = ra @ sb @ ra
    m = (m + m.T) / 2  # symmetrise round-off before eigvalsh
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum())
    d2 = float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2.0 * tr_sqrt)
    return max(d2, 0.0)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x.y / D + 1)^3, the KID kernel; (n, D), (m, D) -> (n, m)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with the cubic polynomial kernel; x (m, D), y (n, D)."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))  # off-diagonal means: the unbiased U-statistics
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(fa: np.ndarray, fb: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance-style score of features fa (N, D) vs fb (M, D) (Binkowski et al. 2018).

    The mean over ``subsets`` random subsets (drawn without replacement, size
    min(subset_size, N, M)) of the unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3. Unbiased, so it can
    be slightly negative for samples of one distribution. When the subset size equals both set sizes
    every subset is the whole set and the answer is one exact MMD^2.
    """
    fa, fb = _features(fa, "fa"), _features(fb, "fb")
    if fa.shape[1] != fb.shape[1]:
        raise DataError(f"feature sizes differ: {fa.shape[1]} vs {fb.shape[1]}", field="features")
    if subsets < 1 or subset_size < 2:
        raise DataError(f"kid: need subsets >= 1 and subset_size >= 2, got {subsets}, {subset_size}",
                        field="subsets")
    m = min(subset_size, fa.shape[0], fb.shape[0])
    rng = np.random.default_rng(seed)
    vals = [mmd2_unbiased(fa[rng.choice(fa.shape[0], m, replace=False)],
                          fb[rng.choice(fb.shape[0], m, replace=False)]) for _ in range(subsets)]
    return float(np.mean(vals))


def _gray(frames: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) uint8 luma (ITU-R BT.601 weights, as cv2.cvtColor)."""
    f = frames.astype(np.float32)
    y = 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Mean Farneback optical-flow magnitude (pixels per frame) of each consecutive pair, (N - 1,)."""
    import cv2

    frames = _frames(frames, "frames")
    if frames.shape[0] < 2:
        raise DataError(f"need at least 2 frames for optical flow, got {frames.shape[0]}", field="frames")
    gray = _gray(frames)
    # Farneback (2003) dense flow; a 3-level pyramid and 15 px window suit 64..256 px game frames.
    out = np.empty(frames.shape[0] - 1, dtype=np.float64)
    for t in range(frames.shape[0] - 1):
        flow = cv2.calcOpticalFlowFarneback(gray[t], gray[t + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (H, W, 2)
        out[t] = float(np.linalg.norm(flow, axis=-1).mean())
    return out


def dynamic_degree_proxy(frames: np.ndarray) -> float:
    """PROXY (not VBench's dynamic degree): mean optical-flow magnitude in pixels per frame.

    OpenCV Farneback flow between consecutive luma frames of a clip (N, H, W, 3), averaged over pixels
    and pairs. A frozen video gives ~0; content translating by s pixels per frame gives ~s. VBench's
    "dynamic degree" instead thresholds RAFT flow into a yes/no per video; the two are not comparable.
    The value depends on the frame resolution (pixels), so compare only clips of one size.
    """
    return float(flow_magnitudes(frames).mean())


def motion_smoothness_proxy(frames: np.ndarray) -> float:
    """PROXY (not VBench's motion smoothness): how well each frame is predicted by its neighbours' mean.

    For every triple (t-1, t, t+1) of a clip (N, H, W, 3): 1 - mean|x_t - (x_{t-1} + x_{t+1}) / 2| / 255,
    averaged over triples, in [0, 1]. A frozen video or a linear fade gives 1.0; flicker and jumps
    lower it. VBench interpolates with the AMT network instead of a plain average, so fast but
    smooth motion scores lower here than there; compare only between runs of this bench.
    """
    frames = _frames(frames, "frames")
    if frames.shape[0] < 3:
        raise DataError(f"need at least 3 frames for motion smoothness, got {frames.shape[0]}",
                        field="frames")
    scores = np.empty(frames.shape[0] - 2, dtype=np.float64)
    for t in range(1, frames.shape[0] - 1):  # per triple, so long clips never hold a float copy
        mid = frames[t].astype(np.float64)
        pred = (frames[t - 1].astype(np.float64) + frames[t + 1].astype(np.float64)) / 2.0
        scores[t - 1] = 1.0 - np.abs(mid - pred).mean() / DATA_RANGE
    return float(scores.mean())
