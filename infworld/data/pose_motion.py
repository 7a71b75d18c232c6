"""Camera motion and pose-noise estimation for uncertainty-aware labeling (Infinite-World,
arXiv 2602.02393, Sec. 3.3); the labeling itself is in :mod:`infworld.data.actions`.

The motion of step ``t -> t + 1`` is taken in the camera frame at ``t`` (forward, right, turn right,
pitch up). Pose noise is estimated from finite differences of the track, robustly, so that real
motion does not inflate it (docs/actions.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from infworld.errors import ConfigError, DataError

# Variance of the k-th finite difference of unit white noise is C(2k, k): 2, 6, 20, 70 for k = 1..4.
_DIFF_ORDERS = (1, 2, 3, 4)
_MIN_NOISE_SAMPLES = 6
_Q25_TO_STD = 1.0 / 0.31863936396437514  # std of a normal = quantile(|x|, 0.25) / Phi^-1(0.625)
_CLIP_SIGMAS = 2.5
# E[x^2 | |x| < c] for a standard normal: the variance left after clipping at c std.
_CLIP_VAR = 1.0 - 2.0 * _CLIP_SIGMAS * math.exp(-_CLIP_SIGMAS**2 / 2) / (
    math.sqrt(2.0 * math.pi) * math.erf(_CLIP_SIGMAS / math.sqrt(2.0)))



@dataclass(frozen=True)
class PoseNoise:
    """Per-frame pose noise (standard deviation), as independent Gaussian noise on every frame.

    ``position``: std of each planar coordinate (x and y), in world units.
    ``angle``: std of yaw and of pitch, in degrees.
    ``None`` for either field means "estimate it from the track" (:func:`estimate_noise`).
    """

    position: float | None = None
    angle: float | None = None

    @classmethod
    def parse(cls, value: PoseNoise | Sequence | str | None) -> PoseNoise:
        """Accept a PoseNoise, ``(position, angle)``, ``"position,angle"`` (``auto`` = estimate) or None."""
        out = cls() if value is None else value
        if isinstance(value, str):
            parts = [p.strip().lower() for p in value.split(",")]
            try:
                vals = [None if p in ("auto", "none", "") else float(p) for p in parts]
            except ValueError:
                vals = []
            if len(vals) != 2:
                raise ConfigError(f"noise_std: expected 'POSITION,ANGLE' (numbers or 'auto', e.g. "
                                  f"'1.0,0.5'), got {value!r}")
            out = cls(*vals)
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            out = cls(*value)
        elif not isinstance(out, PoseNoise):
            raise ConfigError(f"noise_std: expected PoseNoise, (position, angle) or 'position,angle', "
                              f"got {value!r} (a single number is ambiguous)")
        for name in ("position", "angle"):
            v = getattr(out, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"noise_std.{name}: expected a finite number >= 0 or None, got {v!r}")
        return out

    def resolved(self) -> bool:
        return self.position is not None and self.angle is not None




def _as_track(position, yaw_deg, pitch_deg) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate a pose track; raise DataError naming the argument at fault."""
    try:
        pos = np.asarray(position, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected a numeric (T, 2) or (T, 3) array ({exc})", field="position") from exc
    if pos.ndim != 2 or pos.shape[1] not in (2, 3):
        raise DataError(f"expected shape (T, 2) or (T, 3), got {pos.shape}", field="position")
    t = pos.shape[0]
    if t < 2:
        raise DataError(f"need at least 2 frames to label 1 action, got T={t}", field="position")
    if not np.all(np.isfinite(pos)):
        raise DataError("contains NaN or inf", field="position")
    out: list[np.ndarray | None] = [None, None]
    for i, (name, arr) in enumerate((("yaw_deg", yaw_deg), ("pitch_deg", pitch_deg))):
        if arr is None and name == "pitch_deg":
            continue
        try:
            out[i] = a = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"expected a numeric (T,) array ({exc})", field=name) from exc
        if a.shape != (t,):
            raise DataError(f"expected shape ({t},) to match position's {t} frames, got {a.shape}",
                            field=name)
        if not np.all(np.isfinite(a)):
            raise DataError("contains NaN or inf", field=name)
    return pos, out[0], out[1]


def wrap_deg(a: np.ndarray) -> np.ndarray:
    """Wrap angles in degrees to [-180, 180): 359 -> 1 is a +2 degree step."""
    return (np.asarray(a, dtype=np.float64) + 180.0) % 360.0 - 180.0


def camera_motion(position, yaw_deg, pitch_deg=None) -> np.ndarray:
    """Per-step motion in the camera frame at the step's start: (T-1, 4) [forward, right, yaw, pitch].

    yaw is the heading in degrees, 0 along +x and counter-clockwise seen from above (z up); the
    yaw column is the turn to the right (heading decrease). Without pitch the pitch column is 0.
    """
    pos, yaw, pitch = _as_track(position, yaw_deg, pitch_deg)
    d = np.diff(pos[:, :2], axis=0)  # (T-1, 2) planar displacement; z (height) is not an action
    psi = np.radians(yaw[:-1])  # (T-1,) heading at frame t
    fwd = d[:, 0] * np.cos(psi) + d[:, 1] * np.sin(psi)
    right = d[:, 0] * np.sin(psi) - d[:, 1] * np.cos(psi)  # along (cos(psi-90), sin(psi-90))
    turn_right = -wrap_deg(np.diff(yaw))
    dpitch = np.diff(pitch) if pitch is not None else np.zeros_like(fwd)
    return np.stack([fwd, right, turn_right, dpitch], axis=1)  # (T-1, 4)


def _noise_residuals(position, yaw_deg, pitch_deg) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Normalised finite differences of orders 1..4 of the poses, for position and for angles.

    Entry k holds |k-th difference| / sqrt(C(2k, k)): for white noise of std s, |N(0, s^2)|. Motion
    adds to them, less for high orders on smooth motion and for low orders on mostly-still tracks.
    Position differences are taken in the camera frame (differences of ``camera_motion``), so a
    steady walk along a curve (walking while turning) looks as flat as a straight one.
    """
    pos, yaw, pitch = _as_track(position, yaw_deg, pitch_deg)
    planar = camera_motion(pos, yaw)[:, :2]  # (T-1, 2): 1st differences, rotated into the camera
    # Unwrap yaw through the wrapped per-step turns so 359 -> 1 does not look like a -358 jump.
    yaw_u = yaw[0] + np.concatenate([[0.0], np.cumsum(wrap_deg(np.diff(yaw)))])
    # A constant pitch column (level camera, e.g. a dataset that stores 0) is not measured: its
    # zero residuals would drag the angle-noise estimate of the yaw towards 0.
    angles = [yaw_u] if pitch is None or np.ptp(pitch) == 0 else [yaw_u, pitch]
    pos_res, ang_res = [], []
    for k in _DIFF_ORDERS:
        norm = math.sqrt(math.comb(2 * k, k))
        pos_res.append(np.abs(np.diff(pos[:, :2], n=k, axis=0)).ravel() / norm)
        if k > 1:  # order 1 is the same in both frames
            pos_res.append(np.abs(np.diff(planar, n=k - 1, axis=0)).ravel() / norm)
        ang_res.append(np.concatenate([np.abs(np.diff(a, n=k)) for a in angles]) / norm)
    return pos_res, ang_res


def _clipped_std(values: np.ndarray) -> float:
    """Noise std from |residuals|: start from the lower quartile, then RMS within 2.5 std, iterated.

    The clipping drops real motion (turn onsets, collisions) that a plain median would count as
    noise, and the low start keeps it from locking onto them; dividing by the variance of a normal
    truncated at +-2.5 std keeps pure noise unbiased.
    """
    s = float(np.quantile(values, 0.25)) * _Q25_TO_STD
    for _ in range(50):
        if s <= 0.0:
            return 0.0
        inliers = values[values < _CLIP_SIGMAS * s]
        s_new = math.sqrt(float(np.mean(inliers**2)) / _CLIP_VAR)
        if abs(s_new - s) <= 1e-9 * s:
            break
        s = s_new
    return s


def _robust_std(residuals: list[list[np.ndarray]], what: str) -> float:
    """min over difference orders of the clipped std of the pooled residuals of that order."""
    estimates = []
    for k in range(len(residuals[0]) if residuals else 0):
        pooled = np.concatenate([r[k] for r in residuals])
        if pooled.size >= _MIN_NOISE_SAMPLES:
            estimates.append(_clipped_std(pooled))
    if not estimates:
        raise DataError(f"track too short to estimate the {what} noise; pass it explicitly",
                        field="noise_std")
    return min(estimates)


def estimate_noise_pooled(tracks: Iterable[tuple], known: PoseNoise | None = None) -> PoseNoise:
    """Estimate per-frame pose noise from several ``(position, yaw_deg, pitch_deg)`` tracks at once.

    Robust (clipped) estimate from the 1st to 4th finite differences, smallest of the four: the 1st
    difference is pure noise on still frames, the 2nd on constant velocity, the 3rd on constant
    acceleration, so whichever kind of motion dominates the track, one order sees mostly noise.
    Fields already given in ``known`` are kept, not estimated.
    """
    known = known or PoseNoise()
    residuals = [_noise_residuals(*track) for track in tracks]
    pos_all, ang_all = [r[0] for r in residuals], [r[1] for r in residuals]
    position = known.position if known.position is not None else _robust_std(pos_all, "position")
    angle = known.angle if known.angle is not None else _robust_std(ang_all, "angle")
    return PoseNoise(float(position), float(angle))


def estimate_noise(position, yaw_deg, pitch_deg=None) -> PoseNoise:
    """Estimate the per-frame pose noise of one track (see :func:`estimate_noise_pooled`)."""
    return estimate_noise_pooled([(position, yaw_deg, pitch_deg)])
