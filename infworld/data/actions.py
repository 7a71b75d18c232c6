"""Uncertainty-aware action labeling from camera poses (Infinite-World, arXiv 2602.02393, Sec. 3.3).

Noisy continuous camera motion becomes a tri-state per axis (negative / none / positive) plus an
explicit *uncertain* label between a "clearly still" and a "clearly moving" threshold, so noisy
labels never teach the model a wrong response. Method, defaults, ViZDoom measurements: docs/actions.md.

The motion of step ``t -> t + 1`` (action ``t``) is taken in the camera frame at ``t`` (forward,
right, turn right, pitch up: :func:`camera_motion`). Each axis with measured motion ``c`` and noise
std ``s`` (from the pose noise, estimated when not given) in a group with typical moving speed
``S`` (move, turn or pitch, estimated robustly from the data) is labelled::

    still      if |c| <= still_frac * S - z * s
    sign(c)    if |c| >= move_frac  * S + z * s
    uncertain  otherwise

and a move / view id is uncertain (9) when either of its two axes is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np

from infworld.data.action_schema import (  # noqa: F401  (re-exported: one import for label users)
    MOVE_NONE,
    NUM_MOVE,
    NUM_VIEW,
    UNCERTAIN,
    VIEW_NONE,
    decode_move,
    decode_pair,
    decode_view,
    encode_move,
    encode_pair,
    encode_view,
)
from infworld.errors import ConfigError, DataError

AXES = ("forward", "right", "yaw", "pitch")
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


@dataclass(frozen=True)
class LabelThresholds:
    """Decision thresholds, as fractions of the typical moving speed plus a noise margin.

    still_frac, move_frac: the still / moving boundary is at half the typical moving speed; motion
        below still_frac x S counts as "none" (creep, coasting, wall sliding), above move_frac x S
        as moving, and the narrow band in between is uncertain even without noise.
    z: noise margin, in standard deviations of the measured motion, added on both sides of the band
        so that a label is given only when it is on its side with probability ~Phi(z) or more.
        Defaults were chosen on ViZDoom data of another seed than the reported one (docs/actions.md).
    detect_sigmas: a step counts as "detected motion" if it exceeds this many noise std.
    ref_quantile, core_frac: typical speed = median of the detected |motion| values of the group
        that are at least ``core_frac`` times their ``ref_quantile`` quantile: the speed of steady
        motion, not dragged down by starts, stops and wall contact, and hardly moved by noise.
    min_motion_share: a group whose detected share of steps is below this has no motion at all
        (pure noise peaks): its steps are still within detect_sigmas std of zero, else uncertain.
    move_speed, turn_speed, pitch_speed: known typical per-step speeds (world units, degrees,
        degrees); None = estimate from the data.
    """

    still_frac: float = 0.47
    move_frac: float = 0.53
    z: float = 1.0
    detect_sigmas: float = 3.0
    ref_quantile: float = 0.95
    core_frac: float = 0.5
    min_motion_share: float = 0.02
    move_speed: float | None = None
    turn_speed: float | None = None
    pitch_speed: float | None = None

    def validate(self) -> LabelThresholds:
        for f in fields(self):
            v, speed = getattr(self, f.name), f.name.endswith("_speed")
            if not ((v is None and speed) or (isinstance(v, (int, float)) and math.isfinite(v)
                                              and (v > 0 if speed else v >= 0))):
                raise ConfigError(f"LabelThresholds.{f.name}: expected a finite number "
                                  f"{'> 0 or None' if speed else '>= 0'}, got {v!r}")
        if not (0 < self.still_frac < self.move_frac and 0 < self.ref_quantile <= 1
                and 0 < self.core_frac <= 1 and self.min_motion_share < 1):
            raise ConfigError(f"LabelThresholds: need 0 < still_frac < move_frac, ref_quantile and "
                              f"core_frac in (0, 1] and min_motion_share < 1, got {self}")
        return self


@dataclass(frozen=True)
class TypicalSpeeds:
    """Typical per-step speed of each group when moving; None = no motion above the noise."""

    move: float | None
    turn: float | None
    pitch: float | None

    def per_axis(self) -> list[float | None]:
        return [self.move, self.move, self.turn, self.pitch]  # AXES order


@dataclass
class PoseLabels:
    """Labels of a pose track of T frames (all arrays have T - 1 rows, one per action).

    move, view: (T-1,) int64 ids 0..9 (action_schema; 9 = uncertain).
    axes: (T-1, 4) int8 tri-states in AXES order, 0 where uncertain.
    uncertain: (T-1, 4) bool. confidence: (T-1, 4) float in [0, 1], the Gaussian probability that
        the true motion is on the labelled side of its band edge (uncertain steps: the larger of the
        two sides, below Phi(z)). motion: (T-1, 4) camera-frame motion [forward, right, yaw right,
        pitch up].
    noise: the noise used (given or estimated); speeds: the typical speeds used.
    """

    move: np.ndarray
    view: np.ndarray
    axes: np.ndarray
    uncertain: np.ndarray
    confidence: np.ndarray
    motion: np.ndarray
    noise: PoseNoise
    speeds: TypicalSpeeds

    def tristate(self, axis: str) -> tuple[np.ndarray, np.ndarray]:
        """``(values in {-1, 0, 1}, uncertain mask)`` of one axis by name."""
        if axis not in AXES:
            raise ConfigError(f"unknown axis {axis!r}; expected one of {AXES}")
        return self.axes[:, AXES.index(axis)], self.uncertain[:, AXES.index(axis)]


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


def motion_std(motion: np.ndarray, noise: PoseNoise, has_pitch: bool = True) -> np.ndarray:
    """Std of each measured camera-frame motion component, (T-1, 4), from the per-frame pose noise.

    A displacement is the difference of two noisy positions (variance 2 s_p^2 per axis); heading
    noise at frame t (s_a, radians) leaks the other planar component in (first order: delta * other).
    A turn or pitch step is the difference of two noisy angles (variance 2 s_a^2).
    """
    sp2, sa = 2.0 * float(noise.position) ** 2, math.radians(float(noise.angle))
    ang = np.full(motion.shape[0], math.sqrt(2.0) * float(noise.angle))
    return np.stack([np.sqrt(sp2 + (motion[:, 1] * sa) ** 2), np.sqrt(sp2 + (motion[:, 0] * sa) ** 2),
                     ang, ang if has_pitch else np.zeros_like(ang)], axis=1)  # (T-1, 4)


def estimate_speeds(motions: Sequence[np.ndarray], stds: Sequence[np.ndarray],
                    thresholds: LabelThresholds | None = None) -> TypicalSpeeds:
    """Typical per-step speed of each group (move, turn, pitch) over one or more tracks.

    Only components above ``detect_sigmas`` noise std count (detected motion); the typical speed is
    the median of their steady core (see LabelThresholds). A group with fewer than
    ``min_motion_share`` of its values detected (or fewer than 3) gets None: no motion, only noise.
    Speeds given in ``thresholds`` win.
    """
    thr = (thresholds or LabelThresholds()).validate()
    groups = {"move": (0, 1), "turn": (2,), "pitch": (3,)}
    given = {"move": thr.move_speed, "turn": thr.turn_speed, "pitch": thr.pitch_speed}
    out: dict[str, float | None] = {}
    for name, cols in groups.items():
        if given[name] is not None:
            out[name] = float(given[name])
            continue
        detected, total = [], 0
        for m, s in zip(motions, stds, strict=True):
            a = np.abs(m[:, cols])  # (T-1, len(cols))
            detected.append(a[a > thr.detect_sigmas * s[:, cols]])
            total += a.size
        vals = np.concatenate(detected) if detected else np.zeros(0)
        if vals.size < 3 or vals.size < thr.min_motion_share * total:
            out[name] = None
        else:
            core = vals[vals >= thr.core_frac * np.quantile(vals, thr.ref_quantile)]
            out[name] = float(np.median(core))
    return TypicalSpeeds(**out)


def _phi(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, elementwise (no scipy dependency)."""
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x) / math.sqrt(2.0)))


def label_motion(motion: np.ndarray, std: np.ndarray, speeds: TypicalSpeeds, noise: PoseNoise,
                 thresholds: LabelThresholds | None = None) -> PoseLabels:
    """Tri-state + uncertain labels from camera-frame motion (T-1, 4) and its std (T-1, 4)."""
    thr = (thresholds or LabelThresholds()).validate()
    mag = np.abs(motion)  # (T-1, 4)
    b_lo = np.empty_like(mag)  # semantic band edges: still below b_lo, moving above b_hi
    b_hi = np.empty_like(mag)
    for i, s in enumerate(speeds.per_axis()):
        if s is None:
            # No motion above the noise anywhere: "still" = within detect_sigmas std of zero.
            b_lo[:, i] = (thr.detect_sigmas + thr.z) * std[:, i]
            b_hi[:, i] = np.inf
        else:
            b_lo[:, i] = thr.still_frac * s
            b_hi[:, i] = thr.move_frac * s
    still = mag <= b_lo - thr.z * std
    moving = mag >= b_hi + thr.z * std
    uncertain = ~(still | moving)
    axes = np.where(moving, np.sign(motion), 0).astype(np.int8)  # (T-1, 4)

    safe = np.maximum(std, 1e-12)  # noise-free tracks: Phi(+-inf) = 1 or 0
    p_still = _phi((b_lo - mag) / safe)
    p_move = _phi((mag - b_hi) / safe)  # no typical speed: b_hi = inf -> 0
    confidence = np.where(still, p_still, np.where(moving, p_move, np.maximum(p_still, p_move)))

    fwd, right, yaw, pitch = (axes[:, i].astype(np.int64) for i in range(4))
    move = np.where(uncertain[:, 0] | uncertain[:, 1], UNCERTAIN, encode_move(fwd, right))
    view = np.where(uncertain[:, 2] | uncertain[:, 3], UNCERTAIN, encode_view(yaw, pitch))
    return PoseLabels(move=move.astype(np.int64), view=view.astype(np.int64), axes=axes,
                      uncertain=uncertain, confidence=confidence, motion=motion, noise=noise,
                      speeds=speeds)


def label_from_poses(position, yaw_deg, pitch_deg=None,
                     noise_std: PoseNoise | Sequence | str | None = None,
                     thresholds: LabelThresholds | None = None) -> PoseLabels:
    """Label each step of a pose track (T frames -> T-1 actions) with move / view ids.

    position: (T, 2) or (T, 3) world units (x, y ground plane, z up; z is ignored).
    yaw_deg: (T,) heading, 0 along +x, counter-clockwise from above (ViZDoom's ANGLE).
    pitch_deg: (T,) positive = looking up, or None for a level camera (pitch tri-state 0).
    noise_std: per-frame pose noise as PoseNoise / (position, angle) / "position,angle";
        None or a None field = estimated from this track (:func:`estimate_noise`).
    """
    pos, yaw, pitch = _as_track(position, yaw_deg, pitch_deg)
    thr = (thresholds or LabelThresholds()).validate()
    noise = PoseNoise.parse(noise_std)
    if not noise.resolved():
        noise = estimate_noise_pooled([(pos, yaw, pitch)], known=noise)
    motion = camera_motion(pos, yaw, pitch)
    std = motion_std(motion, noise, has_pitch=pitch is not None)
    speeds = estimate_speeds([motion], [std], thr)
    return label_motion(motion, std, speeds, noise, thr)
